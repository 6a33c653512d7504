//! Datagrams waiting for the application: a bounded queue that drops its oldest datagram
//! when full (for voice or games the newest datagram is the useful one).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::sync::lock;

/// Most datagrams an application's flow holds unread.
pub(crate) const INBOX_DATAGRAMS: usize = 64;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    closed: bool,
    dropped: u64,
}

/// One flow's received datagrams.
#[derive(Debug, Default)]
pub(crate) struct DatagramInbox {
    state: Mutex<State>,
    notify: Notify,
}

impl DatagramInbox {
    /// Queues a datagram, dropping the oldest one if full. False once closed.
    pub(crate) fn push(&self, datagram: Vec<u8>) -> bool {
        {
            let mut s = lock(&self.state);
            if s.closed {
                return false;
            }
            if s.queue.len() >= INBOX_DATAGRAMS {
                s.queue.pop_front();
                s.dropped += 1;
            }
            s.queue.push_back(datagram);
        }
        self.notify.notify_one();
        true
    }

    /// No more datagrams will come; a waiting reader wakes with `None` once drained.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Whether the flow is closed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Datagrams dropped because the reader was too slow.
    pub(crate) fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// The next datagram; `None` once closed and drained.
    pub(crate) async fn recv(&self) -> Option<Vec<u8>> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = lock(&self.state);
                if let Some(d) = s.queue.pop_front() {
                    return Some(d);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_oldest_when_full_and_ends_after_close() {
        let inbox = DatagramInbox::default();
        for i in 0..(INBOX_DATAGRAMS + 3) {
            assert!(inbox.push(vec![i as u8]));
        }
        assert_eq!(inbox.dropped(), 3);
        assert_eq!(inbox.recv().await, Some(vec![3]));
        inbox.close();
        assert!(!inbox.push(vec![0]));
        let mut n = 0;
        while inbox.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, INBOX_DATAGRAMS - 1);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes() {
        let inbox = std::sync::Arc::new(DatagramInbox::default());
        let i2 = std::sync::Arc::clone(&inbox);
        let reader = tokio::spawn(async move { i2.recv().await });
        tokio::task::yield_now().await;
        inbox.push(b"x".to_vec());
        assert_eq!(reader.await.unwrap(), Some(b"x".to_vec()));
    }
}
