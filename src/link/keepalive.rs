//! Keeps a channel that carries circuits from hitting the link idle timeout.
//!
//! The link layer closes a channel on which nothing arrives for `idle_timeout`. A channel
//! with circuits must stay open even when they are quiet, so its owner sends a PADDING
//! cell every `idle_timeout / 3` while it carries circuits. A channel without circuits
//! sends nothing and is closed by the timeout: that is the idle-channel limit.

use std::time::Duration;

use crate::cell::{ChanCell, ChanMsg};

use super::channel::ChannelSender;

/// The padding interval for a given idle timeout.
pub(crate) fn interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 3).max(Duration::from_millis(100))
}

/// Sends PADDING on `sender` every [`interval`] while `has_circuits()` holds, until the
/// channel closes.
pub(crate) fn spawn(
    sender: ChannelSender,
    idle_timeout: Duration,
    has_circuits: impl Fn() -> bool + Send + 'static,
) {
    let every = interval(idle_timeout);
    tokio::spawn(async move {
        let Ok(padding) = ChanCell::channel(ChanMsg::Padding) else {
            return;
        };
        loop {
            tokio::select! {
                _ = sender.closed() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if has_circuits() && sender.send(&padding).await.is_err() {
                return;
            }
        }
    });
}
