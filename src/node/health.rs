//! A node's health: its last repair pass, what it tells other members'
//! dashboards (`Health`), and the levels its `/metrics` shows.

use super::Node;
use crate::dht::repair::RepairStats;
use crate::metrics::Levels;
use crate::wire::{Health, RepairState};
use std::time::Instant;

/// How the last repair pass ended, and when.
#[derive(Debug, Clone, Copy)]
pub struct LastRepair {
    pub ended: Instant,
    pub copied: u64,
    pub backlog: u64,
}

impl LastRepair {
    /// The outcome of a pass that just ended with `s`.
    pub fn of(s: &RepairStats) -> LastRepair {
        LastRepair {
            ended: Instant::now(),
            copied: s.pushed as u64,
            backlog: s.failures as u64,
        }
    }
}

/// What the node's mount adds to its levels (set once mounted).
#[derive(Debug, Clone, Copy, Default)]
pub struct MountLevels {
    pub journal_entries: u64,
    pub journal_bytes: u64,
    pub uploads_in_flight: u64,
    pub cache_bytes: u64,
    pub cache_capacity: u64,
}

/// Reads the mount's levels (see [`super::Core::mount_levels`]).
pub type MountLevelsHook = Box<dyn Fn() -> MountLevels + Send + Sync>;

impl Node {
    /// Notes the outcome of a repair pass.
    pub fn note_repair(&self, s: &RepairStats) {
        *self
            .core
            .last_repair
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(LastRepair::of(s));
    }

    /// The last repair pass, as a member tells it.
    pub fn repair_state(&self) -> Option<RepairState> {
        let last = *self
            .core
            .last_repair
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.map(|r| RepairState {
            age_ms: r.ended.elapsed().as_millis() as u64,
            copied: r.copied,
            backlog: r.backlog,
        })
    }

    /// What this node tells a dashboard.
    pub fn health(&self) -> Health {
        Health {
            info: self.info(),
            member: self.core.ring.view(|c| c.is_member()),
            repair: self.repair_state(),
        }
    }

    /// The levels `/metrics` shows now (`conflicts` from the caller, who
    /// asked the mount).
    pub fn levels(&self, conflicts: u64) -> Levels {
        let info = self.info();
        let repair = self.repair_state();
        let mut known: Vec<_> = info
            .succs
            .iter()
            .chain(info.pred.iter())
            .chain(info.fingers.iter())
            .map(|p| p.id)
            .filter(|id| *id != info.me.id)
            .collect();
        known.sort();
        known.dedup();
        let mount = self
            .core
            .mount_levels
            .get()
            .map(|f| f())
            .unwrap_or_default();
        Levels {
            blocks: info.blocks,
            records: info.records,
            bytes_stored: info.bytes,
            repair_backlog: repair.map_or(0, |r| r.backlog),
            repair_copied: repair.map_or(0, |r| r.copied),
            repair_age_secs: repair.map_or(-1, |r| (r.age_ms / 1000) as i64),
            members_known: known.len() as u64 + 1,
            member: self.core.ring.view(|c| c.is_member()),
            journal_entries: mount.journal_entries,
            journal_bytes: mount.journal_bytes,
            conflicts,
            uploads_in_flight: mount.uploads_in_flight,
            cache_bytes: mount.cache_bytes,
            cache_capacity: mount.cache_capacity,
        }
    }
}
