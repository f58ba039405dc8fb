//! What must hold of the simulated ring and its data.
//!
//! - [`Sim::check_zave`]: Zave's inductive invariant, at any moment.
//! - [`Sim::check_ring`]: once the ring is stable, the invariants of
//!   DESIGN.md: one ordered cycle, exact successor lists and predecessors,
//!   every item owned by exactly one live node and held by exactly its r
//!   replicas (no more: surplus copies are dropped once proven).
//! - [`Sim::data_report`]: every acknowledged item is still held by a live
//!   honest node (a record at its acknowledged version or a newer one).

use super::{Sim, index_of};
use crate::id::Id;
use crate::store::ItemStore;
use crate::wire::ItemVersion;
use std::collections::{BTreeSet, HashMap};

/// Acknowledged items and those no live honest node holds any more.
#[derive(Debug, Clone, Default)]
pub struct DataReport {
    /// Items acknowledged.
    pub acked: usize,
    /// Those lost, described.
    pub lost: Vec<String>,
}

impl Sim {
    /// Every item key held among live honest nodes.
    pub fn all_keys(&self) -> BTreeSet<Id> {
        self.live()
            .iter()
            .filter(|&&i| !self.nodes[i].liar)
            .flat_map(|&i| self.nodes[i].store.items().into_iter().map(|(k, _)| k))
            .collect()
    }

