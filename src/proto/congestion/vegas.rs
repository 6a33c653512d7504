//! The window algorithm: TCP Vegas adapted to circuits, as Tor's proposal 324 did.
//!
//! Vegas estimates how many of the sender's cells sit in queues along the path:
//! `queued = cwnd × (rtt − min_rtt) / rtt`, where `min_rtt` is the smallest round trip seen
//! (the path with empty queues) and `rtt` the smallest of the current window's samples
//! (the minimum filters scheduling noise, which only ever adds delay). It keeps `queued`
//! between `alpha` and `beta`: enough cells queued at the bottleneck to keep it busy, few
//! enough that the queue adds little delay. Loss-based algorithms (Reno, CUBIC) would fill
//! every queue first; circuits lose no cells (TCP below them retransmits), so delay is the
//! only congestion signal there is.
//!
//! Pure state machine: the caller feeds it round-trip samples, one per SENDME.

use std::time::Duration;

/// The algorithm's parameters, in cells. `inc` is the SENDME increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VegasParams {
    /// Window a circuit starts with.
    pub cwnd_init: u32,
    /// The floor: never fewer than this in flight.
    pub cwnd_min: u32,
    /// The cap: bounds what one circuit can have in flight, and with it what a receiver
    /// must be prepared to buffer.
    pub cwnd_max: u32,
    /// Below this estimated queue, grow by `inc` per round trip.
    pub alpha: u32,
    /// Above this, shrink by `inc` per round trip.
    pub beta: u32,
    /// Slow start ends once the queue estimate passes this.
    pub gamma: u32,
    /// Above this, cut at once to the estimated bandwidth-delay product plus `alpha`.
    pub delta: u32,
    /// Queueing delay not counted as queue: on fast paths CPU scheduling and batching add a
    /// few milliseconds that are not a queue worth shrinking (counting them cost a quarter
    /// of loopback throughput). Every circuit through a shared bottleneck sees the same
    /// delay, so this adds at most this much standing delay there in total.
    pub delay_floor: Duration,
}

impl VegasParams {
    /// The parameters for SENDME increment `inc` (docs/PERFORMANCE.md explains the choice).
    pub fn for_increment(inc: u32) -> Self {
        let inc = inc.max(1);
        VegasParams {
            cwnd_init: 4 * inc,
            cwnd_min: 2 * inc,
            cwnd_max: super::CWND_MAX,
            alpha: inc,
            beta: 3 * inc,
            gamma: 3 * inc,
            delta: 6 * inc,
            delay_floor: Duration::from_millis(10),
        }
    }
}

/// One circuit's Vegas state.
#[derive(Debug)]
pub struct Vegas {
    params: VegasParams,
    inc: u32,
    cwnd: u32,
    slow_start: bool,
    min_rtt: Option<Duration>,
    /// Smallest sample of the current epoch (one window's worth of acknowledgements).
    epoch_rtt: Option<Duration>,
    /// Cells acknowledged since the epoch began.
    epoch_acked: u32,
    /// Whether the sender was held back by the window during the epoch: the window only
    /// grows when it was the limit (an idle circuit must not grow a window it never uses).
    epoch_limited: bool,
}

impl Vegas {
    /// A fresh circuit's state.
    pub fn new(params: VegasParams, inc: u32) -> Self {
        Vegas {
            params,
            inc: inc.max(1),
            cwnd: params.cwnd_init.clamp(params.cwnd_min, params.cwnd_max),
            slow_start: true,
            min_rtt: None,
            epoch_rtt: None,
            epoch_acked: 0,
            epoch_limited: false,
        }
    }

    /// The current window, in cells.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Whether the circuit is still in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The smallest round trip seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The sender found the window (nearly) full.
    pub fn on_window_limited(&mut self) {
        self.epoch_limited = true;
    }

    /// Cells estimated queued on the path for a round trip of `rtt`.
    fn queued(&self, rtt: Duration, min: Duration) -> u32 {
        let rtt_us = rtt.as_micros().max(1);
        let extra = rtt
            .saturating_sub(min)
            .saturating_sub(self.params.delay_floor)
            .as_micros();
        let q = u128::from(self.cwnd) * extra / rtt_us;
        u32::try_from(q).unwrap_or(u32::MAX)
    }

