//! The task owning one introduction circuit: establishes it, then screens every INTRODUCE2
//! ([`screen_introduction`]) and hands accepted introductions to [`super::rendezvous`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::cell::onion_msg::{Introduce, OnionMsg};
use crate::cell::relay_contexts::AtServiceIntro;
use crate::cell::RelayMsg;
use crate::crypto::{IdentityKeypair, OnionKeypair};
use crate::onion::handshake::{service_open_introduce, subcredential, HsServiceIntro, IntroKeys};
use crate::onion::intro::{build_establish_intro, IntroducePlaintext};
use crate::onion::replay::ReplayCache;
use crate::onion::BlindedPublic;
use crate::proto::RelayTarget;
use crate::sync::lock;

use super::intro_budget::{screen_introduction, Dropped, PointGroup};
use super::intro_gate::IntroGate;
use super::intro_queue::Queued;
use super::pow::PowState;
use super::shared::Shared;

/// Waiting for INTRO_ESTABLISHED.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(20);

/// The task owning one introduction circuit.
pub(super) struct IntroTask {
    pub(super) shared: Arc<Shared>,
    pub(super) target: RelayTarget,
    pub(super) auth: Arc<IdentityKeypair>,
    pub(super) enc: Arc<OnionKeypair>,
    pub(super) replay: Arc<Mutex<ReplayCache>>,
    pub(super) gate: Arc<Mutex<IntroGate>>,
    /// The slot was retired: charge its group's budget ([`PointGroup::Retired`]).
    pub(super) retired: Arc<AtomicBool>,
    pub(super) up: Arc<AtomicBool>,
    pub(super) ever_up: Arc<AtomicBool>,
    /// The slot's close signal (the slot was retired and dropped, or told to close).
    pub(super) close: watch::Receiver<bool>,
}

