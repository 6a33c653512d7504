//! The streams of one circuit, at either end (client or exit): flow-control windows,
//! half-close, and what to send in response to each event.
//!
//! The circuit task owns a `StreamSet` and feeds it cells from the peer and events from
//! the stream tasks; the set answers with the relay cells to send back. Sending (and
//! encrypting) stays with the circuit task, which reports each DATA cell's tag back via
//! [`StreamSet::on_data_sent`] so SENDMEs can be authenticated.
//!
//! Half-close: END with reason DONE means "no more data from me" (a FIN); the stream is
//! gone once both sides have sent it. END with any other reason aborts both directions.
//!
//! A stream that ends any other way (END other than DONE, a local failure, the circuit
//! closing) is [truncated](Truncation): its local socket is reset, not closed with a FIN.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::cell::relay_msg::{Data, Sendme};
use crate::cell::{EndReason, RelayCell, RelayMsg, StreamId};
use crate::crypto::RelayTag;

use super::pump::{StreamEvent, StreamIo, ToSocket, Truncation};
use super::window::{FlowError, RecvWindow, SendWindow, CIRCUIT_WINDOW, STREAM_WINDOW};

/// A stream-protocol violation by the peer; the circuit must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamError {
    /// Flow control was violated.
    #[error("{0}")]
    Flow(#[from] FlowError),
    /// DATA for a stream that is still being opened.
    #[error("DATA for a stream that is not open yet")]
    UnknownStream,
    /// DATA after the peer's own END(DONE).
    #[error("DATA after the peer closed its side")]
    DataAfterEof,
}

#[derive(Debug)]
struct StreamState {
    io: Option<StreamIo>,
    send: SendWindow,
    recv: RecvWindow,
    local_eof: bool,
    remote_eof: bool,
}

/// All streams of a circuit plus the circuit-level windows.
#[derive(Debug)]
pub(crate) struct StreamSet {
    streams: HashMap<StreamId, StreamState>,
    circ_send: SendWindow,
    circ_recv: RecvWindow,
    circ_permits: Arc<Semaphore>,
}

impl Default for StreamSet {
    fn default() -> Self {
        Self::new()
    }
}

fn cell(stream: Option<StreamId>, msg: RelayMsg) -> Option<RelayCell> {
    // Every message built here satisfies its stream rule; `None` would be a bug.
    RelayCell::new(stream, msg).ok()
}

impl StreamSet {
    /// No streams, full circuit windows.
    pub(crate) fn new() -> Self {
        StreamSet {
            streams: HashMap::new(),
            circ_send: SendWindow::circuit(),
            circ_recv: RecvWindow::circuit(),
            circ_permits: Arc::new(Semaphore::new(CIRCUIT_WINDOW as usize)),
        }
    }

    /// The circuit's send-window permits, shared by every stream's reader.
    pub(crate) fn circuit_permits(&self) -> Arc<Semaphore> {
        Arc::clone(&self.circ_permits)
    }

