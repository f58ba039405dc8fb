//! A file's content as extents: byte ranges of the file, each pointing
//! into a stored block.
//!
//! A write stores only the bytes it wrote (packed with other pending
//! writes into one block) and lays a new extent over the old ones, which
//! are trimmed, split or dropped; nothing is read back and rewritten.
//! Bytes no extent covers are a hole and read as zeros. The map keeps its
//! extents sorted and non-overlapping.

use super::FsError;
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How a block's plaintext was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cipher {
    /// XChaCha20-Poly1305, 24-byte random nonce (format v1 chunks).
    XChaCha20Poly1305,
    /// AES-256-GCM, 12-byte random nonce.
    Aes256Gcm,
}

/// A stored block of a file: where it is and how to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockRef {
    /// The block's key (BLAKE3, or SHA-256 before 2026-12-05, of the sealed bytes).
    pub key: Id,
    /// The number bound into the seal's associated data with the file's
    /// record name (random per block; a v1 chunk's index).
    pub seal: u64,
    /// The cipher that sealed it.
    pub cipher: Cipher,
    /// Plaintext length of the whole block.
    pub len: u32,
}

/// Bytes `[offset, offset + len)` of a file are bytes `[at, at + len)` of
/// the plaintext of `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u32,
    pub block: BlockRef,
    pub at: u32,
}

impl Extent {
    /// One past the last file byte it covers.
    pub fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    /// The part of this extent within `[start, end)`, if any.
    fn clip(&self, start: u64, end: u64) -> Option<Extent> {
        let s = self.offset.max(start);
        let e = self.end().min(end);
        (s < e).then(|| Extent {
            offset: s,
            len: (e - s) as u32,
            block: self.block,
            at: self.at + (s - self.offset) as u32,
        })
    }
}

/// One piece of a read: stored bytes or a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes from the block, starting at plaintext offset `at`.
    Data(Extent),
    /// `n` bytes of zeros.
    Hole(u64),
}

/// A file's extents, sorted and non-overlapping. A persistent map: a copy
/// (the stored version a save starts from, the next version it builds)
/// shares the nodes it did not change, so it costs O(1), not O(extents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentMap {
    map: imbl::OrdMap<u64, Extent>,
}

impl ExtentMap {
    /// An empty map (the file is one hole).
    pub fn new() -> ExtentMap {
        ExtentMap::default()
    }

