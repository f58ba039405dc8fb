//! Owners of new keys from recent lookups, without another lookup.
//!
//! A lookup answers with the key's owner and the nodes after it: a run of
//! consecutive ring members. Any key on an arc between two neighbours of
//! that run has the later one as owner and the rest of the run as its
//! replica candidates, exactly what a lookup of it would say. Writes of
//! fresh random keys (every new file's record) would otherwise each pay a
//! lookup, often a network round trip.
//!
//! Runs are used for [`RUN_TTL`], the same staleness the node's route cache
//! accepts: a node that joined inside a run since is missed until then, so
//! an item goes to the replica set it had just before the join, which still
//! shares all but one member with the new set; repair moves it on.

use crate::chord::LookupResult;
use crate::id::Id;
use crate::wire::Peer;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a learned run answers for.
pub const RUN_TTL: Duration = Duration::from_secs(2);
/// Runs kept (the newest first).
const MAX_RUNS: usize = 8;

/// Recent runs of consecutive ring members.
#[derive(Default)]
pub struct Runs {
    /// (owner followed by the nodes after it, when learned), newest first.
    runs: Mutex<VecDeque<(Vec<Peer>, Instant)>>,
}

impl Runs {
    /// Learns the run of a lookup answer.
    pub fn learn(&self, r: &LookupResult) {
        let mut run = Vec::with_capacity(r.next.len() + 1);
        for p in std::iter::once(&r.owner).chain(&r.next) {
            if run.iter().any(|q: &Peer| q.id == p.id) {
                break; // wrapped around the ring
            }
            run.push(p.clone());
        }
        if run.len() < 2 {
            return;
        }
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|(old, at)| at.elapsed() < RUN_TTL && old[0].id != run[0].id);
        runs.push_front((run, Instant::now()));
        runs.truncate(MAX_RUNS);
    }

    /// The owner of `key` and at least `min_next` nodes after it, if a
    /// recent run covers `key`'s arc.
    pub fn locate(&self, key: Id, min_next: usize) -> Option<LookupResult> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        for (run, at) in runs.iter() {
            if at.elapsed() >= RUN_TTL {
                continue;
            }
            for i in 0..run.len() - 1 {
                let (a, b) = (run[i].id, run[i + 1].id);
                if a != b && key.in_half_open(a, b) && run.len() - (i + 2) >= min_next {
                    return Some(LookupResult {
                        key,
                        owner: run[i + 1].clone(),
                        next: run[i + 2..].to_vec(),
                        hops: 0,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(b: u8) -> Peer {
        let mut id = [0u8; 32];
        id[0] = b;
        Peer {
            id: Id(id),
            addr: format!("n{b}"),
        }
    }

    fn key(b: u8) -> Id {
        let mut id = [0u8; 32];
        id[0] = b;
        id[31] = 1;
        Id(id)
    }

    #[test]
    fn keys_between_known_neighbours_are_located() {
        let runs = Runs::default();
        assert!(runs.locate(key(15), 0).is_none());
        runs.learn(&LookupResult {
            key: key(5),
            owner: peer(10),
            next: vec![peer(20), peer(30), peer(40), peer(50), peer(10)],
            hops: 1,
        });
        let r = runs.locate(key(15), 2).unwrap();
        assert_eq!(r.owner, peer(20));
        assert_eq!(r.next, vec![peer(30), peer(40), peer(50)]);
        assert_eq!(runs.locate(key(29), 2).unwrap().owner, peer(30));
        // Too few nodes known after the owner, or outside the run.
        assert!(runs.locate(key(45), 2).is_none());
        assert_eq!(runs.locate(key(45), 0).unwrap().owner, peer(50));
        assert!(runs.locate(key(55), 0).is_none(), "past the run's end");
        assert!(runs.locate(key(5), 0).is_none(), "before its start");
        // Exactly on a node: that node owns it.
        let mut on = peer(30).id;
        on.0[31] = 0;
        assert_eq!(runs.locate(on, 0).unwrap().owner, peer(30));
    }

    #[test]
    fn runs_expire() {
        let runs = Runs::default();
        runs.learn(&LookupResult {
            key: key(5),
            owner: peer(10),
            next: vec![peer(20), peer(30)],
            hops: 0,
        });
        assert!(runs.locate(key(15), 1).is_some());
        runs.runs.lock().unwrap()[0].1 -= RUN_TTL;
        assert!(runs.locate(key(15), 1).is_none());
    }
}
