//! The node's disk check: [`scrub_loop`] re-hashes the store's blocks a
//! few MiB a second, over and over ([`crate::store::Store::scrub`]), and
//! fetches a good copy from a replica of each bad one it finds. It is
//! what catches a damaged disk, since blocks are served without being
//! hashed again (every reader checks them against their keys). A step
//! waits while the store is busy ([`Pace`]): its reads would compete with
//! the node's own for the disk.

use super::Node;
use crate::id::Id;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a scrub step runs.
const STEP_EVERY: Duration = Duration::from_secs(1);
/// Bytes a step reads and hashes, about (8 MiB/s: 100 GB in ~3.5 hours,
/// a few ms of CPU a second).
const STEP_BYTES: u64 = 8 << 20;

/// Steps put off in a row at most while the store stays busy: under
/// constant load the scrub still reads `STEP_BYTES` every this many steps.
const MAX_PUT_OFF: u32 = 30;

/// When a scrub step runs: only after a period in which the store wrote
/// no item and served no block (as ZFS delays a scrub's reads while the
/// pool has other I/O), or after [`MAX_PUT_OFF`] busy periods in a row.
#[derive(Debug, Default)]
struct Pace {
    /// [`crate::store::Store::served`] at the last look.
    seen: Option<u64>,
    /// Busy periods in a row since the last step.
    put_off: u32,
}

impl Pace {
    /// Whether a step runs now, given the store's count of items written
    /// and blocks served.
    fn step_now(&mut self, served: u64) -> bool {
        let busy = self.seen.is_some_and(|s| s != served);
        self.seen = Some(served);
        if busy && self.put_off < MAX_PUT_OFF {
            self.put_off += 1;
            return false;
        }
        self.put_off = 0;
        true
    }
}

/// Scrubs the node's store until `stop`.
pub async fn scrub_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut after: Option<Id> = None;
    let (mut checked, mut bad) = (0usize, 0usize);
    let mut pace = Pace::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STEP_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        if !pace.step_now(node.core.store.served()) {
            continue;
        }
        let store = Arc::clone(&node.core.store);
        let step = match tokio::task::spawn_blocking(move || store.scrub(after, STEP_BYTES)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::warn!("disk check: {e}");
                continue;
            }
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                log::error!("disk check task failed: {e}");
                continue;
            }
        };
        checked += step.checked;
        for key in step.corrupt {
            bad += 1;
            (node.refetcher())(key);
        }
        after = step.next;
        if after.is_none() && checked > 0 {
            if bad > 0 {
                log::warn!("disk check: {bad} bad copies among {checked} blocks, refetched");
            } else {
                log::debug!("disk check: {checked} blocks, all good");
            }
            (checked, bad) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_waits_while_the_store_is_busy_but_not_forever() {
        let mut pace = Pace::default();
        assert!(pace.step_now(0), "the first look steps");
        assert!(pace.step_now(0), "an idle period steps");
        for n in 1..=MAX_PUT_OFF as u64 {
            assert!(!pace.step_now(n), "busy period {n} waits");
        }
        assert!(
            pace.step_now(MAX_PUT_OFF as u64 + 1),
            "a step after the most put off"
        );
        assert!(
            !pace.step_now(MAX_PUT_OFF as u64 + 2),
            "busy again: waits again"
        );
        assert!(pace.step_now(MAX_PUT_OFF as u64 + 2), "idle: steps");
    }
}
