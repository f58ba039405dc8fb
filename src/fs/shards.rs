//! Sharded directories: a directory's entries in a tree of records, so a
//! change rewrites one bounded shard, not the whole directory.
//!
//! A directory's record holds its attributes and the top node of the tree:
//! a leaf of entries, or "split at epoch e". A split node's children are
//! [`FANOUT`] shard records named `SHA-256("peerstore shard" ‖ directory
//! record name ‖ path ‖ e)[..16]`, where the path is the digits leading to
//! the child; an absent child is empty. An entry's digit at depth d is
//! byte d of `SHA-256("peerstore shard digit" ‖ directory key ‖ name)`,
//! mod 64, so names spread evenly and storage nodes learn nothing.
//!
//! The program holds a directory whole (every entry in one map) and saves
//! it by difference: a change is applied to the map, and only the leaves
//! whose entries changed are written, each as a compare-and-swap on its
//! own record (the top record too when the attributes changed). A leaf
//! that grew past [`SPLIT_BYTES`] is split after it is stored: its
//! children are a pure function of the leaf's stored version, written
//! under an epoch derived from that version, each only if absent, then
//! the leaf becomes "split" by compare-and-swap. Two writers splitting
//! the same version therefore write the same children, and a split cut
//! short by a crash is finished by the next writer or abandoned (its
//! children are never referred to).

use super::crypto::{open, seal};
use super::format::{DirNode, shard_aad};
use super::object::{Entries, Entry, Link};
use super::vault::{Vault, Versioned};
use super::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::record::MAX_RECORD_VALUE;
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The names in one leaf (a persistent set: layouts are copied cheaply).
pub type Names = imbl::OrdSet<Vec<u8>>;

/// Children of a split node.
pub const FANOUT: usize = 64;
/// A leaf whose encoding is larger than this is split once stored
/// (~400 entries).
pub const SPLIT_BYTES: usize = 48 * 1024;
/// Depth of the tree, at most (64^8 leaves).
const MAX_DEPTH: usize = 8;

/// A stored node of a directory's shard tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardNode {
    /// Its record name (the top node: the directory's own).
    pub name: Vec<u8>,
    /// Its record's sequence number (0: not stored, empty).
    pub seq: u64,
    /// `Some(epoch)` once split.
    pub split: Option<u64>,
    /// A leaf's entry names.
    pub names: Names,
}

/// Where a directory's entries are stored: its nodes by path (the digits
/// from the top; the top node has the empty path). Empty for objects
/// other than directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The nodes by path: a persistent map, so that the view of a
    /// directory (copied for every `unlink` in it) shares them rather than
    /// copying a 64-leaf tree each time.
    pub nodes: imbl::OrdMap<Vec<u8>, ShardNode>,
    /// Nodes (by path) loaded by merging concurrent versions: the next
    /// save writes them whether or not their entries changed, replacing
    /// the versions merged.
    pub merged: BTreeSet<Vec<u8>>,
}

impl Layout {
    /// The layout of a directory stored as one leaf holding `entries`.
    pub fn single(name: &[u8], seq: u64, entries: &Entries) -> Layout {
        let mut nodes = imbl::OrdMap::new();
        nodes.insert(
            Vec::new(),
            ShardNode {
                name: name.to_vec(),
                seq,
                split: None,
                names: entries.keys().cloned().collect(),
            },
        );
        Layout {
            nodes,
            merged: BTreeSet::new(),
        }
    }

