//! Version vectors: which writer saved a record how many times, so two
//! versions of one record can be told apart as "one replaces the other" or
//! "written concurrently" without comparing clocks or keeping history.
//!
//! A [`Clock`] maps a writer (the node a save went through, by the first
//! eight bytes of its ID) to the number of saves it made. A writer saving
//! over the versions it read stores the join of their clocks with its own
//! count raised by one ([`Clock::next`]), so a version's clock is above
//! every clock it replaces. Two versions whose clocks are not ordered were
//! written without either writer seeing the other's (a partition, most
//! often): storage nodes keep both until a writer merges them.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Writers one clock names, at most (a user's machines; a record whose
/// clock would grow past it forgets its smallest counts, see
/// [`Clock::next`]).
pub const MAX_WRITERS: usize = 32;

/// A version vector: `(writer, count)` pairs, by writer, no count zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Clock(Vec<(u64, u64)>);

/// How one clock stands to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causal {
    Equal,
    /// Every count is at most the other's, one is less.
    Before,
    /// Every count is at least the other's, one is more.
    After,
    /// Neither: written concurrently.
    Concurrent,
}

impl Clock {
    /// A clock from pairs in any order (duplicates keep their largest
    /// count, zeros are dropped).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Clock {
        let mut v: Vec<(u64, u64)> = pairs.into_iter().filter(|p| p.1 > 0).collect();
        v.sort_unstable();
        v.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = earlier.1.max(later.1);
                true
            } else {
                false
            }
        });
        Clock(v)
    }

    /// The pairs, by writer.
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Whether no writer is named (records written without clocks).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the clock is well formed: sorted, unique, no zero, bounded.
    pub fn is_valid(&self) -> bool {
        self.0.len() <= MAX_WRITERS
            && self.0.iter().all(|p| p.1 > 0)
            && self.0.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// `writer`'s count.
    pub fn get(&self, writer: u64) -> u64 {
        self.0
            .binary_search_by_key(&writer, |p| p.0)
            .map_or(0, |i| self.0[i].1)
    }

    /// The least clock at or above both.
    pub fn join(&self, other: &Clock) -> Clock {
        Clock::from_pairs(self.0.iter().chain(other.0.iter()).copied())
    }

    /// The clock of a save by `writer` over a version with this clock:
    /// `writer`'s count one more. A clock at [`MAX_WRITERS`] forgets the
    /// writer with the smallest count first (it can then no longer tell
    /// that writer's old versions from concurrent ones: a later merge
    /// keeps both, so nothing is lost).
    pub fn next(&self, writer: u64) -> Clock {
        let mut v = self.0.clone();
        match v.binary_search_by_key(&writer, |p| p.0) {
            Ok(i) => v[i].1 += 1,
            Err(i) => {
                v.insert(i, (writer, 1));
                while v.len() > MAX_WRITERS {
                    let smallest = v
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.0 != writer)
                        .min_by_key(|(_, p)| p.1)
                        .map(|(i, _)| i);
                    match smallest {
                        Some(j) => {
                            v.remove(j);
                        }
                        None => break,
                    }
                }
            }
        }
        Clock(v)
    }

    /// How this clock stands to `other`.
    pub fn causal(&self, other: &Clock) -> Causal {
        let (mut less, mut more) = (false, false);
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    more = true;
                    a.next();
                }
                (None, Some(_)) => {
                    less = true;
                    b.next();
                }
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    Ordering::Less => {
                        more = true;
                        a.next();
                    }
                    Ordering::Greater => {
                        less = true;
                        b.next();
                    }
                    Ordering::Equal => {
                        match x.1.cmp(&y.1) {
                            Ordering::Less => less = true,
                            Ordering::Greater => more = true,
                            Ordering::Equal => {}
                        }
                        a.next();
                        b.next();
                    }
                },
            }
            if less && more {
                return Causal::Concurrent;
            }
        }
        match (less, more) {
            (false, false) => Causal::Equal,
            (true, false) => Causal::Before,
            (false, true) => Causal::After,
            (true, true) => Causal::Concurrent,
        }
    }

    /// Appends the signed encoding: the count of pairs, then each pair,
    /// all big-endian u64s.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u64).to_be_bytes());
        for (w, n) in &self.0 {
            out.extend_from_slice(&w.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn saves_order_and_partitions_are_concurrent() {
        let base = Clock::default().next(1).next(1);
        let a = base.next(1);
        let b = base.next(2);
        assert_eq!(a.causal(&base), Causal::After);
        assert_eq!(base.causal(&a), Causal::Before);
        assert_eq!(a.causal(&b), Causal::Concurrent);
        let merged = a.join(&b).next(1);
        assert_eq!(merged.causal(&a), Causal::After);
        assert_eq!(merged.causal(&b), Causal::After);
        assert_eq!(merged.causal(&merged.clone()), Causal::Equal);
        assert_eq!(merged.get(1), 4);
        assert_eq!(merged.get(2), 1);
        assert_eq!(merged.get(3), 0);
    }

    #[test]
    fn a_full_clock_forgets_the_smallest_count() {
        let mut c = Clock::default();
        for w in 0..MAX_WRITERS as u64 {
            c = c.next(w + 10).next(w + 10);
        }
        c = c.next(10);
        let d = c.next(999);
        assert_eq!(d.pairs().len(), MAX_WRITERS);
        assert!(d.is_valid());
        assert_eq!(d.get(999), 1);
        assert_eq!(d.get(10), 3, "the largest count is kept");
    }

    fn clock() -> impl Strategy<Value = Clock> {
        proptest::collection::vec((0u64..6, 0u64..4), 0..6).prop_map(Clock::from_pairs)
    }

    proptest! {
        #[test]
        fn causal_agrees_with_pointwise_order(a in clock(), b in clock()) {
            let le = (0..6).all(|w| a.get(w) <= b.get(w));
            let ge = (0..6).all(|w| a.get(w) >= b.get(w));
            let want = match (le, ge) {
                (true, true) => Causal::Equal,
                (true, false) => Causal::Before,
                (false, true) => Causal::After,
                (false, false) => Causal::Concurrent,
            };
            prop_assert_eq!(a.causal(&b), want);
            prop_assert!(a.is_valid());
            let j = a.join(&b);
            prop_assert!(matches!(j.causal(&a), Causal::After | Causal::Equal));
            prop_assert!(matches!(j.causal(&b), Causal::After | Causal::Equal));
            prop_assert_eq!(j.next(3).causal(&j), Causal::After);
        }
    }
}
