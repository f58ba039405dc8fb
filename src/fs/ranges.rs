//! Byte ranges of a file held in memory: an open file's unsaved writes,
//! and the small writes a file keeps in its record (its journal).
//!
//! Ranges are coalesced: no two overlap or touch. Adding bytes over older
//! ones replaces them (the newest write wins).

use std::collections::BTreeMap;

/// Coalesced byte ranges: offset → bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    map: BTreeMap<u64, Vec<u8>>,
    /// Total bytes held.
    bytes: usize,
}

impl Ranges {
    /// Ranges from stored pieces: sorted, none empty, none overlapping or
    /// touching another (so a stored journal has one form only).
    pub fn from_pieces(pieces: Vec<(u64, Vec<u8>)>) -> Option<Ranges> {
        let mut r = Ranges::default();
        let mut end = None;
        for (o, d) in pieces {
            let e = o.checked_add(d.len() as u64)?;
            if d.is_empty() || end.is_some_and(|prev| o <= prev) {
                return None;
            }
            end = Some(e);
            r.bytes += d.len();
            r.map.insert(o, d);
        }
        Some(r)
    }

    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The ranges in file order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.map.iter().map(|(o, d)| (*o, d.as_slice()))
    }

    /// The ranges as stored pieces, in file order.
    pub fn to_pieces(&self) -> Vec<(u64, Vec<u8>)> {
        self.map.iter().map(|(o, d)| (*o, d.clone())).collect()
    }

    /// The ranges as pieces, in file order, consumed.
    pub fn into_pieces(self) -> Vec<(u64, Vec<u8>)> {
        self.map.into_iter().collect()
    }

    /// One past the last byte held (0 if empty).
    pub fn end(&self) -> u64 {
        self.map
            .last_key_value()
            .map_or(0, |(o, d)| o + d.len() as u64)
    }

    /// Adds `data` at `offset` over what is held, merging with the ranges
    /// it overlaps or touches.
    pub fn add(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Ranges that overlap or touch [offset, end].
        let first = self
            .map
            .range(..=offset)
            .next_back()
            .filter(|(o, d)| *o + d.len() as u64 >= offset)
            .map(|(o, _)| *o);
        let touching: Vec<u64> = first
            .into_iter()
            .chain(
                self.map
                    .range(offset..=end)
                    .map(|(o, _)| *o)
                    .filter(|o| Some(*o) != first),
            )
            .collect();
        // Appending to, or writing inside, one range: edit it in place.
        if let [only] = touching[..]
            && only <= offset
            && let Some(buf) = self.map.get_mut(&only)
        {
            // `at` is within or just past the range: it touches `offset`.
            let at = (offset - only) as usize;
            let before = buf.len();
            let inside = before.saturating_sub(at).min(data.len());
            buf[at..at + inside].copy_from_slice(&data[..inside]);
            // The rest extends the range (no zero-filling first).
            buf.extend_from_slice(&data[inside..]);
            self.bytes += buf.len() - before;
            return;
        }
        let start = touching.first().map_or(offset, |o| (*o).min(offset));
        let mut merged_end = end;
        let mut parts = Vec::new();
        for o in touching {
            if let Some(d) = self.map.remove(&o) {
                self.bytes -= d.len();
                merged_end = merged_end.max(o + d.len() as u64);
                parts.push((o, d));
            }
        }
        let mut buf = vec![0u8; (merged_end - start) as usize];
        for (o, d) in parts {
            let at = (o - start) as usize;
            buf[at..at + d.len()].copy_from_slice(&d);
        }
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        self.bytes += buf.len();
        self.map.insert(start, buf);
    }

    /// Drops the bytes in `[start, end)`.
    pub fn cut(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<u64> = self
            .map
            .range(..end)
            .rev()
            .take_while(|(o, d)| *o + d.len() as u64 > start)
            .map(|(o, _)| *o)
            .collect();
        for o in hit {
            let Some(mut d) = self.map.remove(&o) else {
                continue;
            };
            self.bytes -= d.len();
            let d_end = o + d.len() as u64;
            if d_end > end {
                let tail = d.split_off((end - o) as usize);
                self.bytes += tail.len();
                self.map.insert(end, tail);
            }
            if o < start {
                d.truncate((start - o) as usize);
                self.bytes += d.len();
                self.map.insert(o, d);
            }
        }
    }

    /// Drops the bytes at and past `size`.
    pub fn truncate(&mut self, size: u64) {
        self.cut(size, u64::MAX);
    }

    /// Copies the bytes held in `[offset, offset + out.len())` into `out`.
    pub fn overlay(&self, offset: u64, out: &mut [u8]) {
        let end = offset + out.len() as u64;
        for (o, d) in self.map.range(..end) {
            let (s, e) = ((*o).max(offset), (o + d.len() as u64).min(end));
            if s < e {
                out[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&d[(s - o) as usize..(e - o) as usize]);
            }
        }
    }

    /// These ranges less every byte that `older` holds with the same value
    /// at the same offset: what must stay on top once `older`'s bytes are
    /// laid underneath. `None` if `older` holds a byte these do not (it
    /// was cut since), so laying `older` underneath would bring it back.
    pub fn beyond(&self, older: &Ranges) -> Option<Ranges> {
        let mut out = Ranges::default();
        let mut covered = 0usize;
        for (o, d) in self.iter() {
            let end = o + d.len() as u64;
            let mut same = vec![false; d.len()];
            let first = older
                .map
                .range(..o)
                .next_back()
                .filter(|(p, od)| **p + od.len() as u64 > o)
                .map(|(p, _)| *p);
            let overlapping = first
                .into_iter()
                .chain(older.map.range(o..end).map(|(p, _)| *p));
            for p in overlapping {
                let od = &older.map[&p];
                let (s, e) = (p.max(o), (p + od.len() as u64).min(end));
                for x in s..e {
                    covered += 1;
                    let i = (x - o) as usize;
                    same[i] = d[i] == od[(x - p) as usize];
                }
            }
            let mut i = 0;
            while i < d.len() {
                let j = i + same[i..].iter().take_while(|s| **s == same[i]).count();
                if !same[i] {
                    out.add(o + i as u64, &d[i..j]);
                }
                i = j;
            }
        }
        (covered == older.bytes).then_some(out)
    }

    /// Takes up to `room` bytes from the front, in file order, splitting
    /// the last range taken if needed.
    pub fn take_front(&mut self, mut room: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while room > 0 {
            let Some((offset, mut data)) = self.map.pop_first() else {
                break;
            };
            self.bytes -= data.len();
            if data.len() > room {
                let rest = data.split_off(room);
                self.bytes += rest.len();
                self.map.insert(offset + room as u64, rest);
            }
            room -= data.len();
            out.push((offset, data));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bytes `r` holds as (present, value) per offset below `n`.
    fn flat(r: &Ranges, n: usize) -> Vec<Option<u8>> {
        let mut v = vec![None; n];
        for (o, d) in r.iter() {
            for (i, b) in d.iter().enumerate() {
                v[o as usize + i] = Some(*b);
            }
        }
        v
    }

    #[test]
    fn stored_pieces_must_be_sorted_and_apart() {
        assert!(Ranges::from_pieces(vec![(0, vec![1]), (2, vec![2])]).is_some());
        assert!(Ranges::from_pieces(vec![(0, vec![1]), (1, vec![2])]).is_none());
        assert!(Ranges::from_pieces(vec![(5, vec![1]), (0, vec![2])]).is_none());
        assert!(Ranges::from_pieces(vec![(0, vec![])]).is_none());
        assert!(Ranges::from_pieces(vec![(u64::MAX, vec![1, 2])]).is_none());
    }

    proptest! {
        /// Adds, cuts and truncations agree with a plain array, and the
        /// ranges stay coalesced with a correct byte count.
        #[test]
        fn ranges_match_a_byte_array(ops in proptest::collection::vec(
            (0u8..3, 0u64..200, 1usize..40, any::<u8>()), 1..60)
        ) {
            let mut r = Ranges::default();
            let mut model: Vec<Option<u8>> = vec![None; 256];
            for (kind, at, len, val) in ops {
                match kind {
                    0 => {
                        r.add(at, &vec![val; len]);
                        for m in &mut model[at as usize..at as usize + len] {
                            *m = Some(val);
                        }
                    }
                    1 => {
                        r.cut(at, at + len as u64);
                        for m in &mut model[at as usize..at as usize + len] {
                            *m = None;
                        }
                    }
                    _ => {
                        r.truncate(at);
                        for m in &mut model[at as usize..] {
                            *m = None;
                        }
                    }
                }
                prop_assert_eq!(flat(&r, 256), model.clone());
                prop_assert_eq!(r.bytes(), model.iter().filter(|m| m.is_some()).count());
                let pieces = r.to_pieces();
                prop_assert_eq!(Ranges::from_pieces(pieces), Some(r.clone()));
            }
        }
    }

    proptest! {
        /// `beyond` keeps exactly the bytes that differ from `older` (or
        /// that `older` lacks), so `older` laid underneath with it on top
        /// reads as these ranges; and it refuses when `older` holds a
        /// byte these do not.
        #[test]
        fn beyond_keeps_what_laying_older_underneath_would_change(
            older_ops in proptest::collection::vec((0u64..200, 1usize..40, 0u8..4), 1..10),
            newer_ops in proptest::collection::vec((0u8..4, 0u64..200, 1usize..40, 0u8..4), 0..10),
        ) {
            let mut older = Ranges::default();
            for (at, len, val) in older_ops {
                older.add(at, &vec![val; len]);
            }
            let mut r = older.clone();
            for (kind, at, len, val) in newer_ops {
                match kind {
                    0 => r.cut(at, at + len as u64),
                    _ => r.add(at, &vec![val; len]),
                }
            }
            let (o, n) = (flat(&older, 256), flat(&r, 256));
            match r.beyond(&older) {
                None => prop_assert!(o.iter().zip(&n).any(|(a, b)| a.is_some() && b.is_none())),
                Some(rest) => {
                    let rest = flat(&rest, 256);
                    for i in 0..256 {
                        prop_assert!(o[i].is_none() || n[i].is_some());
                        let laid = rest[i].or(o[i]);
                        prop_assert_eq!(laid, n[i]);
                        if rest[i].is_some() {
                            prop_assert_ne!(o[i], n[i]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn overlay_and_take_front() {
        let mut r = Ranges::default();
        r.add(2, b"abc");
        r.add(10, b"xyz");
        let mut out = [b'.'; 12];
        r.overlay(1, &mut out);
        assert_eq!(&out, b".abc.....xyz");
        let first = r.take_front(4);
        assert_eq!(first, vec![(2, b"abc".to_vec()), (10, b"x".to_vec())]);
        assert_eq!(r.to_pieces(), vec![(11, b"yz".to_vec())]);
        assert_eq!(r.bytes(), 2);
    }
}
