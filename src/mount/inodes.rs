//! The inode table: kernel inode numbers ↔ vault objects.
//!
//! Invariants:
//! - ino 1 is the root directory and is never dropped.
//! - One object (identified by its record name, `Link.name`) has at most
//!   one ino while it is in the table, so hard-link-free tools that compare
//!   inode numbers see a stable identity.
//! - An inode stays while the kernel holds lookups on it (`nlookup > 0`) or
//!   while it is open; [`InodeTable::forget`] drops it otherwise.
//! - Inode numbers are derived from the record name (random, so collisions
//!   are rare and resolved by probing): a directory listing can report the
//!   number an entry will get on lookup without adding it to the table, and
//!   the same object tends to get the same number across mounts.
//!
//! Each inode also keeps its parent and name as last seen (to answer `..`
//! and to refuse moving a directory into its own subtree) and a short-lived
//! copy of the loaded object (the metadata cache, at most [`super::ATTR_TTL`]
//! old).

use crate::fs::{FsError, Link, Versioned};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The root's inode number (fixed by FUSE).
pub const ROOT_INO: u64 = 1;

/// The tree of the mount's own vault.
pub const OWN_TREE: u32 = 0;
/// The tree of the folders `/shared` and `/shared/OWNER`, made up by the
/// mount from the account's inbox (no vault object behind them).
pub const LISTING_TREE: u32 = u32::MAX;
/// Record names of made-up folders start so (stored names never do: they
/// are random or hashes, and none starts with a zero byte and this text).
pub const LISTING_PREFIX: &[u8] = b"\0peerstore shared listing\0";

/// One object the kernel knows by number.
pub struct Inode {
    /// Which object this is.
    pub link: Link,
    /// The directory it was last seen in (the root is its own parent).
    pub parent: u64,
    /// Its name there.
    pub name: Vec<u8>,
    /// Which tree it belongs to: [`OWN_TREE`], a folder shared with this
    /// account (1, 2, …), or [`LISTING_TREE`].
    pub tree: u32,
    /// Lookups the kernel holds (entry replies minus forgets).
    nlookup: u64,
    /// The object as last loaded or saved, and when.
    cached: Option<(Instant, Arc<Versioned>)>,
}

/// All inodes of one mount.
pub struct InodeTable {
    /// Inodes by number.
    by_ino: HashMap<u64, Inode>,
    /// Numbers by record name.
    by_record: HashMap<Vec<u8>, u64>,
    /// The trees of shared folders, by their top directory's record name.
    share_roots: HashMap<Vec<u8>, u32>,
}

impl InodeTable {
    /// A table holding only the root directory `root`.
    pub fn new(root: Link) -> InodeTable {
        let mut t = InodeTable {
            by_ino: HashMap::new(),
            by_record: HashMap::new(),
            share_roots: HashMap::new(),
        };
        t.by_record.insert(root.name.clone(), ROOT_INO);
        t.by_ino.insert(
            ROOT_INO,
            Inode {
                link: root,
                parent: ROOT_INO,
                name: Vec::new(),
                tree: OWN_TREE,
                nlookup: 1,
                cached: None,
            },
        );
        t
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.by_ino.get(&ino)
    }

    /// The object behind `ino` (`NotFound` for an unknown number).
    pub fn link(&self, ino: u64) -> Result<Link, FsError> {
        self.by_ino
            .get(&ino)
            .map(|i| i.link.clone())
            .ok_or(FsError::NotFound)
    }

    /// The number of a known object.
    pub fn known(&self, record: &[u8]) -> Option<u64> {
        self.by_record.get(record).copied()
    }

    /// The number `record` has, or would get if looked up now.
    pub fn ino_of(&self, record: &[u8]) -> u64 {
        if let Some(ino) = self.known(record) {
            return ino;
        }
        let mut h = derived(record);
        while self.by_ino.contains_key(&h) {
            h = next_candidate(h);
        }
        h
    }

    /// Records an entry reply for `link` found as `parent/name`: adds the
    /// inode if new, updates where it was seen, counts the lookup.
    pub fn remember(&mut self, link: &Link, parent: u64, name: &[u8]) -> u64 {
        let ino = self.ino_of(&link.name);
        let tree = self.tree_in(parent, link);
        let inode = self.by_ino.entry(ino).or_insert_with(|| Inode {
            link: link.clone(),
            parent,
            name: name.to_vec(),
            tree,
            nlookup: 0,
            cached: None,
        });
        if ino != ROOT_INO {
            inode.parent = parent;
            inode.name = name.to_vec();
            inode.nlookup += 1;
        }
        self.by_record.insert(link.name.clone(), ino);
        ino
    }

    /// The tree of `ino` ([`OWN_TREE`] if unknown).
    pub fn tree(&self, ino: u64) -> u32 {
        self.by_ino.get(&ino).map_or(OWN_TREE, |i| i.tree)
    }

    /// The tree an object `link` found in directory `parent` belongs to:
    /// its directory's, unless it is a made-up folder or the top of a
    /// shared folder (listed in a made-up one).
    pub fn tree_in(&self, parent: u64, link: &Link) -> u32 {
        if link.name.starts_with(LISTING_PREFIX) {
            return LISTING_TREE;
        }
        match self.tree(parent) {
            LISTING_TREE => self
                .share_roots
                .get(&link.name)
                .copied()
                .unwrap_or(LISTING_TREE),
            t => t,
        }
    }

    /// Notes that the directory named `record` is the top of shared
    /// folder tree `tree`.
    pub fn set_share_root(&mut self, record: Vec<u8>, tree: u32) {
        self.share_roots.insert(record, tree);
    }