    /// A map from stored extents; refuses overlapping, empty or
    /// out-of-block extents (a corrupt or forged index).
    pub fn from_extents(extents: impl IntoIterator<Item = Extent>) -> Result<ExtentMap, FsError> {
        let mut map = imbl::OrdMap::new();
        let mut last_end = 0u64;
        for e in extents {
            let bad = e.len == 0
                || e.offset < last_end
                || e.offset.checked_add(e.len as u64).is_none()
                || e.at as u64 + e.len as u64 > e.block.len as u64;
            if bad {
                return Err(FsError::Corrupt(format!(
                    "file index: bad extent at offset {}",
                    e.offset
                )));
            }
            last_end = e.end();
            map.insert(e.offset, e);
        }
        Ok(ExtentMap { map })
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no byte is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The extents in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Extent> {
        self.map.values()
    }

    /// Every block referred to.
    pub fn blocks(&self) -> HashSet<BlockRef> {
        self.map.values().map(|e| e.block).collect()
    }

    /// Points every extent in a block of `moved` at that block's
    /// replacement (same plaintext, so offsets in it stay valid).
    pub fn replace_blocks(&mut self, moved: &std::collections::HashMap<Id, BlockRef>) {
        let changed: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, e)| moved.contains_key(&e.block.key))
            .map(|(k, _)| *k)
            .collect();
        for k in changed {
            if let Some(e) = self.map.get_mut(&k)
                && let Some(b) = moved.get(&e.block.key)
            {
                e.block = *b;
            }
        }
    }

    /// One past the last stored byte (0 if none).
    pub fn end(&self) -> u64 {
        self.map.values().next_back().map_or(0, |e| e.end())
    }

    /// Lays `e` over the map: what it covers is replaced.
    pub fn insert(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        self.cut(e.offset, e.end());
        self.map.insert(e.offset, e);
    }

    /// Drops every byte at or past `size`.
    pub fn truncate(&mut self, size: u64) {
        self.cut(size, u64::MAX);
    }

    /// Removes `[start, end)`, keeping the parts of extents outside it.
    fn cut(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The extent that starts before `start` may reach into the range.
        let first = self
            .map
            .range(..start)
            .next_back()
            .map(|(k, _)| *k)
            .into_iter();
        let inside: Vec<u64> = first
            .chain(self.map.range(start..end).map(|(k, _)| *k))
            .collect();
        for k in inside {
            let Some(old) = self.map.remove(&k) else {
                continue;
            };
            if old.end() <= start {
                self.map.insert(k, old);
                continue;
            }
            if let Some(head) = old.clip(old.offset, start) {
                self.map.insert(head.offset, head);
            }
            if let Some(tail) = old.clip(end, old.end()) {
                self.map.insert(tail.offset, tail);
            }
        }
    }

    /// What `[start, end)` reads as, in order: stored pieces and holes.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut pos = start;
        let before = self.map.range(..start).next_back().map(|(_, e)| e);
        for e in before
            .into_iter()
            .chain(self.map.range(start..end).map(|(_, e)| e))
        {
            let Some(c) = e.clip(start, end) else {
                continue;
            };
            if c.offset > pos {
                out.push(Piece::Hole(c.offset - pos));
            }
            pos = c.end();
            out.push(Piece::Data(c));
        }
        if pos < end {
            out.push(Piece::Hole(end - pos));
        }
        out
    }

    /// The byte ranges `[start, end)` (coalesced, in order) where `other`
    /// reads from another place than this map: another block, another
    /// offset in it, or a hole against stored bytes.
    pub fn differences(&self, other: &ExtentMap) -> Vec<(u64, u64)> {
        let mut cuts: Vec<u64> = self
            .iter()
            .chain(other.iter())
            .flat_map(|e| [e.offset, e.end()])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if self.source(a) != other.source(a) {
                match out.last_mut() {
                    Some(last) if last.1 == a => last.1 = b,
                    _ => out.push((a, b)),
                }
            }
        }
        out
    }

    /// Whether `other` is a copy of this very map (they share their
    /// root): then they are equal, checked in O(1). Equal maps built
    /// apart are not copies.
    pub fn is_copy_of(&self, other: &ExtentMap) -> bool {
        self.map.ptr_eq(&other.map)
    }

    /// The extents to lay over `base` (in order) for it to read as this
    /// map, if at most `max` are needed and laying them gives exactly
    /// this map; `None` otherwise (this map has a hole where `base` has
    /// bytes, or many changes). Cheap when this map was made from a copy
    /// of `base`: only the changed parts of the two are compared.
    pub fn over(&self, base: &ExtentMap, max: usize) -> Option<Vec<Extent>> {
        use imbl::ordmap::DiffItem;
        let mut over = Vec::new();
        for d in base.map.diff(&self.map) {
            let e = match d {
                DiffItem::Add(_, e) | DiffItem::Update { new: (_, e), .. } => e,
                DiffItem::Remove(..) => continue,
            };
            // What is left of a base extent another one cut comes back
            // when that one is laid.
            if base.reads_as(e) {
                continue;
            }
            if over.len() == max {
                return None;
            }
            over.push(*e);
        }
        let mut laid = base.clone();
        for e in &over {
            laid.insert(*e);
        }
        laid.map.diff(&self.map).next().is_none().then_some(over)
    }

    /// Whether `e`'s bytes are read from the same place in this map.
    fn reads_as(&self, e: &Extent) -> bool {
        self.map
            .range(..=e.offset)
            .next_back()
            .is_some_and(|(_, b)| {
                b.block == e.block
                    && b.end() >= e.end()
                    && b.at as u64 + (e.offset - b.offset) == e.at as u64
            })
    }

    /// Where byte `pos` is read from: the block and the plaintext offset
    /// in it, or `None` in a hole.
    fn source(&self, pos: u64) -> Option<(Id, u64)> {
        let (_, e) = self.map.range(..=pos).next_back()?;
        (e.end() > pos).then(|| (e.block.key, e.at as u64 + (pos - e.offset)))
    }

    /// The extents that start in `[start, end)` or reach into it.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Extent> {
        self.pieces(start, end)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Data(e) => Some(e),
                Piece::Hole(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(n: u8, len: u32) -> BlockRef {
        BlockRef {
            key: Id([n; 32]),
            seal: n as u64,
            cipher: Cipher::Aes256Gcm,
            len,
        }
    }

    #[test]
    fn differences_name_only_the_bytes_read_from_elsewhere() {
        let whole = |n, len| Extent {
            offset: 0,
            len,
            block: block(n, len),
            at: 0,
        };
        let mut a = ExtentMap::new();
        a.insert(whole(1, 100));
        assert!(a.differences(&a.clone()).is_empty());
        // A write in the middle splits the old extent: only it differs.
        let mut b = a.clone();
        b.insert(Extent {
            offset: 40,
            ..whole(2, 10)
        });
        assert_eq!(a.differences(&b), vec![(40, 50)]);
        assert_eq!(b.differences(&a), vec![(40, 50)]);
        // Bytes cut off differ from the hole left.
        let mut c = a.clone();
        c.truncate(70);
        assert_eq!(a.differences(&c), vec![(70, 100)]);
        // The same block at another offset in it differs.
        let mut d = ExtentMap::new();
        d.insert(Extent {
            offset: 0,
            len: 50,
            block: block(1, 100),
            at: 50,
        });
        assert_eq!(a.differences(&d), vec![(0, 100)]);
    }

    /// Reads `[0, size)` through the map, taking block bytes from `blocks`.
    fn read(map: &ExtentMap, blocks: &[Vec<u8>], size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in map.pieces(0, size) {
            match p {
                Piece::Hole(n) => out.resize(out.len() + n as usize, 0),
                Piece::Data(e) => {
                    let b = &blocks[e.block.key.0[0] as usize];
                    out.extend_from_slice(&b[e.at as usize..(e.at + e.len) as usize]);
                }
            }
        }
        out
    }

    #[test]
    fn overlay_splits_and_trims() {
        let mut m = ExtentMap::new();
        m.insert(Extent {
            offset: 0,
            len: 100,
            block: block(0, 100),
            at: 0,
        });
        m.insert(Extent {
            offset: 10,
            len: 5,
            block: block(1, 5),
            at: 0,
        });
        let v: Vec<_> = m.iter().map(|e| (e.offset, e.len, e.at)).collect();
        assert_eq!(v, vec![(0, 10, 0), (10, 5, 0), (15, 85, 15)]);
        m.truncate(12);
        let v: Vec<_> = m.iter().map(|e| (e.offset, e.len)).collect();
        assert_eq!(v, vec![(0, 10), (10, 2)]);
        assert_eq!(m.end(), 12);
        assert_eq!(m.pieces(11, 20), {
            let mut e = m.overlapping(11, 12)[0];
            e.len = 1;
            vec![Piece::Data(e), Piece::Hole(8)]
        });
    }

    #[test]
    fn bad_stored_extents_are_refused() {
        let ok = Extent {
            offset: 0,
            len: 10,
            block: block(0, 10),
            at: 0,
        };
        assert!(ExtentMap::from_extents([ok]).is_ok());
        assert!(ExtentMap::from_extents([ok, ok]).is_err());
        assert!(ExtentMap::from_extents([Extent { at: 5, ..ok }]).is_err());
        assert!(ExtentMap::from_extents([Extent { len: 0, ..ok }]).is_err());
    }

    proptest! {
        /// The extents laid over a base since a copy of it was taken are
        /// found, and laying them over the base gives the map back; a
        /// truncation into the base's bytes (a hole extents cannot lay)
        /// gives none.
        #[test]
        fn extents_laid_since_a_base_are_found_and_lay_back(
            base_n in 1usize..400,
            ops in proptest::collection::vec((0u64..40_000, 1u32..300, 0u8..8), 0..60),
        ) {
            let base = ExtentMap::from_extents((0..base_n as u64).map(|i| Extent {
                offset: i * 100,
                len: 90,
                block: block((i % 200) as u8, 200),
                at: (i % 3) as u32,
            })).unwrap();
            let mut map = base.clone();
            let mut holes = false;
            for (i, (off, len, kind)) in ops.into_iter().enumerate() {
                if kind == 0 {
                    holes |= off < base.end() && off < map.end();
                    map.truncate(off);
                } else {
                    map.insert(Extent {
                        offset: off,
                        len,
                        block: BlockRef { key: Id([255; 32]), seal: i as u64, ..block(0, 400) },
                        at: 5,
                    });
                }
            }
            match map.over(&base, usize::MAX) {
                Some(over) => {
                    let mut laid = base.clone();
                    for e in &over {
                        laid.insert(*e);
                    }
                    prop_assert_eq!(&laid, &map);
                    prop_assert!(over.windows(2).all(|w| w[0].end() <= w[1].offset));
                }
                None => prop_assert!(holes, "no overlay without a hole"),
            }
            if !holes {
                prop_assert!(map.over(&base, 0).is_none() || map == base);
            }
        }
    }

    proptest! {
        /// Writes and truncates through the map read back exactly as on a
        /// plain byte array.
        #[test]
        fn map_matches_a_byte_array(ops in proptest::collection::vec(
            (0u64..3000, 1usize..700, any::<bool>()), 1..40)) {
            let mut model: Vec<u8> = Vec::new();
            let mut map = ExtentMap::new();
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            let mut size = 0u64;
            for (i, (off, len, trunc)) in ops.into_iter().enumerate() {
                if trunc && i % 3 == 0 {
                    let n = off.min(size);
                    model.truncate(n as usize);
                    map.truncate(n);
                    size = n;
                    continue;
                }
                let id = blocks.len() as u8;
                // The data sits 7 bytes into its block, as in a packed block.
                let data: Vec<u8> = (0..len).map(|j| (j as u8) ^ id.wrapping_mul(31) | 1).collect();
                let mut b = vec![0xEE; 7];
                b.extend_from_slice(&data);
                blocks.push(b);
                map.insert(Extent { offset: off, len: len as u32, block: block(id, len as u32 + 7), at: 7 });
                let end = off as usize + len;
                if model.len() < end { model.resize(end, 0); }
                model[off as usize..end].copy_from_slice(&data);
                size = size.max(end as u64);
            }
            model.resize(size as usize, 0);
            prop_assert_eq!(read(&map, &blocks, size), model);
            let all: Vec<Extent> = map.iter().copied().collect();
            prop_assert!(ExtentMap::from_extents(all).is_ok());
        }
    }
}