    /// A SENDME acknowledged `inc` cells, `rtt` after the acknowledged cell was sent.
    /// Returns the new window.
    pub fn on_ack(&mut self, rtt: Duration) -> u32 {
        let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
        self.min_rtt = Some(min);
        let epoch_rtt = self.epoch_rtt.map_or(rtt, |e| e.min(rtt));
        self.epoch_rtt = Some(epoch_rtt);
        self.epoch_acked = self.epoch_acked.saturating_add(self.inc);
        let p = self.params;
        if self.slow_start {
            let queued = self.queued(epoch_rtt, min);
            if queued > p.gamma {
                // The path started queueing: settle at what it carries, plus a little.
                self.slow_start = false;
                self.cwnd = self.cwnd.saturating_sub(queued).saturating_add(p.alpha);
            } else if self.epoch_limited {
                // One increment per increment acknowledged: the window doubles per round trip.
                self.cwnd = self.cwnd.saturating_add(self.inc);
            }
        }
        if self.epoch_acked >= self.cwnd {
            if !self.slow_start {
                let queued = self.queued(epoch_rtt, min);
                if queued > p.delta {
                    self.cwnd = self.cwnd.saturating_sub(queued).saturating_add(p.alpha);
                } else if queued > p.beta {
                    self.cwnd = self.cwnd.saturating_sub(self.inc);
                } else if queued < p.alpha && self.epoch_limited {
                    self.cwnd = self.cwnd.saturating_add(self.inc);
                }
            }
            self.epoch_rtt = None;
            self.epoch_acked = 0;
            self.epoch_limited = false;
        }
        if self.cwnd >= p.cwnd_max {
            self.slow_start = false;
        }
        self.cwnd = self.cwnd.clamp(p.cwnd_min, p.cwnd_max);
        self.cwnd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INC: u32 = 31;

    /// Vegas without the delay floor: the checks below are of the queue estimate itself.
    fn vegas() -> Vegas {
        let params = VegasParams {
            delay_floor: Duration::ZERO,
            ..VegasParams::for_increment(INC)
        };
        Vegas::new(params, INC)
    }

    /// Feeds one window's worth of acknowledgements, all with round trip `rtt`, the sender
    /// always window-limited.
    fn round(v: &mut Vegas, rtt: Duration) {
        let acks = v.cwnd().div_ceil(INC);
        for _ in 0..acks {
            v.on_window_limited();
            v.on_ack(rtt);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_start_doubles_per_round_trip_until_the_cap() {
        let mut v = vegas();
        assert_eq!(v.cwnd(), 124);
        round(&mut v, ms(300));
        assert_eq!(v.cwnd(), 248);
        round(&mut v, ms(300));
        assert_eq!(v.cwnd(), 496);
        for _ in 0..10 {
            round(&mut v, ms(300));
        }
        assert_eq!(v.cwnd(), 4096, "capped");
        assert!(!v.in_slow_start());
    }

    #[test]
    fn queueing_delay_ends_slow_start_and_the_window_tracks_the_path() {
        // A path carrying 1,000 cells per 100 ms round trip: BDP 1,000 cells. The model:
        // whatever the window holds beyond the BDP waits in a queue, adding delay.
        let base = ms(100);
        let bdp = 1000u32;
        let rtt_for = |cwnd: u32| base + base * cwnd.saturating_sub(bdp) / bdp;
        let mut v = vegas();
        for _ in 0..40 {
            let rtt = rtt_for(v.cwnd());
            round(&mut v, rtt);
        }
        assert!(!v.in_slow_start());
        let queued = v.cwnd().saturating_sub(bdp);
        assert!(
            (VegasParams::for_increment(INC).alpha / 2
                ..=VegasParams::for_increment(INC).beta + INC)
                .contains(&queued),
            "queue estimate {queued} settles between alpha and beta (cwnd {})",
            v.cwnd()
        );
    }

    #[test]
    fn a_sudden_queue_cuts_the_window_and_the_floor_holds() {
        let mut v = vegas();
        for _ in 0..10 {
            round(&mut v, ms(100));
        }
        assert_eq!(v.cwnd(), 4096);
        // Another flow fills the bottleneck: the round trip quadruples. The epoch in progress
        // still holds short samples (the minimum filters them), so the cut comes within two
        // round trips.
        round(&mut v, ms(400));
        round(&mut v, ms(400));
        assert!(v.cwnd() < 1200, "cut to about the BDP: {}", v.cwnd());
        // A round trip twenty times the minimum: nearly the whole window is queue. It
        // shrinks until its own share of the queue is within beta, never below the floor.
        let p = VegasParams::for_increment(INC);
        for _ in 0..50 {
            round(&mut v, ms(2000));
            assert!(v.cwnd() >= p.cwnd_min);
        }
        assert!(v.cwnd() * 19 / 20 <= p.beta, "cwnd {}", v.cwnd());
        // From a full window, a round trip ten thousand times the minimum cuts to the
        // estimated BDP (under one cell) plus alpha: below the floor, so the floor.
        let mut v = vegas();
        for _ in 0..10 {
            round(&mut v, ms(1));
        }
        round(&mut v, ms(10_000));
        round(&mut v, ms(10_000));
        assert_eq!(v.cwnd(), p.cwnd_min);
    }

    #[test]
    fn delays_below_the_floor_are_not_a_queue() {
        // A fast path: 1 ms minimum, samples up to 9 ms while busy. With the floor the
        // window keeps growing to the cap; without it, it would shrink to the floor.
        let mut v = Vegas::new(VegasParams::for_increment(INC), INC);
        for i in 0..40u64 {
            round(&mut v, ms(1 + i % 9));
        }
        assert_eq!(v.cwnd(), VegasParams::for_increment(INC).cwnd_max);
        let mut bare = vegas();
        for i in 0..40u64 {
            round(&mut bare, ms(1 + i % 9));
        }
        assert!(bare.cwnd() < 1000, "without the floor: {}", bare.cwnd());
        // Past the floor, queueing counts again.
        for _ in 0..20 {
            round(&mut v, ms(200));
        }
        assert!(v.cwnd() < 1000, "a real queue still cuts: {}", v.cwnd());
    }

    #[test]
    fn an_idle_circuit_does_not_grow_its_window() {
        let mut v = vegas();
        for _ in 0..20 {
            v.on_ack(ms(50));
        }
        assert_eq!(v.cwnd(), 124);
    }
}