    /// Drops `n` lookups of `ino`; removes the inode when none remain and
    /// it is not `open`. Returns whether it was removed.
    pub fn forget(&mut self, ino: u64, n: u64, open: bool) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let Some(inode) = self.by_ino.get_mut(&ino) else {
            return false;
        };
        inode.nlookup = inode.nlookup.saturating_sub(n);
        if inode.nlookup == 0 && !open {
            self.remove(ino);
            return true;
        }
        false
    }

    /// Removes `ino` if the kernel holds no lookup on it (after its last
    /// open handle was released).
    pub fn drop_if_unused(&mut self, ino: u64) {
        if ino != ROOT_INO && self.by_ino.get(&ino).is_some_and(|i| i.nlookup == 0) {
            self.remove(ino);
        }
    }

    fn remove(&mut self, ino: u64) {
        if let Some(inode) = self.by_ino.remove(&ino)
            && self.by_record.get(&inode.link.name) == Some(&ino)
        {
            self.by_record.remove(&inode.link.name);
        }
    }

    /// The cached object of `ino` if loaded less than `ttl` ago.
    pub fn cached(&self, ino: u64, ttl: Duration) -> Option<Arc<Versioned>> {
        match &self.by_ino.get(&ino)?.cached {
            Some((at, v)) if at.elapsed() < ttl => Some(Arc::clone(v)),
            _ => None,
        }
    }

    /// Caches the current object of `ino`.
    pub fn store(&mut self, ino: u64, v: Arc<Versioned>) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.cached = Some((Instant::now(), v));
        }
    }

    /// Forgets the cached object of `ino` (it changed).
    pub fn invalidate(&mut self, ino: u64) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.cached = None;
        }
    }

    /// Notes that the object `record` now lives at `parent/name`.
    pub fn moved(&mut self, record: &[u8], parent: u64, name: &[u8]) {
        if let Some(ino) = self.known(record)
            && let Some(inode) = self.by_ino.get_mut(&ino)
        {
            inode.parent = parent;
            inode.name = name.to_vec();
        }
    }

    /// The path of `ino` in the mount, as last seen (`?` for unknown parts).
    pub fn path(&self, ino: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = ino;
        // Bounded: a corrupted chain must not loop forever.
        for _ in 0..256 {
            if cur == ROOT_INO {
                break;
            }
            match self.by_ino.get(&cur) {
                Some(i) => {
                    parts.push(String::from_utf8_lossy(&i.name).into_owned());
                    cur = i.parent;
                }
                None => {
                    parts.push("?".into());
                    break;
                }
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The parent of `ino` (the root for unknown numbers).
    pub fn parent(&self, ino: u64) -> u64 {
        self.by_ino.get(&ino).map_or(ROOT_INO, |i| i.parent)
    }

    /// Whether the object `record` is `ino` or one of its ancestors, by the
    /// parent chain of known inodes.
    pub fn has_ancestor(&self, ino: u64, record: &[u8]) -> bool {
        let mut cur = ino;
        // Bounded: a corrupted chain must not loop forever.
        for _ in 0..4096 {
            let Some(inode) = self.by_ino.get(&cur) else {
                return false;
            };
            if inode.link.name == record {
                return true;
            }
            if cur == ROOT_INO {
                return false;
            }
            cur = inode.parent;
        }
        false
    }
}

/// The preferred number of `record`: its first 8 bytes, never 0 or 1.
fn derived(record: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(record) {
        *d = *s;
    }
    let h = u64::from_le_bytes(b) >> 1; // stays positive as an i64 (some tools care)
    if h <= ROOT_INO { h + 2 } else { h }
}

fn next_candidate(h: u64) -> u64 {
    let n = h.wrapping_add(1) & (u64::MAX >> 1);
    if n <= ROOT_INO { 2 } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    #[test]
    fn numbers_are_stable_and_counted() {
        let root = Link::fresh(Kind::Dir);
        let mut t = InodeTable::new(root.clone());
        assert_eq!(t.ino_of(&root.name), ROOT_INO);
        let a = Link::fresh(Kind::File);
        let predicted = t.ino_of(&a.name);
        let ino = t.remember(&a, ROOT_INO, b"a");
        assert_eq!(ino, predicted);
        assert_eq!(t.remember(&a, ROOT_INO, b"a"), ino);
        assert!(!t.forget(ino, 1, false));
        assert!(!t.forget(ino, 1, true)); // open: kept
        assert!(t.get(ino).is_some());
        t.drop_if_unused(ino);
        assert!(t.get(ino).is_none());
        assert!(!t.forget(ROOT_INO, 100, false));
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn collisions_probe_to_a_free_number() {
        let root = Link::fresh(Kind::Dir);
        let mut t = InodeTable::new(root);
        let a = Link::fresh(Kind::File);
        let mut b = Link::fresh(Kind::File);
        b.name[..8].copy_from_slice(&a.name[..8]);
        let ia = t.remember(&a, ROOT_INO, b"a");
        let ib = t.remember(&b, ROOT_INO, b"b");
        assert_ne!(ia, ib);
        assert_eq!(t.ino_of(&b.name), ib);
    }

    #[test]
    fn ancestry_follows_parents() {
        let root = Link::fresh(Kind::Dir);
        let mut t = InodeTable::new(root);
        let d = Link::fresh(Kind::Dir);
        let e = Link::fresh(Kind::Dir);
        let id = t.remember(&d, ROOT_INO, b"d");
        let ie = t.remember(&e, id, b"e");
        assert!(t.has_ancestor(ie, &d.name));
        assert!(t.has_ancestor(id, &d.name));
        assert!(!t.has_ancestor(id, &e.name));
        t.moved(&e.name, ROOT_INO, b"e2");
        assert!(!t.has_ancestor(ie, &d.name));
        assert_eq!(t.get(ie).map(|i| i.name.clone()), Some(b"e2".to_vec()));
    }
}
