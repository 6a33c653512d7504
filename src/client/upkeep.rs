//! The client's background upkeep: refetches the consensus at the time it names, retries
//! with bounded back-off while none can be had, and recovers from a wall-clock jump
//! (suspend/resume, an NTP step) without a restart: refetch at once, retire the circuits
//! built before the jump, rebuild the clean ones once a live consensus is in.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::circmgr::CircMgr;
use super::dirmgr::DirMgr;
use super::guardmgr::GuardMgr;

/// First wait after a failed consensus fetch; it doubles up to [`RETRY_MAX`]. Also the
/// shortest wait: a request that finds no live consensus cuts a longer back-off to this.
const RETRY_FIRST: Duration = Duration::from_secs(2);

/// Longest wait between two consensus fetches while the consensus is unusable: bounded,
/// so a client recovers soon after the directory does.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Keeps the consensus fresh and recovers from clock jumps, forever (spawn it).
pub(crate) async fn run(dir: Arc<DirMgr>, circuits: Arc<CircMgr>, guards: Arc<GuardMgr>) {
    let clock = dir.clock().clone();
    let mut jumps = clock.watch_jumps();
    let mut retry = RETRY_FIRST;
    // Set by a jump until a fetch succeeds: then the clean circuits are rebuilt.
    let mut rebuild = false;
    // Set after a failed fetch: wait `retry`, not the consensus's refetch time.
    let mut failed = false;
    loop {
        // A request that found no live consensus (a jump not reported yet, an outage)
        // cuts the wait to RETRY_FIRST.
        let wanted = async {
            dir.consensus_wanted().await;
            clock.sleep(RETRY_FIRST).await;
        };
        let jumped = if failed {
            tokio::select! {
                () = clock.sleep(retry) => None,
                () = wanted => None,
                j = jumps.next() => Some(j),
            }
        } else {
            tokio::select! {
                () = clock.sleep_until_unix(dir.next_refetch()) => None,
                () = wanted => None,
                j = jumps.next() => Some(j),
            }
        };
        if let Some(jump) = jumped {
            info!(
                "client: {jump}; refetching the consensus and replacing the circuits built \
                 before the jump"
            );
            circuits.retire_all().await;
            dir.forget_clock_samples();
            {
                let mut set = guards.lock();
                set.clamp_times(clock.now_unix());
                guards.save(&set);
            }
            rebuild = true;
            retry = RETRY_FIRST;
        }
        match dir.fetch_consensus().await {
            Ok(c) => {
                debug!("client: consensus refreshed ({} relays)", c.relays().len());
                if failed || rebuild {
                    info!("client: a live consensus is in again; building circuits");
                    circuits.refill_clean();
                }
                (failed, rebuild, retry) = (false, false, RETRY_FIRST);
            }
            Err(e) => {
                // One warning per outage; the retries after it are quiet.
                if failed {
                    retry = (retry * 2).min(RETRY_MAX);
                    debug!(
                        "client: still no consensus (next try in {} s): {e}",
                        retry.as_secs()
                    );
                } else {
                    warn!(
                        "client: cannot refresh the consensus (retrying every {} s at most): {e}",
                        RETRY_MAX.as_secs()
                    );
                }
                failed = true;
            }
        }
    }
}
