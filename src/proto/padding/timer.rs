//! Wakes a circuit's task when its padding machine has a cell due.
//!
//! A small task per padded circuit: it sleeps until the armed instant, then puts the
//! circuit's "padding due" event in the circuit's own queue, so the task that owns the
//! circuit's crypto sends the cell. It ends when the circuit drops its timer. Unpadded
//! circuits have none and pay nothing.

use tokio::sync::watch;
use tokio::time::Instant;

use crate::proto::event_queue::EventSender;

/// The circuit's half: arms and disarms the task.
#[derive(Debug)]
pub struct PaddingTimer {
    tx: watch::Sender<Option<Instant>>,
}

impl PaddingTimer {
    /// Starts the task: it sends `due()` into `events` whenever the armed instant passes.
    pub fn spawn<E: Send + 'static>(events: EventSender<E>, due: fn() -> E) -> Self {
        let (tx, mut rx) = watch::channel(None::<Instant>);
        tokio::spawn(async move {
            loop {
                let at = *rx.borrow_and_update();
                match at {
                    None => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                    Some(at) => {
                        tokio::select! {
                            changed = rx.changed() => if changed.is_err() { return },
                            _ = tokio::time::sleep_until(at) => {
                                if events.send(due()).await.is_err() {
                                    return;
                                }
                                // Wait to be re-armed: the circuit answers each wake-up.
                                if rx.changed().await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        PaddingTimer { tx }
    }

    /// Arms the timer for `at` (`None`: disarmed). Always wakes the task, so re-arming
    /// with the same instant after a wake-up works.
    pub fn arm(&self, at: Option<Instant>) {
        self.tx.send_replace(at);
    }
}
