//! Link padding (docs/protocol.md §5.10): each side of a channel that carries circuits
//! sends PADDING once it has sent nothing for a timeout drawn from max(X, Y), X, Y ~
//! Uniform[low, high] ms (Tor's netflow padding), so the flow record a router keeps of an
//! idle but open channel does not end. Any record written restarts the wait.
//!
//! Only while the channel carries circuits: the link idle timeout (counted on every
//! record received) is what closes a channel without circuits, and padding would keep it
//! open for ever. A channel without circuits is about to close anyway, so its flow ending
//! says no more than the close does. With padding off (negotiated by a client) the task
//! still sends PADDING every `idle_timeout / 3` while circuits exist: the keep-alive that
//! stops the peer's idle timeout from closing a channel whose circuits are quiet.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cell::{ChanCell, ChanMsg, PaddingBounds, PaddingNegotiate};

use super::channel::ChannelSender;
use super::peer::PeerKind;
use super::stats::RecordStats;
use super::TrySendError;

/// Tor's netflow padding bounds (`nf_ito_low`, `nf_ito_high`): the default.
pub const NORMAL_LOW_MS: u16 = 1500;
/// See [`NORMAL_LOW_MS`].
pub const NORMAL_HIGH_MS: u16 = 9500;
/// Tor's reduced padding for mobile clients (`nf_ito_low_reduced`, `nf_ito_high_reduced`).
pub const REDUCED_LOW_MS: u16 = 9000;
/// See [`REDUCED_LOW_MS`].
pub const REDUCED_HIGH_MS: u16 = 14000;
/// Default [`super::LinkConfig::padding_floor`]: a relay never pads a channel faster than
/// the normal schedule, whatever a client asks (a peer may ask for less padding, never
/// more: otherwise each channel would be a flood amplifier).
pub const DEFAULT_PADDING_FLOOR: Duration = Duration::from_millis(NORMAL_LOW_MS as u64);

/// How a client wants its channels padded (`[proxy] link_padding`): by itself, and by its
/// first hop towards it (negotiated with PADDING_NEGOTIATE after the link handshake).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPadding {
    /// Tor's netflow timing, 1.5 to 9.5 s (no negotiation: the relay's default).
    #[default]
    Normal,
    /// Tor's reduced timing for mobile clients, 9 to 14 s: about half the bytes.
    Reduced,
    /// No link padding, only the keep-alive every `idle_timeout / 3` (mobile clients that
    /// accept flow records ending while idle).
    Off,
}

impl LinkPadding {
    /// The bounds of this schedule, `None` for off.
    pub fn bounds(self) -> Option<PaddingBounds> {
        match self {
            LinkPadding::Normal => Some(normal()),
            LinkPadding::Reduced => Some(
                PaddingBounds::new(REDUCED_LOW_MS, REDUCED_HIGH_MS)
                    .unwrap_or(PaddingBounds::SLOWEST),
            ),
            LinkPadding::Off => None,
        }
    }
}

/// The normal schedule's bounds.
pub fn normal() -> PaddingBounds {
    // Within the wire's range by construction; the fallback is never taken.
    PaddingBounds::new(NORMAL_LOW_MS, NORMAL_HIGH_MS).unwrap_or(PaddingBounds::SLOWEST)
}

/// What a client sends after the link handshake for its own schedule `ours`: nothing for
/// the normal one (the relay's default), START with other bounds, STOP for none.
pub fn negotiation(ours: Option<PaddingBounds>) -> Option<PaddingNegotiate> {
    match ours {
        Some(b) if b == normal() => None,
        Some(b) => Some(PaddingNegotiate::Start(b)),
        None => Some(PaddingNegotiate::Stop),
    }
}

/// What a relay does with a client's PADDING_NEGOTIATE: a start's lower bound is raised
/// to `floor` (and the upper one with it), so no client makes it pad faster.
pub fn honour(msg: PaddingNegotiate, floor: Duration) -> Option<PaddingBounds> {
    match msg {
        PaddingNegotiate::Stop => None,
        PaddingNegotiate::Start(b) => {
            let floor = u16::try_from(floor.as_millis()).unwrap_or(u16::MAX);
            let low = b.low_ms().max(floor);
            let high = b.high_ms().max(low);
            // A floor outside the wire's range cannot be honoured: pad no faster than it.
            Some(PaddingBounds::new(low, high).unwrap_or(PaddingBounds::SLOWEST))
        }
    }
}

/// A channel's current schedule, changed by negotiation while its padding task runs.
#[derive(Debug)]
pub struct PaddingState(AtomicU32);

impl PaddingState {
    /// Starts with `bounds` (`None`: keep-alive only).
    pub fn new(bounds: Option<PaddingBounds>) -> Self {
        PaddingState(AtomicU32::new(pack(bounds)))
    }

    /// Replaces the schedule. It applies from the next timeout drawn: after the next
    /// PADDING, or when the channel next writes anything (not at once, so a flood of
    /// PADDING_NEGOTIATE cannot trigger padding).
    pub fn set(&self, bounds: Option<PaddingBounds>) {
        self.0.store(pack(bounds), Ordering::Relaxed);
    }

