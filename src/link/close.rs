//! The shared "this channel is closed" flag that ties a channel's reader, writer task and
//! senders together: whichever notices a failure (or is asked to close) flips it, and the
//! others stop.

use std::sync::Arc;

use tokio::sync::watch;

/// A level-triggered close flag. Clones share the flag.
#[derive(Debug, Clone)]
pub(crate) struct CloseSignal {
    tx: Arc<watch::Sender<bool>>,
}

impl CloseSignal {
    /// An open channel's flag.
    pub(crate) fn new() -> Self {
        CloseSignal {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Marks the channel closed; idempotent.
    pub(crate) fn close(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the channel is closed (at once if it already is).
    pub(crate) async fn closed(&self) {
        let mut rx = self.tx.subscribe();
        // Only fails if the sender is dropped, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|closed| *closed).await;
    }
}