    /// Whether the directory is split into shards.
    pub fn is_sharded(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The path of the leaf that holds `name` in directory `dir`.
    fn leaf_of(&self, dir: &Link, name: &[u8]) -> Vec<u8> {
        let h = digits(dir, name);
        let mut path = Vec::new();
        while let Some(ShardNode { split: Some(_), .. }) = self.nodes.get(&path) {
            if path.len() >= MAX_DEPTH {
                break;
            }
            path.push(h[path.len()]);
        }
        path
    }

    /// The node at `path`: stored, or an empty child of a split node
    /// (added to the layout).
    fn node_mut(&mut self, dir: &Link, path: &[u8]) -> &mut ShardNode {
        let parent = &path[..path.len().saturating_sub(1)];
        let epoch = self
            .nodes
            .get(parent)
            .and_then(|p| p.split)
            .unwrap_or_default();
        self.nodes
            .entry(path.to_vec())
            .or_insert_with(|| ShardNode {
                name: child_name(&dir.name, path, epoch),
                seq: 0,
                split: None,
                names: Names::new(),
            })
    }
}

/// The digits of `name` in directory `dir`, one per depth.
fn digits(dir: &Link, name: &[u8]) -> [u8; 32] {
    let mut h = Id::hash_parts(&[b"peerstore shard digit", &dir.key.0, name]).0;
    for d in &mut h {
        *d %= FANOUT as u8;
    }
    h
}

/// The record name of the child at `path` of a node split at `epoch`.
fn child_name(dir_name: &[u8], path: &[u8], epoch: u64) -> Vec<u8> {
    Id::hash_parts(&[b"peerstore shard", dir_name, path, &epoch.to_be_bytes()]).0[..16].to_vec()
}

/// The leaf holding `names`, with their entries in `entries`.
fn leaf_node(names: &Names, entries: &Entries) -> DirNode {
    DirNode::Leaf(
        names
            .iter()
            .filter_map(|n| entries.get(n).map(|e| (n.clone(), e.clone())))
            .collect(),
    )
}

fn encode(node: &DirNode) -> Result<Vec<u8>, FsError> {
    postcard::to_allocvec(node).map_err(|e| FsError::Invalid(e.to_string()))
}

impl<S: BlockStore> Vault<S> {
    /// Loads the shards below a split top node; returns every entry and
    /// the layout.
    pub(crate) async fn load_shards(
        &self,
        dir: &Link,
        top_seq: u64,
        epoch: u64,
    ) -> Result<(Entries, Layout), FsError> {
        let mut layout = Layout::single(&dir.name, top_seq, &Entries::new());
        if let Some(n) = layout.nodes.get_mut(&Vec::new()) {
            n.split = Some(epoch);
        }
        let mut entries = Entries::new();
        let mut frontier: Vec<(Vec<u8>, u64)> = vec![(Vec::new(), epoch)];
        for _ in 0..MAX_DEPTH {
            if frontier.is_empty() {
                return Ok((entries, layout));
            }
            let children: Vec<Vec<u8>> = frontier
                .iter()
                .flat_map(|(p, _)| {
                    (0..FANOUT as u8).map(move |i| {
                        let mut c = p.clone();
                        c.push(i);
                        c
                    })
                })
                .collect();
            let epochs: HashMap<Vec<u8>, u64> = frontier.into_iter().collect();
            let loads = children.iter().map(|path| {
                let e = epochs[&path[..path.len() - 1]];
                let name = child_name(&dir.name, path, e);
                async move {
                    let got = self.load_shard(dir, &name).await;
                    (path.clone(), name, got)
                }
            });
            frontier = Vec::new();
            for (path, name, got) in join_all(loads).await {
                let (seq, node, merged) = got?;
                if merged {
                    layout.merged.insert(path.clone());
                }
                let mut names = Names::new();
                let split = match node {
                    DirNode::Leaf(x) => {
                        for (n, e) in x {
                            names.insert(n.clone());
                            entries.insert(n, e);
                        }
                        None
                    }
                    DirNode::Split { epoch } => {
                        frontier.push((path.clone(), epoch));
                        Some(epoch)
                    }
                };
                layout.nodes.insert(
                    path,
                    ShardNode {
                        name,
                        seq,
                        split,
                        names,
                    },
                );
            }
        }
        Err(FsError::Corrupt("directory shard tree too deep".into()))
    }

    /// One shard record: its sequence number and node (absent: 0, empty),
    /// and whether concurrent versions of it were merged
    /// ([`Vault::merge_entries`]).
    async fn load_shard(&self, dir: &Link, name: &[u8]) -> Result<(u64, DirNode, bool), FsError> {
        let key = self.identity().record_key(name);
        let versions = self.read_versions(key).await?;
        let Some(head) = versions.first() else {
            return Ok((0, DirNode::Leaf(Vec::new()), false));
        };
        let mut nodes = Vec::with_capacity(versions.len());
        for rec in &versions {
            let Some(value) = &rec.value else {
                nodes.push(DirNode::Leaf(Vec::new()));
                continue;
            };
            let plain = open(&dir.key, value, &shard_aad(name))
                .map_err(|e| FsError::Corrupt(format!("directory shard {}: {e}", key.short())))?;
            nodes.push(
                postcard::from_bytes(&plain).map_err(|e| {
                    FsError::Corrupt(format!("directory shard {}: {e}", key.short()))
                })?,
            );
        }
        if nodes.len() == 1 {
            return Ok((head.seq, nodes.swap_remove(0), false));
        }
        let leaves: Option<Vec<Entries>> = nodes
            .iter()
            .map(|n| match n {
                DirNode::Leaf(x) => Some(x.iter().cloned().collect()),
                DirNode::Split { .. } => None,
            })
            .collect();
        if let Some(sets) = leaves {
            let merged = self.merge_entries(dir, sets).await;
            return Ok((head.seq, DirNode::Leaf(merged.into_iter().collect()), true));
        }
        let alike = nodes.windows(2).all(|w| w[0] == w[1]);
        if !alike {
            log::warn!(
                "directory shard {} has {} concurrent versions split differently; \
                 its next change waits until they are merged",
                key.short(),
                nodes.len()
            );
            self.clocks.note_read(key, &versions[..1]);
        }
        Ok((head.seq, nodes.swap_remove(0), false))
    }

