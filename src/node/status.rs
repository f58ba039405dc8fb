//! `peerstore status`: what a node tells about itself, its ring contact
//! and its mounted folder (the conflict copies it made, and whether each
//! is still there).

use super::{MountReport, Node};
use crate::fs::{BlockStore, Vault};
use crate::wire::{ConflictInfo, LocalState, MAX_STATUS_CONFLICTS, MountStatus, NodeStatus};
use std::sync::Arc;
use std::time::Duration;

/// How long `status` waits for the mount's report.
const STATUS_WAIT: Duration = Duration::from_secs(10);

impl Node {
    /// The node, its ring contact and its mount's report (given at most
    /// [`STATUS_WAIT`] to answer; left out past it).
    pub async fn status(&self) -> NodeStatus {
        let mount = match self.core.mount_report.get() {
            Some(report) => tokio::time::timeout(STATUS_WAIT, report()).await.ok(),
            None => None,
        };
        NodeStatus {
            info: self.info(),
            member: self.core.ring.view(|c| c.is_member()),
            mount,
        }
    }

    /// Tells `status` about the folder mounted at `dir` over `vault`, and
    /// how to read its offline state.
    pub fn set_mount<S: BlockStore>(&self, vault: Arc<Vault<S>>, dir: String, local: LocalReport) {
        let _ = self.core.mount_report.set(mount_report(vault, dir, local));
    }
}

/// A mount's offline state, read when `status` asks.
pub type LocalReport = Arc<dyn Fn() -> LocalState + Send + Sync>;

/// The report of a mount of `vault` at `dir`: its newest conflict copies,
/// each checked for presence, and its offline state.
pub fn mount_report<S: BlockStore>(
    vault: Arc<Vault<S>>,
    dir: String,
    local: LocalReport,
) -> MountReport {
    Box::new(move || {
        let (vault, dir, local) = (Arc::clone(&vault), dir.clone(), Arc::clone(&local));
        Box::pin(async move { mount_status(&vault, dir, local()).await })
    })
}

async fn mount_status<S: BlockStore>(
    vault: &Vault<S>,
    dir: String,
    local: LocalState,
) -> MountStatus {
    let mut conflicts: Vec<ConflictInfo> = vault
        .conflict_copies()
        .await
        .into_iter()
        .map(|(c, present)| ConflictInfo {
            path: c.path,
            copy: c.copy,
            at: c.at.secs,
            present,
        })
        .collect();
    let old = conflicts.len().saturating_sub(MAX_STATUS_CONFLICTS);
    conflicts.drain(..old);
    MountStatus {
        dir,
        conflicts,
        local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Identity;
    use crate::fs::mem_store::MemStore;

    #[tokio::test]
    async fn the_report_lists_the_newest_copies_and_which_are_gone() {
        let v = Vault::new(Arc::new(MemStore::default()), Identity::generate());
        for i in 0..MAX_STATUS_CONFLICTS + 2 {
            v.conflicts
                .note(&format!("/f{i}"), &format!("/f{i}.conflict"));
        }
        let report = mount_report(Arc::clone(&v), "/mnt".into(), Arc::new(LocalState::default));
        let s = report().await;
        assert_eq!(s.dir, "/mnt");
        assert_eq!(s.conflicts.len(), MAX_STATUS_CONFLICTS);
        assert_eq!(s.conflicts[0].path, "/f2");
        // None of the copies exists in this empty tree.
        assert!(s.conflicts.iter().all(|c| !c.present));
    }
}
