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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::cell::relay_msg::{Data, Sendme};
use crate::cell::{EndReason, RelayCell, RelayMsg, StreamId};
use crate::crypto::RelayTag;

use super::pump::{StreamEvent, StreamIo, ToSocket, Truncation};
use super::window::{FlowError, RecvWindow, SendWindow, STREAM_INCREMENT, STREAM_WINDOW};
use crate::proto::congestion::stream_limits::{DELIVERY_MARK, UNLIMITED, XOFF_AT, XON_AT};
use crate::proto::congestion::{CircuitSendWindow, FlowMode};

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
    /// Fixed windows only: the stream's send window (unused under congestion control).
    send: SendWindow,
    /// Fixed windows: the stream's receive window. Congestion control: the bound on cells
    /// buffered towards the application (`XOFF_AT` + the largest circuit window: what a
    /// sender may still have in flight when our XOFF reaches it), credited on delivery.
    recv: RecvWindow,
    local_eof: bool,
    remote_eof: bool,
    /// Congestion control: we sent XOFF and no XON since.
    xoff_sent: bool,
    /// Congestion control: the peer said XOFF (its permits were withdrawn).
    peer_xoff: bool,
    /// Tags of the delivery marks handed to the writer, oldest first: a `Delivered` is
    /// taken only for the next one, so a late report from an earlier stream with the same
    /// id cannot credit this one.
    marks: VecDeque<RelayTag>,
    /// The writer is gone (all received data written, or writing failed): once both sides
    /// have ended, nothing is buffered and the stream can be forgotten. Until then it
    /// stays, counted against the circuit's buffer bound and stream limit.
    writer_done: bool,
}

impl StreamState {
    /// Cells received and not yet reported delivered (congestion control's buffer count).
    fn buffered(&self, limit: u32) -> u32 {
        limit.saturating_sub(self.recv.left())
    }
}

/// All streams of a circuit plus the circuit-level windows.
#[derive(Debug)]
pub(crate) struct StreamSet {
    streams: HashMap<StreamId, StreamState>,
    mode: FlowMode,
    circ_send: CircuitSendWindow,
    circ_recv: RecvWindow,
    circ_permits: Arc<Semaphore>,
    /// Congestion control: cells buffered towards the applications over all streams. One
    /// peer could otherwise fill every stream to its own bound; the circuit's total stays
    /// within what honest senders reach (`XOFF_AT` per stream plus one window in flight).
    buffered_total: u32,
}

impl Default for StreamSet {
    fn default() -> Self {
        Self::new(FlowMode::Fixed)
    }
}

fn cell(stream: Option<StreamId>, msg: RelayMsg) -> Option<RelayCell> {
    // Every message built here satisfies its stream rule; `None` would be a bug.
    RelayCell::new(stream, msg).ok()
}

impl StreamSet {
    /// No streams, full circuit windows of `mode`.
    pub(crate) fn new(mode: FlowMode) -> Self {
        let circ_send = CircuitSendWindow::new(mode);
        let circ_recv = match mode {
            FlowMode::Fixed => RecvWindow::circuit(),
            FlowMode::Congestion { sendme_inc } => {
                RecvWindow::new(CircuitSendWindow::max_window(mode), u32::from(sendme_inc))
            }
        };
        StreamSet {
            streams: HashMap::new(),
            mode,
            circ_permits: Arc::new(Semaphore::new(circ_send.initial_permits() as usize)),
            circ_send,
            circ_recv,
            buffered_total: 0,
        }
    }

    /// Removes stream `id`, forgetting what it had buffered.
    fn take_stream(&mut self, id: StreamId) -> Option<StreamState> {
        let limit = self.stream_buffer_limit();
        let s = self.streams.remove(&id)?;
        if self.mode.is_congestion() {
            self.buffered_total = self.buffered_total.saturating_sub(s.buffered(limit));
        }
        Some(s)
    }

