//! The index trees of files as last saved or loaded here, so that a save
//! finds its unchanged nodes by comparing them with the last tree's nodes
//! at the same offsets, not by encoding and hashing every node of the file
//! (which made each `fsync` of a file with many extents cost time in
//! proportion to the whole index).
//!
//! A remembered node only proposes a block: the save still reuses it only
//! if the block belongs to the version being replaced (see
//! [`super::index::save`]), so a stale or wrong memory costs a store, never
//! a reference to a released block.

use super::extents::BlockRef;
use super::format::IndexNode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Extents and references the remembered trees hold together, at most
/// (some 64 bytes each): a tree bigger than this is not remembered.
const ENTRIES_MAX: usize = 1 << 16;

/// One level of a tree: its nodes in file order, with their blocks.
pub type Level = Vec<(IndexNode, BlockRef)>;

/// A file's index tree: its levels, leaves first.
pub type Tree = Vec<Level>;

/// The last tree of each file, by record name, within [`ENTRIES_MAX`].
#[derive(Default)]
pub struct Trees(Mutex<Remembered>);

#[derive(Default)]
struct Remembered {
    by_name: HashMap<Vec<u8>, (Arc<Tree>, usize)>,
    entries: usize,
}

/// Extents and references of `tree`.
fn entries(tree: &Tree) -> usize {
    tree.iter()
        .flatten()
        .map(|(n, _)| match n {
            IndexNode::Leaf(x) => x.len(),
            IndexNode::Inner(x) => x.len(),
        })
        .sum()
}

impl Trees {
    /// The tree last saved or loaded for the file named `name`.
    pub fn get(&self, name: &[u8]) -> Option<Arc<Tree>> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.by_name.get(name).map(|(t, _)| t.clone())
    }

    /// Remembers `tree` as the file's last (forgetting every other file's
    /// if the bound would be passed).
    pub fn put(&self, name: &[u8], tree: Tree) {
        let n = entries(&tree);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = m.by_name.remove(name) {
            m.entries -= old;
        }
        if n > ENTRIES_MAX {
            return;
        }
        if m.entries + n > ENTRIES_MAX {
            m.by_name.clear();
            m.entries = 0;
        }
        m.entries += n;
        m.by_name.insert(name.to_vec(), (Arc::new(tree), n));
    }
}

/// The first file offset a node covers (`u64::MAX` for an empty node,
/// which no save makes).
fn start(node: &IndexNode) -> u64 {
    match node {
        IndexNode::Leaf(x) => x.first().map(|e| e.offset),
        IndexNode::Inner(x) => x.first().map(|r| r.start),
    }
    .unwrap_or(u64::MAX)
}

/// Walks a remembered level in file order, proposing the block of a node
/// equal to the one asked for; asked for in file order too.
pub struct Matcher<'a> {
    level: &'a [(IndexNode, BlockRef)],
    at: usize,
}

impl<'a> Matcher<'a> {
    /// A walk over `level` (none: nothing matches).
    pub fn new(level: Option<&'a Level>) -> Matcher<'a> {
        Matcher {
            level: level.map(|l| l.as_slice()).unwrap_or_default(),
            at: 0,
        }
    }

    /// The block of the remembered node equal to `node`, if there is one
    /// at its offset.
    pub fn find(&mut self, node: &IndexNode) -> Option<BlockRef> {
        let s = start(node);
        while self.at < self.level.len() && start(&self.level[self.at].0) < s {
            self.at += 1;
        }
        let (n, b) = self.level.get(self.at)?;
        (n == node).then_some(*b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::extents::{Cipher, Extent};
    use crate::id::Id;

    fn block(i: u64) -> BlockRef {
        BlockRef {
            key: Id::hash(&i.to_be_bytes()),
            seal: i,
            cipher: Cipher::Aes256Gcm,
            len: 5,
        }
    }

    fn leaf(offsets: &[u64]) -> IndexNode {
        IndexNode::Leaf(
            offsets
                .iter()
                .map(|&o| Extent {
                    offset: o,
                    len: 5,
                    block: block(o),
                    at: 0,
                })
                .collect(),
        )
    }

    #[test]
    fn a_node_matches_only_an_equal_node_at_its_offset() {
        let level = vec![
            (leaf(&[0, 10]), block(100)),
            (leaf(&[20, 30]), block(101)),
            (leaf(&[40]), block(102)),
        ];
        let mut m = Matcher::new(Some(&level));
        assert_eq!(m.find(&leaf(&[0, 10])), Some(block(100)));
        // Same start, other content: no match.
        assert_eq!(m.find(&leaf(&[20, 31])), None);
        assert_eq!(m.find(&leaf(&[40])), Some(block(102)));
        assert_eq!(m.find(&leaf(&[50])), None);
        assert_eq!(Matcher::new(None).find(&leaf(&[0, 10])), None);
    }

    #[test]
    fn trees_are_bounded_and_replaced() {
        let t = Trees::default();
        t.put(b"a", vec![vec![(leaf(&[0, 10]), block(1))]]);
        t.put(b"a", vec![vec![(leaf(&[0]), block(2))]]);
        assert_eq!(t.get(b"a").unwrap()[0][0].1, block(2));
        assert_eq!(t.0.lock().unwrap().entries, 1);
        // Too big to remember: the old one is gone too.
        let big: Vec<u64> = (0..ENTRIES_MAX as u64 + 1).collect();
        t.put(b"a", vec![vec![(leaf(&big), block(3))]]);
        assert!(t.get(b"a").is_none());
        assert_eq!(t.0.lock().unwrap().entries, 0);
        // Passing the bound forgets the others.
        let half: Vec<u64> = (0..ENTRIES_MAX as u64 / 2 + 1).collect();
        t.put(b"b", vec![vec![(leaf(&half), block(4))]]);
        t.put(b"c", vec![vec![(leaf(&half), block(5))]]);
        assert!(t.get(b"b").is_none());
        assert!(t.get(b"c").is_some());
    }
}