impl IntroTask {
    pub(super) async fn run(self) {
        let mut circ = match self
            .shared
            .client
            .build_circuit_ending(&self.target, crate::client::CircPurpose::IntroService)
            .await
        {
            Ok(c) => c.accepting::<AtServiceIntro>(),
            Err(e) => {
                debug!("onion service: introduction circuit failed: {e}");
                return;
            }
        };
        let binding = circ.last_hop_binding();
        let msg = match build_establish_intro(&self.auth, None, &binding) {
            Ok(m) => m,
            Err(e) => {
                warn!("onion service: cannot build ESTABLISH_INTRO: {e}");
                return;
            }
        };
        if let Err(e) = circ
            .send_to_last(RelayMsg::Onion(OnionMsg::EstablishIntro(msg)))
            .await
        {
            debug!("onion service: ESTABLISH_INTRO not sent: {e}");
            return;
        }
        let last = circ.len().saturating_sub(1);
        let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match circ.recv_timeout(left).await {
                // Padding (docs/protocol.md §3.6) may come from the second hop.
                Ok((_, cell, _)) if matches!(cell.msg(), AtServiceIntro::Drop) => continue,
                Ok((hop, cell, _)) if hop == last => match cell.msg() {
                    AtServiceIntro::IntroEstablished => break,
                    AtServiceIntro::Introduce2(_) | AtServiceIntro::Drop => {
                        debug!("onion service: unexpected answer to ESTABLISH_INTRO");
                        return;
                    }
                },
                Ok(_) => return,
                Err(e) => {
                    debug!("onion service: no INTRO_ESTABLISHED: {e}");
                    return;
                }
            }
        }
        self.ever_up
            .store(true, std::sync::atomic::Ordering::Release);
        self.up.store(true, std::sync::atomic::Ordering::Release);
        let mut stopped = self.shared.stopped.clone();
        let mut close = self.close.clone();
        loop {
            let received = tokio::select! {
                r = circ.recv() => r,
                // The service stopped. (Its handle being dropped is not a stop.)
                _ = async {
                    if stopped.wait_for(|s| *s).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    circ.destroy().await;
                    return;
                }
                // The slot was dropped (its key retired for good) or told to close.
                _ = async { let _ = close.wait_for(|s| *s).await; } => {
                    debug!("onion service: retired introduction point closed");
                    circ.destroy().await;
                    return;
                }
            };
            let (hop, cell, _) = match received {
                Ok(v) => v,
                Err(e) => {
                    debug!("onion service: introduction circuit closed: {e}");
                    return;
                }
            };
            match cell.into_parts().1 {
                AtServiceIntro::Drop => {}
                AtServiceIntro::Introduce2(intro) if hop == last => {
                    self.on_introduce2(intro);
                }
                AtServiceIntro::Introduce2(_) | AtServiceIntro::IntroEstablished => {
                    debug!("onion service: unexpected message on an introduction circuit");
                    circ.destroy().await;
                    return;
                }
            }
        }
    }

    /// Screens the introduction ([`screen_introduction`]: this point's budget, the
    /// service's decryption budget, [`Self::open_introduction`]); a valid one waits in
    /// the service's queue, by puzzle effort, for [`super::answer`].
    fn on_introduce2(&self, intro: Introduce) {
        if intro.auth_key() != self.auth.public().as_bytes() {
            debug!("onion service: INTRODUCE2 for another auth key");
            return;
        }
        let group = if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            PointGroup::Retired
        } else {
            PointGroup::Current
        };
        let now = self.shared.clock().instant().into_std();
        let screened = screen_introduction(&self.gate, group, &self.shared.budget, now, || {
            self.open_introduction(&intro)
        });
        let (plain, hs, effort) = match screened {
            Ok(v) => v,
            Err(Dropped::PointBudget) => {
                let refused = lock(&self.gate).refused();
                // Counted always; logged for the first and then every 100th, so a flood
                // does not flood the log too.
                if refused == 1 || refused % 100 == 0 {
                    debug!(
                        "onion service: introduction dropped (introduction point over its \
                         budget; {refused} refused so far at this point)"
                    );
                }
                return;
            }
            Err(Dropped::DecryptBudget) => {
                let refused = lock(&self.shared.budget).decrypt(group).refused();
                if refused == 1 || refused % 100 == 0 {
                    debug!(
                        "onion service: introduction dropped ({group:?} introduction points \
                         over their joint budget; {refused} refused so far)"
                    );
                }
                return;
            }
            // Logged by open_introduction.
            Err(_) => return,
        };
        let queued = Queued {
            plain,
            hs,
            replay: Arc::clone(&self.replay),
            client_x: *intro.client_x(),
        };
        match lock(&self.shared.queue).push(effort, *intro.client_x(), now, queued) {
            Ok(()) => self.shared.queued.notify_one(),
            Err(e) => debug!("onion service: introduction not queued ({e:?})"),
        }
    }

    /// Decryption, plaintext, puzzle check, replay check: the introduction's plaintext
    /// and handshake state, or `None` (logged at debug) if it is not worth a rendezvous.
    /// Nothing is recorded in the replay cache yet ([`Self::take_rendezvous_slot`]).
    fn open_introduction(
        &self,
        intro: &Introduce,
    ) -> Option<(IntroducePlaintext, HsServiceIntro, u32)> {
        let now = self.shared.clock().now_unix();
        let Ok(current) = self.shared.periods.period_at(now) else {
            return None;
        };
        // A client may hold the descriptor of the neighbouring period (§8.4 accepts
        // |N − N(now)| ≤ 1): try the subcredential of each.
        let mut opened = None;
        for number in [
            Some(current.number),
            current.number.checked_sub(1),
            current.number.checked_add(1),
        ]
        .into_iter()
        .flatten()
        {
            let period = crate::onion::TimePeriod {
                length: current.length,
                number,
            };
            let Ok(blinded) = BlindedPublic::derive(&self.shared.address, period) else {
                continue;
            };
            let keys = IntroKeys {
                auth_key: self.auth.public(),
                enc_key: *self.enc.public(),
                subcred: subcredential(&self.shared.identity.public(), &blinded),
            };
            if let Ok(v) =
                service_open_introduce(&self.enc, &keys, intro.client_x(), intro.encrypted())
            {
                opened = Some((v, blinded));
                break;
            }
        }
        let Some(((plaintext, hs), blinded)) = opened else {
            debug!("onion service: INTRODUCE2 does not decrypt");
            return None;
        };
        let Ok(plain) = IntroducePlaintext::parse(&plaintext) else {
            debug!("onion service: malformed introduction plaintext");
            return None;
        };
        // The effort its puzzle solution earns it: 0 without one, without a puzzle, or
        // with one that does not count (invalid, reused, its seed's cache full). Such an
        // introduction is still answered, after every one with effort: refusing it would
        // only punish clients holding an old descriptor, since sending none is allowed.
        let effort = match (&self.shared.pow, &plain.pow) {
            (Some(pow), Some(sol)) => {
                let (auth, enc) = (self.auth.public(), *self.enc.public());
                let keys = (auth.as_bytes(), enc.as_bytes());
                PowState::accept(pow, now, &blinded, keys, intro.client_x(), sol).unwrap_or_else(
                    |why| {
                        debug!("onion service: puzzle solution not counted ({why:?})");
                        0
                    },
                )
            }
            _ => 0,
        };
        // Checked here, before the service-wide rate of answered introductions: a replay
        // (an introduction point may send one INTRODUCE2 again and again) must never use
        // up that rate, or one valid introduction would crowd out everyone. It is only
        // recorded once the introduction is acted on (take_rendezvous_slot): one dropped
        // for the rate or for want of a slot takes no room in the cache, and acting on it
        // later, if it comes again, still makes one rendezvous per X at most.
        if lock(&self.replay).check(intro.client_x()).is_err() {
            debug!("onion service: replayed or refused introduction");
            return None;
        }
        Some((plain, hs, effort))
    }
}
