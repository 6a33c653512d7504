//! Starts the authority's own probes of the relays it would list (the bandwidth scanner and
//! the exit checks) and feeds what they find into each relay's reputation, which the next
//! vote turns into measured bandwidth and flags (`vote_builder.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::debug;

use crate::crypto::IdentityPublic;
use crate::dir::ExitPolicy;
use crate::proto::RelayTarget;
use crate::sync::lock;

use super::bandwidth_scan::{ProbeOutcome, Scanner};
use super::exit_check::{run_exit_checks, ExitCheck, ExitCheckConfig};
use super::{Authority, ExitVerdict};

impl Authority {
    /// This authority's link address as the configured list gives it (what relays and
    /// exits reach it at).
    fn own_addr(&self) -> Option<SocketAddr> {
        let me = self.relay.keys.identity();
        self.config
            .authorities
            .iter()
            .find(|a| a.identity == me)
            .map(|a| a.addr)
    }

    /// The relays worth probing: reached within the last two periods and not rejected,
    /// with what a circuit to them needs and their exit policy (`None`: not an exit).
    fn probe_targets(&self) -> Vec<(IdentityPublic, RelayTarget, Option<ExitPolicy>)> {
        let now = self.now();
        let period = self.period();
        let state = lock(&self.state);
        state
            .relays
            .iter()
            .filter(|(_, k)| k.reached_recently(now, period))
            .filter(|(id, k)| !self.config.reject.rejects(id, &k.descriptor.addrs))
            .filter_map(|(id, k)| {
                let d = &k.descriptor;
                let onion = d.onion_cert.verify(now).ok()?;
                let addr = *d.addrs.first()?;
                let target = RelayTarget {
                    addr,
                    identity: *id,
                    onion,
                };
                Some((*id, target, d.exit.then(|| d.exit_policy.clone())))
            })
            .collect()
    }

    /// Starts the probes the configuration asks for.
    pub(super) fn start_probes(self: &Arc<Self>) {
        let Some(own_addr) = self.own_addr() else {
            return;
        };
        if let Some(cfg) = self.config.measure.clone() {
            let scanner = Arc::new(Scanner::new(
                Arc::clone(&self.relay),
                Arc::clone(&self.measure_tokens),
                own_addr,
                cfg,
            ));
            let (a, b) = (Arc::clone(self), Arc::clone(self));
            tokio::spawn(scanner.run_rounds(
                move || {
                    a.probe_targets()
                        .into_iter()
                        .map(|(id, t, _)| (id, t))
                        .collect()
                },
                move |id, outcome| {
                    debug!(?outcome, "authority: bandwidth probe");
                    b.record_probe(
                        &id,
                        match outcome {
                            ProbeOutcome::Measured {
                                bytes_per_second, ..
                            } => Some(bytes_per_second),
                            ProbeOutcome::CircuitFailed(_) | ProbeOutcome::TransferFailed(_) => {
                                None
                            }
                        },
                    );
                },
            ));
        }
        if let Some(cfg) = self.config.exit_checks.clone() {
            self.start_exit_checks(own_addr, cfg);
        }
    }

    /// Starts checking exits with `cfg` (normally at start; a test network may start them
    /// later, see `TestNet::start_exit_checks`).
    pub(crate) fn start_exit_checks(
        self: &Arc<Self>,
        own_addr: SocketAddr,
        mut cfg: ExitCheckConfig,
    ) {
        // A relay listening on a wildcard address serves the check on the address the
        // network knows it by.
        if cfg.server.is_none() && self.relay.listen_addr.ip().is_unspecified() {
            cfg.server = Some(SocketAddr::new(own_addr.ip(), 0));
        }
        let (a, b) = (Arc::clone(self), Arc::clone(self));
        tokio::spawn(run_exit_checks(
            Arc::clone(&self.relay),
            cfg,
            move || {
                a.probe_targets()
                    .into_iter()
                    .filter_map(|(id, t, policy)| Some((id, t, policy?)))
                    .collect()
            },
            move |id, check| {
                let verdict = match check {
                    ExitCheck::Passed => ExitVerdict::Passed,
                    ExitCheck::Tampered => ExitVerdict::Tampered,
                    ExitCheck::Failed(_) => ExitVerdict::Failed,
                    ExitCheck::NotApplicable => return,
                };
                b.record_exit_check(&id, verdict);
            },
        ));
    }

    /// Starts the test-network exit checks now, if they are not configured to run already.
    pub fn start_test_network_exit_checks(self: &Arc<Self>) {
        if self.config.exit_checks.is_some() {
            return;
        }
        if let Some(own) = self.own_addr() {
            self.start_exit_checks(own, ExitCheckConfig::for_test_network());
        }
    }
}