    /// Writes shard record `name` as version `expected + 1`.
    async fn put_shard(
        &self,
        dir: &Link,
        name: &[u8],
        node: &DirNode,
        expected: u64,
        durability: Durability,
    ) -> Result<(), FsError> {
        let plain = encode(node)?;
        let sealed = seal(&dir.key, &plain, &shard_aad(name));
        if sealed.len() > MAX_RECORD_VALUE {
            return Err(FsError::TooBig);
        }
        // A split's children are a pure function of the leaf split (two
        // writers splitting one version write the same bytes): they carry
        // no clock. Every later version does.
        let rec = if expected == 0 {
            // A shard of a shared folder's directory carries its scope.
            let scope = self.clocks.scope(self.identity().record_key(&dir.name));
            self.identity()
                .sign_in(name, 1, crate::clock::Clock::default(), Some(sealed), scope)
        } else {
            self.sign_next(name, expected + 1, Some(sealed)).await?
        };
        self.store.put_record(rec, Some(expected), durability).await
    }

    /// Saves directory `new`, a changed copy of `base`, by writing the
    /// leaves whose entries changed and, if its attributes changed or it
    /// is a leaf that changed, the top record. Any compare-and-swap lost
    /// is `Conflict` (the caller reloads and applies its change again:
    /// leaves written before the loss hold it already, so changes must be
    /// idempotent). Returns the stored version.
    pub(crate) async fn save_dir(
        &self,
        dir: &Link,
        new: &super::Object,
        base: &Versioned,
        durability: Durability,
    ) -> Result<Versioned, FsError> {
        let empty = Entries::new();
        let new_entries = new.entries().ok_or(FsError::NotDir)?;
        let old_entries = base.obj.entries().unwrap_or(&empty);
        let mut layout = if base.layout.nodes.is_empty() {
            Layout::single(&dir.name, base.seq, old_entries)
        } else {
            base.layout.clone()
        };
        // The leaves whose entries changed (shared structure is skipped).
        let mut touched = BTreeSet::new();
        for d in old_entries.diff(new_entries) {
            let (name, present) = match d {
                imbl::ordmap::DiffItem::Add(n, _) => (n, true),
                imbl::ordmap::DiffItem::Update { new: (n, _), .. } => (n, true),
                imbl::ordmap::DiffItem::Remove(n, _) => (n, false),
            };
            let path = layout.leaf_of(dir, name);
            let node = layout.node_mut(dir, &path);
            if present {
                node.names.insert(name.clone());
            } else {
                node.names.remove(name);
            }
            touched.insert(path);
        }
        // Merged nodes are written even if nothing else changed them.
        touched.extend(std::mem::take(&mut layout.merged));
        let mut attrs = new.attrs.clone();
        let mut old_attrs = base.obj.attrs.clone();
        (attrs.nlink, old_attrs.nlink) = (0, 0);
        let top_changed = attrs != old_attrs || touched.contains(&Vec::new());

        let top = layout.node_mut(dir, &[]).clone();
        let top_node = match top.split {
            Some(epoch) => DirNode::Split { epoch },
            None => leaf_node(&top.names, new_entries),
        };
        // The leaves below the top and the top itself, all in parallel
        // (each is its own compare-and-swap; a loss of any is `Conflict`,
        // and the change is applied again over what was stored).
        let writes = touched.iter().filter(|p| !p.is_empty()).map(|p| {
            let node = layout.nodes[p].clone();
            let leaf = leaf_node(&node.names, new_entries);
            async move {
                self.put_shard(dir, &node.name, &leaf, node.seq, durability)
                    .await?;
                Ok::<_, FsError>((p.clone(), leaf))
            }
        });
        let top_write = async {
            if top_changed {
                self.put_top(dir, new, top_node.clone(), top.seq, durability)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let (leaves, top_seq) = tokio::join!(join_all(writes), top_write);
        let mut written = Vec::new();
        for r in leaves {
            let (p, leaf) = r?;
            layout.node_mut(dir, &p).seq += 1;
            written.push((p, leaf));
        }
        let mut seq = top.seq;
        if let Some(s) = top_seq? {
            seq = s;
            layout.node_mut(dir, &[]).seq = seq;
            if top.split.is_none() {
                written.push((Vec::new(), top_node));
            }
        }
        // Leaves grown too large split now (best effort: a lost race
        // leaves them whole, and the next change splits them).
        for (p, leaf) in written {
            if p.len() < MAX_DEPTH && encode(&leaf)?.len() > SPLIT_BYTES {
                match self.split(dir, new, &mut layout, &p, leaf).await {
                    Ok(()) => {}
                    Err(FsError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
                seq = layout.node_mut(dir, &[]).seq;
            }
        }
        Ok(Versioned {
            obj: new.clone(),
            seq,
            layout,
            plain: None,
        })
    }

    /// Writes the directory's own record: attributes and top node.
    async fn put_top(
        &self,
        dir: &Link,
        obj: &super::Object,
        node: DirNode,
        expected: u64,
        durability: Durability,
    ) -> Result<u64, FsError> {
        self.save_top(
            dir,
            obj,
            super::format::Top::Dir(node),
            expected,
            durability,
        )
        .await
    }

    /// Splits the stored leaf at `path` (`leaf`, as just written) into
    /// children, then marks it split.
    async fn split(
        &self,
        dir: &Link,
        obj: &super::Object,
        layout: &mut Layout,
        path: &[u8],
        leaf: DirNode,
    ) -> Result<(), FsError> {
        let DirNode::Leaf(entries) = leaf else {
            return Ok(());
        };
        let node = layout.node_mut(dir, path).clone();
        // The children are a function of this stored version of the leaf.
        let epoch = node.seq;
        let mut kids: BTreeMap<u8, Vec<(Vec<u8>, Entry)>> = BTreeMap::new();
        for (n, e) in entries {
            kids.entry(digits(dir, &n)[path.len()])
                .or_default()
                .push((n, e));
        }
        let writes = kids.into_iter().map(|(i, x)| {
            let mut p = path.to_vec();
            p.push(i);
            let name = child_name(&dir.name, &p, epoch);
            let names: Names = x.iter().map(|(n, _)| n.clone()).collect();
            async move {
                match self
                    .put_shard(dir, &name, &DirNode::Leaf(x), 0, Durability::Later)
                    .await
                {
                    // Written by another writer splitting the same version:
                    // the same entries.
                    Ok(()) | Err(FsError::Conflict(_)) => Ok((p, name, names)),
                    Err(e) => Err(e),
                }
            }
        });
        let mut kids_written = Vec::new();
        for r in join_all(writes).await {
            kids_written.push(r?);
        }
        let split = DirNode::Split { epoch };
        let seq = if path.is_empty() {
            self.put_top(dir, obj, split, node.seq, Durability::Later)
                .await?
        } else {
            self.put_shard(dir, &node.name, &split, node.seq, Durability::Later)
                .await?;
            node.seq + 1
        };
        layout.nodes.insert(
            path.to_vec(),
            ShardNode {
                name: node.name,
                seq,
                split: Some(epoch),
                names: Names::new(),
            },
        );
        for (p, name, names) in kids_written {
            layout.nodes.insert(
                p,
                ShardNode {
                    name,
                    seq: 1,
                    split: None,
                    names,
                },
            );
        }
        Ok(())
    }

    /// Tombstones the shard records of a directory being deleted (best
    /// effort: an orphaned shard costs space, never correctness).
    pub(crate) async fn delete_shards(&self, layout: &Layout) {
        let dels = layout
            .nodes
            .iter()
            .filter(|(p, n)| !p.is_empty() && n.seq > 0)
            .map(|(_, n)| async move {
                let rec = self.sign_next(&n.name, n.seq + 1, None).await?;
                self.store
                    .put_record(rec, Some(n.seq), Durability::Later)
                    .await
            });
        for r in join_all(dels).await {
            if let Err(e) = r {
                log::debug!("directory shard not deleted: {e}");
            }
        }
    }
}