    /// Number of streams (open or being opened).
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether there are no streams.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether `id` is in use.
    pub(crate) fn contains(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// Reserves `id` for a stream being opened (BEGIN sent or received, no socket yet).
    pub(crate) fn reserve(&mut self, id: StreamId) {
        self.streams.insert(
            id,
            StreamState {
                io: None,
                send: SendWindow::stream(),
                recv: RecvWindow::stream(),
                local_eof: false,
                remote_eof: false,
            },
        );
    }

    /// Attaches the socket tasks of a reserved stream (it is now open).
    pub(crate) fn attach(&mut self, id: StreamId, io: StreamIo) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.io = Some(io);
        }
    }

    /// Forgets a stream given up by this end (a failed open, a requester gone), stopping
    /// its tasks; if it was open, its socket is reset.
    pub(crate) fn remove(&mut self, id: StreamId) {
        self.abort(id, Truncation::Aborted);
    }

    /// Forgets a stream that did not end cleanly: stops its tasks and resets its socket.
    fn abort(&mut self, id: StreamId, why: Truncation) {
        if let Some(s) = self.streams.remove(&id) {
            if let Some(io) = s.io {
                io.abort(why);
            }
        }
    }

    /// The peer sent DATA. Returns a circuit-level SENDME to send, if this cell was a
    /// circuit SENDME point.
    pub(crate) fn on_data(
        &mut self,
        id: StreamId,
        data: Data,
        tag: &RelayTag,
    ) -> Result<Option<RelayCell>, StreamError> {
        // Every DATA cell counts against the circuit window, even one dropped below.
        let sendme = self.on_circuit_cell(tag)?;
        match self.streams.get_mut(&id) {
            // A stream we closed: DATA crossing our END is dropped.
            None => Ok(sendme),
            Some(s) if s.remote_eof => Err(StreamError::DataAfterEof),
            Some(s) => {
                let io = s.io.as_ref().ok_or(StreamError::UnknownStream)?;
                let stream_point = s.recv.on_received()?;
                let ack = stream_point.then_some(*tag);
                // The writer may have ended (socket closed); its failure event closes
                // the stream.
                let _ = io.to_socket.send(ToSocket::Data(data.into_vec(), ack));
                Ok(sendme)
            }
        }
    }

    /// Counts a cell against the circuit's receive window (every DATA and DATAGRAM cell).
    /// Returns the circuit-level SENDME to send if it was a SENDME point.
    pub(crate) fn on_circuit_cell(
        &mut self,
        tag: &RelayTag,
    ) -> Result<Option<RelayCell>, StreamError> {
        if self.circ_recv.on_received()? {
            self.circ_recv.on_sendme_sent();
            return Ok(cell(None, RelayMsg::Sendme(Sendme { tag: *tag })));
        }
        Ok(None)
    }

    /// Takes `n` circuit-window permits now if they are free (for a datagram's cells,
    /// which never wait for the window: see [`crate::proto::datagram`]).
    pub(crate) fn try_take_circuit_permits(&self, n: u32) -> bool {
        match self.circ_permits.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Records the tag of a cell other than stream DATA (a DATAGRAM) sent under the
    /// circuit window.
    pub(crate) fn on_circuit_cell_sent(&mut self, tag: &RelayTag) {
        let within = self.circ_send.on_sent(tag);
        debug_assert!(within, "a datagram was sent without a window permit");
    }

    /// A circuit-level SENDME: checks it and returns the window it frees, for the caller
    /// to spend on waiting datagrams first and hand the rest to the stream readers with
    /// [`Self::release_circuit_permits`].
    pub(crate) fn on_circuit_sendme(&mut self, sendme: &Sendme) -> Result<u32, StreamError> {
        self.circ_send.on_sendme(&sendme.tag)?;
        Ok(super::window::CIRCUIT_INCREMENT)
    }

    /// Gives `n` circuit-window permits to the stream readers.
    pub(crate) fn release_circuit_permits(&self, n: u32) {
        self.circ_permits.add_permits(n as usize);
    }

    /// The peer sent END for `id`. Returns true if the stream was open or being opened.
    pub(crate) fn on_end(&mut self, id: StreamId, reason: EndReason) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        if reason == EndReason::Done && s.io.is_some() {
            s.remote_eof = true;
            if let Some(io) = &s.io {
                let _ = io.to_socket.send(ToSocket::Eof);
            }
            if s.local_eof {
                // Both directions finished: let the writer flush, drop the rest.
                self.streams.remove(&id);
            }
        } else {
            self.abort(id, Truncation::End(reason));
        }
        true
    }

    /// The peer sent SENDME (circuit-level when `stream` is `None`).
    pub(crate) fn on_sendme(
        &mut self,
        stream: Option<StreamId>,
        sendme: &Sendme,
    ) -> Result<(), StreamError> {
        match stream {
            None => {
                self.circ_send.on_sendme(&sendme.tag)?;
                self.circ_permits
                    .add_permits(super::window::CIRCUIT_INCREMENT as usize);
            }
            Some(id) => {
                // A stream-level SENDME crossing our END can raise no window: it is
                // harmless and dropped.
                let Some(s) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                s.send.on_sendme(&sendme.tag)?;
                if let Some(io) = &s.io {
                    io.permits
                        .add_permits(super::window::STREAM_INCREMENT as usize);
                }
            }
        }
        Ok(())
    }

    /// An event from a stream's tasks. Returns the cell to send, if any. For DATA the
    /// caller must report the sent cell's tag with [`on_data_sent`](Self::on_data_sent).
    pub(crate) fn on_stream_event(&mut self, event: StreamEvent) -> Option<RelayCell> {
        match event {
            StreamEvent::Data(id, bytes) => {
                let open = self.streams.get(&id).is_some_and(|s| !s.local_eof);
                let data = Data::new(bytes).ok().filter(|_| open);
                if data.is_none() {
                    // The stream ended while this chunk was in flight: it will not be
                    // sent, so give back the circuit window slot its reader took.
                    self.circ_permits.add_permits(1);
                }
                cell(Some(id), RelayMsg::Data(data?))
            }
            StreamEvent::Eof(id) => {
                let s = self.streams.get_mut(&id)?;
                s.local_eof = true;
                if s.remote_eof {
                    self.streams.remove(&id);
                }
                cell(Some(id), RelayMsg::End(EndReason::Done))
            }
            StreamEvent::Failed(id) => {
                self.streams.contains_key(&id).then_some(())?;
                self.abort(id, Truncation::Aborted);
                cell(Some(id), RelayMsg::End(EndReason::ConnectionReset))
            }
            StreamEvent::Delivered(id, tag) => {
                let s = self.streams.get_mut(&id)?;
                s.recv.on_sendme_sent();
                cell(Some(id), RelayMsg::Sendme(Sendme { tag }))
            }
        }
    }

    /// Records the tag of a DATA cell just sent on `id` (for SENDME authentication).
    pub(crate) fn on_data_sent(&mut self, id: StreamId, tag: &RelayTag) {
        self.circ_send.on_sent(tag);
        if let Some(s) = self.streams.get_mut(&id) {
            s.send.on_sent(tag);
        }
    }

    /// The stream window a new stream starts with.
    pub(crate) fn initial_stream_window() -> u32 {
        STREAM_WINDOW
    }

    /// Stops every stream (circuit closing); open ones are reset.
    pub(crate) fn clear(&mut self) {
        let ids: Vec<_> = self.streams.keys().copied().collect();
        for id in ids {
            self.abort(id, Truncation::CircuitClosed);
        }
    }
}