    /// Forgets stream `id` once both sides have ended and its writer has flushed.
    fn forget_if_finished(&mut self, id: StreamId) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| s.local_eof && s.remote_eof && s.writer_done)
        {
            self.take_stream(id);
        }
    }

    /// The most cells all streams together may have buffered under congestion control.
    fn circuit_buffer_limit(&self) -> u32 {
        let streams = u32::try_from(self.streams.len()).unwrap_or(u32::MAX);
        streams
            .saturating_mul(XOFF_AT)
            .saturating_add(CircuitSendWindow::max_window(self.mode))
    }

    /// The circuit's current send window in cells, and the last round trip measured on a
    /// circuit SENDME (for the circuit's closing log line).
    pub(crate) fn window_state(&self) -> (u32, Option<std::time::Duration>) {
        (self.circ_send.cwnd(), self.circ_send.last_rtt())
    }

    /// Under congestion control: the most cells a stream may have buffered towards the
    /// application before the peer is in violation.
    fn stream_buffer_limit(&self) -> u32 {
        XOFF_AT.saturating_add(CircuitSendWindow::max_window(self.mode))
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
        let recv = match self.mode {
            FlowMode::Fixed => RecvWindow::stream(),
            FlowMode::Congestion { .. } => {
                RecvWindow::new(self.stream_buffer_limit(), DELIVERY_MARK)
            }
        };
        self.streams.insert(
            id,
            StreamState {
                io: None,
                send: SendWindow::stream(),
                recv,
                local_eof: false,
                remote_eof: false,
                xoff_sent: false,
                peer_xoff: false,
                marks: VecDeque::new(),
                writer_done: false,
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
        if let Some(s) = self.take_stream(id) {
            if let Some(io) = s.io {
                io.abort(why);
            }
        }
    }

    /// The peer sent DATA. Returns what to send back: a circuit-level SENDME if this cell
    /// was a circuit SENDME point, and under congestion control an XOFF if the stream's
    /// buffer towards the application just passed its mark.
    pub(crate) fn on_data(
        &mut self,
        id: StreamId,
        data: Data,
        tag: &RelayTag,
    ) -> Result<[Option<RelayCell>; 2], StreamError> {
        // Every DATA cell counts against the circuit window, even one dropped below.
        let sendme = self.on_circuit_cell(tag)?;
        let limit = self.stream_buffer_limit();
        let congestion = self.mode.is_congestion();
        let circuit_limit = self.circuit_buffer_limit();
        match self.streams.get_mut(&id) {
            // A stream we closed: DATA crossing our END is dropped.
            None => Ok([sendme, None]),
            Some(s) if s.remote_eof => Err(StreamError::DataAfterEof),
            Some(s) => {
                let io = s.io.as_ref().ok_or(StreamError::UnknownStream)?;
                let stream_point = s.recv.on_received()?;
                if congestion {
                    self.buffered_total = self.buffered_total.saturating_add(1);
                    if self.buffered_total > circuit_limit {
                        return Err(FlowError::WindowExceeded.into());
                    }
                }
                let ack = stream_point.then_some(*tag);
                if stream_point {
                    s.marks.push_back(*tag);
                }
                // The writer may have ended (socket closed); its failure event closes
                // the stream.
                let _ = io.to_socket.send(ToSocket::Data(data.into_vec(), ack));
                let xoff = (congestion && !s.xoff_sent && s.buffered(limit) > XOFF_AT)
                    .then(|| {
                        s.xoff_sent = true;
                        cell(Some(id), RelayMsg::Xoff)
                    })
                    .flatten();
                Ok([sendme, xoff])
            }
        }
    }

    /// The peer sent XOFF (`on == false`) or XON (`on == true`) for `id`: withdraws or
    /// restores the stream reader's permits. Only legal under congestion control.
    pub(crate) fn on_flow_signal(&mut self, id: StreamId, on: bool) -> Result<(), StreamError> {
        if !self.mode.is_congestion() {
            return Err(FlowError::SignalWithoutCongestionControl.into());
        }
        // A signal crossing our END is harmless.
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.peer_xoff != on {
            return Ok(());
        }
        s.peer_xoff = !on;
        if let Some(io) = &s.io {
            if on {
                io.permits
                    .add_permits(UNLIMITED.saturating_sub(io.permits.available_permits()));
            } else if let Ok(p) = io
                .permits
                .try_acquire_many(u32::try_from(io.permits.available_permits()).unwrap_or(0))
            {
                // The reader keeps what it already reserved (at most one read batch).
                p.forget();
            }
        }
        Ok(())
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

    /// A circuit-level SENDME: checks it and returns the window it frees (under congestion
    /// control, adjusted by the window's change), for the caller to spend on waiting
    /// datagrams first and hand the rest to the stream readers with
    /// [`Self::release_circuit_permits`].
    pub(crate) fn on_circuit_sendme(&mut self, sendme: &Sendme) -> Result<u32, StreamError> {
        Ok(self
            .circ_send
            .on_sendme(&sendme.tag, tokio::time::Instant::now())?)
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
            // Both directions finished: the stream goes once its writer has flushed.
            self.forget_if_finished(id);
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
                let credit = self.on_circuit_sendme(sendme)?;
                self.circ_permits.add_permits(credit as usize);
            }
            Some(id) => {
                // A stream-level SENDME crossing our END can raise no window: it is
                // harmless and dropped.
                let Some(s) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                // Under congestion control no stream tags are recorded: any stream-level
                // SENDME is unexpected.
                s.send.on_sendme(&sendme.tag)?;
                if let Some(io) = &s.io {
                    io.permits.add_permits(STREAM_INCREMENT as usize);
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
                self.forget_if_finished(id);
                cell(Some(id), RelayMsg::End(EndReason::Done))
            }
            StreamEvent::Failed(id) => {
                self.streams.contains_key(&id).then_some(())?;
                self.abort(id, Truncation::Aborted);
                cell(Some(id), RelayMsg::End(EndReason::ConnectionReset))
            }
            StreamEvent::WriterDone(id) => {
                let s = self.streams.get_mut(&id)?;
                s.writer_done = true;
                self.forget_if_finished(id);
                None
            }
            StreamEvent::Delivered(id, tag) => {
                let limit = self.stream_buffer_limit();
                let congestion = self.mode.is_congestion();
                let s = self.streams.get_mut(&id)?;
                if s.marks.front() != Some(&tag) {
                    // Not this stream's next mark: a late report from an earlier stream
                    // that had the same id.
                    return None;
                }
                s.marks.pop_front();
                s.recv.on_sendme_sent();
                if !congestion {
                    return cell(Some(id), RelayMsg::Sendme(Sendme { tag }));
                }
                self.buffered_total = self.buffered_total.saturating_sub(DELIVERY_MARK);
                (s.xoff_sent && s.buffered(limit) <= XON_AT).then_some(())?;
                s.xoff_sent = false;
                cell(Some(id), RelayMsg::Xon)
            }
        }
    }

    /// Records the tag of a DATA cell just sent on `id` (for SENDME authentication).
    pub(crate) fn on_data_sent(&mut self, id: StreamId, tag: &RelayTag) {
        self.circ_send.on_sent(tag);
        if self.mode.is_congestion() {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.send.on_sent(tag);
        }
    }

    /// The stream window a new stream starts with (under congestion control, in effect
    /// none: XOFF withdraws it).
    pub(crate) fn initial_stream_window(&self) -> usize {
        match self.mode {
            FlowMode::Fixed => STREAM_WINDOW as usize,
            FlowMode::Congestion { .. } => UNLIMITED,
        }
    }

    /// Stops every stream (circuit closing); open ones are reset.
    pub(crate) fn clear(&mut self) {
        let ids: Vec<_> = self.streams.keys().copied().collect();
        for id in ids {
            self.abort(id, Truncation::CircuitClosed);
        }
    }
}