    /// Which acknowledged items no live honest node holds.
    pub fn data_report(&self) -> DataReport {
        let honest: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| !self.nodes[i].liar)
            .collect();
        let mut r = DataReport::default();
        for k in self.acked_blocks.keys() {
            r.acked += 1;
            let held = honest
                .iter()
                .any(|&i| matches!(self.nodes[i].store.get_block(*k), Ok(Some(_))));
            if !held {
                r.lost.push(format!("block {}", k.short()));
            }
        }
        for st in &self.records {
            let Some(a) = &st.acked else { continue };
            r.acked += 1;
            let held = honest.iter().any(|&i| {
                self.nodes[i]
                    .store
                    .record_seq(a.key())
                    .is_some_and(|s| s >= a.seq)
            });
            if !held {
                r.lost
                    .push(format!("record {} version {}", a.key().short(), a.seq));
            }
        }
        r
    }

    /// Copies of `key` among live honest nodes (any version).
    fn holders(&self, key: Id) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|&i| {
                !self.nodes[i].liar
                    && self.nodes[i]
                        .store
                        .missing(&[(key, ItemVersion::Block), (key, ItemVersion::Record(0))])
                        .len()
                        < 2
            })
            .collect()
    }
    /// Zave's inductive invariant, checked now: every member has a live entry
    /// in its successor list, and at least `min(s + 1, N)` members are
    /// principal (skipped by no other member's successor list).
    pub fn check_zave(&mut self) {
        // A paused or cut-off node is down as far as the others can tell.
        let now = self.now;
        let ring: Vec<usize> = self
            .true_ring()
            .into_iter()
            .filter(|&i| {
                let n = &self.nodes[i];
                n.paused_until.is_none_or(|t| t <= now) && n.cut_until.is_none_or(|t| t <= now)
            })
            .collect();
        let n = ring.len();
        if n < 2 {
            return;
        }
        let pos: HashMap<Id, usize> = ring
            .iter()
            .enumerate()
            .map(|(k, &i)| (self.nodes[i].chord.me().id, k))
            .collect();
        let mut skipped = vec![false; n];
        for (k, &i) in ring.iter().enumerate() {
            let c = &self.nodes[i].chord;
            let live_entries: Vec<usize> = c
                .succs()
                .iter()
                .filter_map(|p| pos.get(&p.id).copied())
                .collect();
            if live_entries.is_empty() {
                if super::debug_on() {
                    eprintln!(
                        "  {} succs {:?} pred {:?} member {} {}",
                        c.me().id.short(),
                        c.succs().iter().map(|p| p.addr.clone()).collect::<Vec<_>>(),
                        c.pred().map(|p| p.addr.clone()),
                        c.is_member(),
                        c.debug_flags()
                    );
                }
                self.zave_violations.push(format!(
                    "t={} node {} has no live successor",
                    self.now,
                    c.me().id.short()
                ));
                continue;
            }
            // Members strictly between consecutive live entries are skipped.
            let mut prev = k;
            for &e in &live_entries {
                let mut x = (prev + 1) % n;
                while x != e && x != k {
                    skipped[x] = true;
                    x = (x + 1) % n;
                }
                prev = e;
            }
        }
        let principals = skipped.iter().filter(|s| !**s).count();
        let need = (self.cfg.chord.succ_list_len + 1).min(n);
        if principals < need && super::debug_on() {
            for &i in &ring {
                let c = &self.nodes[i].chord;
                let succ: Vec<String> = c.succs().iter().map(|p| p.addr.clone()).collect();
                eprintln!(
                    "  {} {} pred {:?} succs {succ:?} skipped={}",
                    i,
                    c.me().id.short(),
                    c.pred().map(|p| p.addr.clone()),
                    skipped[pos[&c.me().id]]
                );
            }
        }
        if principals < need {
            self.zave_violations.push(format!(
                "t={} only {principals} principal members (need {need})",
                self.now
            ));
        }
    }

    /// The ring invariants of DESIGN.md, after stabilization: one ordered
    /// cycle, exact successor lists and predecessors, every key owned by
    /// exactly one live node and held by its r replicas, lookups agree.
    pub fn check_ring(&self) -> Result<(), String> {
        let ring = self.true_ring();
        let n = ring.len();
        if n == 0 {
            return Err("no live members".into());
        }
        let s = self.cfg.chord.succ_list_len;
        for (k, &i) in ring.iter().enumerate() {
            let c = &self.nodes[i].chord;
            let want: Vec<Id> = (1..n.min(s + 1))
                .map(|d| self.nodes[ring[(k + d) % n]].chord.me().id)
                .collect();
            let got: Vec<Id> = c.succs().iter().map(|p| p.id).collect();
            if got != want {
                if super::debug_on() {
                    for &j in &ring {
                        let c = &self.nodes[j].chord;
                        eprintln!(
                            "  {j} {} pred {:?} succs {:?} whole {} {}",
                            c.me().id.short(),
                            c.pred().map(|p| p.id.short()),
                            c.succs().iter().map(|p| p.id.short()).collect::<Vec<_>>(),
                            c.whole_ring(),
                            c.debug_flags(),
                        );
                    }
                }
                return Err(format!(
                    "node {} successor list {:?}, expected {:?}",
                    c.me().id.short(),
                    got.iter().map(|x| x.short()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.short()).collect::<Vec<_>>()
                ));
            }
            if n > 1 {
                let want_pred = self.nodes[ring[(k + n - 1) % n]].chord.me().id;
                if c.pred().map(|p| p.id) != Some(want_pred) {
                    return Err(format!(
                        "node {} predecessor {:?}, expected {}",
                        c.me().id.short(),
                        c.pred().map(|p| p.id.short()),
                        want_pred.short()
                    ));
                }
            }
        }
        // Following successors from any member visits all members once.
        let start = ring[0];
        let mut seen = BTreeSet::new();
        let mut cur = start;
        for _ in 0..n {
            seen.insert(cur);
            let next = self.nodes[cur].chord.successor().addr.clone();
            cur = index_of(&next).ok_or("bad address")?;
        }
        if cur != start || seen.len() != n {
            return Err(format!(
                "successor cycle covers {} of {n} members",
                seen.len()
            ));
        }
        // Ownership and replication of every stored key.
        let r = self.cfg.replicas.min(n);
        for key in self.all_keys() {
            let owners: Vec<usize> = ring
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].chord.owns(key))
                .collect();
            if owners.len() != 1 {
                return Err(format!(
                    "key {} owned by {} live nodes",
                    key.short(),
                    owners.len()
                ));
            }
            let o = ring
                .iter()
                .position(|&i| i == owners[0])
                .ok_or("owner not in ring")?;
            let holders = self.holders(key);
            for d in 0..r {
                let holder = ring[(o + d) % n];
                if !holders.contains(&holder) {
                    return Err(format!(
                        "key {} missing on replica {} (#{d} of {r})",
                        key.short(),
                        self.nodes[holder].chord.me().id.short()
                    ));
                }
            }
            let copies = holders.len();
            if copies != r {
                let set: Vec<usize> = (0..r).map(|d| ring[(o + d) % n]).collect();
                let versions: Vec<String> = holders
                    .iter()
                    .map(|&h| {
                        let v = self.nodes[h].store.record_seq(key);
                        format!("{h}:{}", v.map_or("block".into(), |s| format!("v{s}")))
                    })
                    .collect();
                return Err(format!(
                    "key {} held by {copies} nodes {versions:?}, expected {r} (replicas {set:?})",
                    key.short()
                ));
            }
        }
        Ok(())
    }
}