    /// Applies a PADDING_NEGOTIATE from `peer`: a client's, raised to `floor` (see
    /// [`honour`]); another relay's is ignored (relays pad each other always). Returns
    /// whether it was applied.
    pub fn negotiate(&self, peer: &PeerKind, msg: PaddingNegotiate, floor: Duration) -> bool {
        match peer {
            PeerKind::Client => {
                self.set(honour(msg, floor));
                true
            }
            PeerKind::Relay(_) => false,
        }
    }

    /// The current schedule.
    pub fn get(&self) -> Option<PaddingBounds> {
        let v = self.0.load(Ordering::Relaxed);
        // 0 (low 0) is "off": valid bounds never have low 0.
        let (low, high) = ((v >> 16) as u16, (v & 0xffff) as u16);
        PaddingBounds::new(low, high).ok()
    }
}

fn pack(bounds: Option<PaddingBounds>) -> u32 {
    bounds.map_or(0, |b| {
        (u32::from(b.low_ms()) << 16) | u32::from(b.high_ms())
    })
}

/// One padding timeout: max(X, Y), X, Y uniform over `[low, high]` ms.
pub fn draw(bounds: PaddingBounds) -> Duration {
    let mut rng = rand::rng();
    let range = bounds.low_ms()..=bounds.high_ms();
    let x = rng.random_range(range.clone());
    let y = rng.random_range(range);
    Duration::from_millis(u64::from(x.max(y)))
}

/// The mean of [`draw`]: `low + 2/3 (high - low)` for the continuous distribution.
pub fn expected_ms(bounds: PaddingBounds) -> f64 {
    let (low, high) = (f64::from(bounds.low_ms()), f64::from(bounds.high_ms()));
    low + 2.0 * (high - low) / 3.0
}

/// The keep-alive interval for a given idle timeout.
pub(crate) fn keepalive_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 3).max(Duration::from_millis(100))
}

/// How long to stay quiet before padding, under the current schedule.
fn next_wait(state: &PaddingState, keepalive: Duration) -> Duration {
    state.get().map_or(keepalive, |b| draw(b).min(keepalive))
}

