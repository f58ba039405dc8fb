//! The owner's orphan check: blocks this owner claims on the ring that no
//! version of its tree refers to any more are released.
//!
//! Releasing what a save replaced, or what a deleted file used, is the
//! second of two steps (the new version or the delete is stored first). A
//! crash between them, or a release that could not reach every replica,
//! leaves blocks nobody refers to. The check lists every block the owner
//! claims on every member ([`Dht::owned_blocks`]), walks the owner's whole
//! tree for the blocks it refers to ([`Vault::live_blocks`]), and releases
//! the rest that were claimed more than a grace period ago (a younger
//! block may belong to a save still under way, here or on another machine
//! of the same owner). Any failure, of the listing or of the walk, skips
//! the round: nothing is released on a partial view.
//!
//! The walk counts the versions files kept within the retention period
//! and the files in the trash ([`crate::fs::trash`]); each round first
//! deletes the files that have been in the trash longer than that. So the
//! check is also what frees the space of versions and deleted files once
//! the retention period lets go of them.

use crate::dht::{Dht, Transport};
use crate::fs::{BlockStore, Vault};
use crate::ownership::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// When and how the orphan check runs.
#[derive(Debug, Clone, Copy)]
pub struct OrphanCheck {
    /// Time between rounds (the first comes one period after mounting).
    pub every: Duration,
    /// Blocks claimed more recently than this are never released.
    pub grace: Duration,
}

impl Default for OrphanCheck {
    fn default() -> Self {
        OrphanCheck {
            every: Duration::from_secs(6 * 3600),
            grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// One round: how many blocks it released.
pub async fn check_once<T: Transport, S: BlockStore>(
    dht: &Dht<T>,
    vault: &Vault<S>,
    grace: Duration,
) -> Result<usize, String> {
    match vault.expire_trash().await {
        Ok(0) => {}
        Ok(n) => log::info!("trash: {n} files deleted before the retention period were deleted"),
        Err(e) => return Err(format!("expiring the trash: {e}")),
    }
    let listed = dht
        .owned_blocks(vault.identity().owner())
        .await
        .map_err(|e| format!("listing this owner's blocks: {e}"))?;
    let orphans = vault
        .orphans(&listed, grace.as_millis() as u64, now_ms())
        .await
        .map_err(|e| format!("walking the tree: {e}"))?;
    let n = orphans.len();
    vault
        .release_now(orphans)
        .await
        .map_err(|e| format!("releasing: {e}"))?;
    Ok(n)
}

/// Runs rounds until `stop` becomes `true`.
pub async fn orphan_loop<T: Transport, S: BlockStore>(
    dht: Dht<T>,
    vault: Arc<Vault<S>>,
    cfg: OrphanCheck,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match check_once(&dht, &vault, cfg.grace).await {
            Ok(0) => log::debug!("orphan check: nothing to release"),
            Ok(n) => log::info!("orphan check: released {n} blocks no version refers to"),
            Err(e) => log::warn!("orphan check skipped: {e}"),
        }
    }
}
