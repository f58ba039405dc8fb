//! The node's disk check: [`scrub_loop`] re-hashes the store's blocks a
//! few MiB a second, over and over ([`crate::store::Store::scrub`]), and
//! fetches a good copy from a replica of each bad one it finds. It is
//! what catches a damaged disk, since blocks are served without being
//! hashed again (every reader checks them against their keys).

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

/// Scrubs the node's store until `stop`.
pub async fn scrub_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut after: Option<Id> = None;
    let (mut checked, mut bad) = (0usize, 0usize);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STEP_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
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