/// Pads `sender`'s channel under `state`'s schedule while `has_circuits()` holds, until
/// the channel closes. `stats` tells when the channel last wrote anything.
pub(crate) fn spawn(
    sender: ChannelSender,
    stats: Arc<RecordStats>,
    state: Arc<PaddingState>,
    idle_timeout: Duration,
    has_circuits: impl Fn() -> bool + Send + 'static,
) {
    let keepalive = keepalive_interval(idle_timeout);
    tokio::spawn(async move {
        let Ok(padding) = ChanCell::channel(ChanMsg::Padding).and_then(|c| c.encode()) else {
            return;
        };
        // The start of the current quiet period, and the timeout drawn for it.
        let mut base = Instant::now();
        let mut drawn_under = state.get();
        let mut wait = next_wait(&state, keepalive);
        loop {
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep_until(base + wait) => {}
            }
            let last = stats.last_write();
            if last > base {
                // Something was written meanwhile (our own last PADDING, too): the quiet
                // period starts again from it, with the same timeout (a new draw here
                // would make the gap after a PADDING the larger of two timeouts) unless
                // the schedule was renegotiated.
                base = last;
                if state.get() != drawn_under {
                    drawn_under = state.get();
                    wait = next_wait(&state, keepalive);
                }
                continue;
            }
            if has_circuits() {
                match sender.try_send_raw(&padding) {
                    Ok(()) => stats.on_padding_sent(),
                    // A full queue is traffic: no padding needed.
                    Err(TrySendError::Full) => {}
                    Err(TrySendError::Closed) => return,
                }
            }
            base = Instant::now();
            drawn_under = state.get();
            wait = next_wait(&state, keepalive);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::close::CloseSignal;
    use crate::link::out_queue::OutQueue;

    fn bounds(low: u16, high: u16) -> PaddingBounds {
        PaddingBounds::new(low, high).unwrap()
    }

    #[test]
    fn draws_stay_within_the_bounds_and_lean_high() {
        let b = bounds(1500, 9500);
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let d = draw(b);
            assert!(d >= Duration::from_millis(1500) && d <= Duration::from_millis(9500));
            sum += d.as_secs_f64() * 1000.0;
        }
        // The mean of max(X, Y) is 6833 ms; 20,000 draws put the sample mean within a few
        // tens of ms (standard error ~13 ms): 200 ms of slack is many standard errors.
        let mean = sum / f64::from(n);
        assert!((mean - expected_ms(b)).abs() < 200.0, "{mean}");
        assert_eq!(draw(bounds(100, 100)), Duration::from_millis(100));
    }

    #[test]
    fn state_round_trips_and_off_is_none() {
        let s = PaddingState::new(None);
        assert_eq!(s.get(), None);
        s.set(Some(bounds(100, 60_000)));
        assert_eq!(s.get(), Some(bounds(100, 60_000)));
        s.set(LinkPadding::Reduced.bounds());
        assert_eq!(s.get(), Some(bounds(9000, 14000)));
        s.set(None);
        assert_eq!(s.get(), None);
    }

    /// A client asking for faster padding than the relay's floor gets the floor.
    #[test]
    fn the_relay_clamps_to_its_floor() {
        let floor = DEFAULT_PADDING_FLOOR;
        let asked = PaddingNegotiate::Start(bounds(100, 100));
        assert_eq!(honour(asked, floor), Some(bounds(1500, 1500)));
        let asked = PaddingNegotiate::Start(bounds(100, 9000));
        assert_eq!(honour(asked, floor), Some(bounds(1500, 9000)));
        let asked = PaddingNegotiate::Start(bounds(9000, 14000));
        assert_eq!(honour(asked, floor), Some(bounds(9000, 14000)));
        assert_eq!(honour(PaddingNegotiate::Stop, floor), None);
        // A floor past the wire's range pads once a minute at most.
        let asked = PaddingNegotiate::Start(bounds(100, 100));
        let slow = honour(asked, Duration::from_secs(3600)).unwrap();
        assert_eq!(slow, bounds(60_000, 60_000));
    }

    /// A client's request is applied (clamped); another relay's changes nothing: relays
    /// pad each other on the normal schedule whatever they ask.
    #[test]
    fn only_clients_negotiate() {
        let s = PaddingState::new(LinkPadding::Normal.bounds());
        let relay =
            PeerKind::Relay(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key());
        assert!(!s.negotiate(&relay, PaddingNegotiate::Stop, DEFAULT_PADDING_FLOOR));
        assert_eq!(s.get(), LinkPadding::Normal.bounds());
        let fast = PaddingNegotiate::Start(bounds(100, 100));
        assert!(!s.negotiate(&relay, fast, DEFAULT_PADDING_FLOOR));
        assert_eq!(s.get(), LinkPadding::Normal.bounds());
        assert!(s.negotiate(&PeerKind::Client, fast, DEFAULT_PADDING_FLOOR));
        assert_eq!(s.get(), Some(bounds(1500, 1500)));
        assert!(s.negotiate(
            &PeerKind::Client,
            PaddingNegotiate::Stop,
            DEFAULT_PADDING_FLOOR
        ));
        assert_eq!(s.get(), None);
    }

    #[test]
    fn clients_negotiate_only_what_differs_from_the_default() {
        assert_eq!(negotiation(LinkPadding::Normal.bounds()), None);
        assert_eq!(
            negotiation(LinkPadding::Reduced.bounds()),
            Some(PaddingNegotiate::Start(bounds(9000, 14000)))
        );
        assert_eq!(
            negotiation(LinkPadding::Off.bounds()),
            Some(PaddingNegotiate::Stop)
        );
    }

    /// The wait is never longer than the keep-alive interval, padding on or off.
    #[test]
    fn keepalive_caps_the_wait() {
        let s = PaddingState::new(Some(bounds(30_000, 60_000)));
        let cap = keepalive_interval(Duration::from_secs(30));
        assert_eq!(next_wait(&s, cap), Duration::from_secs(10));
        s.set(None);
        assert_eq!(next_wait(&s, cap), Duration::from_secs(10));
    }

    fn queue_and_sender() -> (Arc<OutQueue>, ChannelSender) {
        let queue = Arc::new(OutQueue::new(64, true));
        let sender = ChannelSender::new(queue.clone(), CloseSignal::new());
        (queue, sender)
    }

    fn drain(queue: &OutQueue) -> usize {
        std::iter::from_fn(|| queue.pop(Instant::now())).count()
    }

    /// Paused clock: with bounds 100..100 ms an idle channel with circuits pads every
    /// 100 ms exactly; a write restarts the wait; without circuits nothing is sent; a
    /// change of schedule applies from the next wait.
    #[tokio::test(start_paused = true)]
    async fn the_task_pads_when_quiet_and_any_write_restarts_the_wait() {
        let (queue, sender) = queue_and_sender();
        let stats = Arc::new(RecordStats::default());
        let state = Arc::new(PaddingState::new(Some(bounds(100, 100))));
        let circuits = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let c = circuits.clone();
        let idle = Duration::from_secs(300);
        spawn(
            sender.clone(),
            stats.clone(),
            state.clone(),
            idle,
            move || c.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert_eq!(drain(&queue), 10);
        assert_eq!(stats.padding_sent(), 10);

        // Writes every 60 ms keep the channel from ever being quiet for 100 ms.
        for _ in 0..10 {
            stats.on_write(1, crate::link::RECORD_LEN);
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(drain(&queue), 0, "traffic restarts the wait");

        // No circuits: nothing, however long.
        circuits.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(drain(&queue), 0);

        // Off with circuits: only the keep-alive, every idle/3.
        state.set(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        circuits.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert_eq!(drain(&queue), 3);
        sender.close();
    }
}
