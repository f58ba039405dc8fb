//! A file's index on the ring: its extents in the file's record while they
//! are few, else a tree of encrypted index blocks whose top level is in the
//! record, so a file has no size or extent-count limit.
//!
//! Node boundaries are chosen by the content (a node ends after an extent
//! whose offset hashes to a chosen pattern, within size bounds), so a
//! change to a few extents changes the nodes around them and the path to
//! the top, not every node after them. A node whose plaintext was loaded
//! or stored before is not stored again: [`NodeCache`] maps its hash to its
//! block.

use super::crypto::{open, seal};
use super::extents::{BlockRef, Cipher, Extent, ExtentMap};
use super::format::{IndexNode, IndexRef, StoredIndex, index_aad};
use super::index_trees::{Level, Matcher, Tree, Trees};
use super::object::{FileContent, Link};
use super::{BlockStore, Durability, FsError, Identity};
use crate::id::{Id, IdSet};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Mutex;

/// Extents kept in the record itself, at most.
pub const RECORD_EXTENTS: usize = 128;
/// Extents a record lays over its file's index tree, at most: the
/// extents written since the tree was stored. Past that, a save stores
/// the tree anew (its changed nodes).
pub const OVERLAY_MAX: usize = 64;
/// Entries of one index node, at most.
const NODE_MAX: usize = 256;
/// Entries of one index node, at least (but the last).
const NODE_MIN: usize = 16;
/// A node ends after an entry whose offset hash has these bits clear
/// (one in 64: nodes of ~64 entries, ~4 KiB).
const CUT_MASK: u64 = 63;
/// Top-level references kept in the record, at most.
const TOP_MAX: usize = 128;
/// Levels of an index tree, at most (256^8 extents).
const MAX_DEPTH: usize = 8;
/// Index blocks fetched at once.
const FETCH_PARALLEL: usize = 16;
/// Node blocks remembered for reuse.
const CACHE_MAX: usize = 1 << 16;

/// Blocks of index nodes by the hash of (record name, plaintext), and the
/// files' last trees.
#[derive(Default)]
pub struct NodeCache {
    nodes: Mutex<HashMap<Id, BlockRef>>,
    trees: Trees,
    last: Mutex<Option<LastOverlay>>,
}

/// The last save that laid extents over a stored tree: the tree's stored
/// form and blocks, and the extents laid over it. A file written in small
/// pieces and synced often saves over the same tree many times, most of
/// them with the same extents too (only its journal changed): planning
/// the tree's nodes and comparing the extents with it again each time
/// was a tenth of such an `fsync`'s time.
struct LastOverlay {
    name: Vec<u8>,
    /// The tree's extents, its stored form and its index blocks.
    held: ExtentMap,
    base: StoredIndex,
    used: Vec<BlockRef>,
    /// The content's extents, and those it lays over the tree.
    extents: ExtentMap,
    over: Vec<Extent>,
}

impl NodeCache {
    fn get(&self, h: &Id) -> Option<BlockRef> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .copied()
    }

    /// Forgets the nodes stored in any of `blocks` (released: they must
    /// not be reused).
    pub fn forget_blocks(&self, blocks: &std::collections::HashSet<Id>) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| !blocks.contains(&b.key));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .as_ref()
            .is_some_and(|l| l.used.iter().any(|b| blocks.contains(&b.key)))
        {
            *last = None;
        }
    }

    /// The extents the last save of file `name` laid over tree `held`, if
    /// it laid them over this very tree and `extents` are the very same
    /// (a copy of the map it saved).
    fn last_over(&self, name: &[u8], held: &ExtentMap, extents: &ExtentMap) -> Option<Vec<Extent>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let l = last.as_ref()?;
        (l.name == name && l.extents.is_copy_of(extents) && l.held.is_copy_of(held))
            .then(|| l.over.clone())
    }

    /// The stored form and blocks of tree `held` as the last save of file
    /// `name` stored it, if that was this tree and each of its blocks is
    /// still `reusable` (what planning it again would give).
    fn last_plan(
        &self,
        name: &[u8],
        held: &ExtentMap,
        reusable: &IdSet,
    ) -> Option<(StoredIndex, Vec<BlockRef>)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let l = last.as_ref()?;
        (l.name == name && l.held == *held && l.used.iter().all(|b| reusable.contains(&b.key)))
            .then(|| (l.base.clone(), l.used.clone()))
    }

    fn set_last(&self, last: LastOverlay) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    fn put(&self, h: Id, b: BlockRef) {
        let mut m = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(h, b);
    }
}

/// A 64-bit mix of `x` (splitmix64's finalizer), for node boundaries.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Splits `items` into runs ending where `cut_after` says (content-defined).
fn runs<T: Copy>(items: impl IntoIterator<Item = T>, offset: impl Fn(&T) -> u64) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for it in items {
        let cut = mix(offset(&it)) & CUT_MASK == 0;
        cur.push(it);
        let n = cur.len();
        if n >= NODE_MAX || (n >= NODE_MIN && cut) {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Where one save stores index nodes: the store, the owner who claims
/// them, the file and the cache of nodes stored before.
struct Saver<'a, S> {
    store: &'a S,
    owner: &'a Identity,
    link: &'a Link,
    cache: &'a NodeCache,
    /// Blocks a cached node may be reused from (known not released).
    reusable: &'a IdSet,
    /// When new nodes must be durable.
    durability: Durability,
}

/// Index node blocks stored at once.
const PUT_PARALLEL: usize = 16;

/// A block sealed but not yet stored (a journal spill): it is stored with
/// the index nodes of the save that refers to it, in the same round.
#[derive(Debug, Clone)]
pub struct Unstored {
    pub key: Id,
    pub sealed: Vec<u8>,
}

/// A put a save still has to make: the block's key and sealed bytes, and
/// the cache entry (node hash, block) to add once it is stored.
type Put = (Id, Vec<u8>, Option<(Id, BlockRef)>);

/// A node sealed for storing: its block, and the put still to make (none
/// if a stored node was found in the cache).
struct Sealed {
    block: BlockRef,
    put: Option<Put>,
}

/// Seals one node (or finds it stored): its block is known before it is
/// stored, so a whole tree's puts go out together ([`put_all`]).
fn seal_node<S>(to: &Saver<'_, S>, node: &IndexNode) -> Result<Sealed, FsError> {
    let Saver {
        link,
        cache,
        reusable,
        ..
    } = to;
    let plain = postcard::to_allocvec(node).map_err(|e| FsError::Invalid(e.to_string()))?;
    let h = Id::hash_parts(&[&link.name, &plain]);
    if let Some(b) = cache.get(&h).filter(|b| reusable.contains(&b.key)) {
        return Ok(Sealed {
            block: b,
            put: None,
        });
    }
    let seal_no = rand::random::<u64>();
    let sealed = seal(&link.key, &plain, &index_aad(&link.name, seal_no));
    let key = Id::of_block(&sealed);
    let block = BlockRef {
        key,
        seal: seal_no,
        cipher: Cipher::XChaCha20Poly1305,
        len: plain.len() as u32,
    };
    Ok(Sealed {
        block,
        put: Some((key, sealed, Some((h, block)))),
    })
}

/// Stores the sealed nodes of a whole tree, up to [`PUT_PARALLEL`] at
/// once and every level together (a parent refers to its children by the
/// keys of their sealed bytes, known before they are stored), and notes
/// them in the cache once stored.
async fn put_all<S: BlockStore>(to: &Saver<'_, S>, puts: Vec<Put>) -> Result<(), FsError> {
    let Saver {
        store,
        owner,
        cache,
        durability,
        ..
    } = to;
    let stored: Vec<Option<(Id, BlockRef)>> = stream::iter(puts)
        .map(|(key, sealed, entry)| async move {
            store
                .put_block(key, sealed, owner.claim(key), *durability)
                .await?;
            Ok::<_, FsError>(entry)
        })
        .buffer_unordered(PUT_PARALLEL)
        .try_collect()
        .await?;
    for (h, b) in stored.into_iter().flatten() {
        cache.put(h, b);
    }
    Ok(())
}

/// Seals the nodes of one tree level that `last` (the same level of the
/// file's last tree) does not hold with a reusable block; their puts join
/// `puts`. Returns their references, in order, and the level as
/// remembered; their blocks are added to `used`.
fn seal_level<S>(
    to: &Saver<'_, S>,
    nodes: Vec<(IndexNode, (u64, u64))>,
    last: Option<&Level>,
    used: &mut Vec<BlockRef>,
    puts: &mut Vec<Put>,
) -> Result<(Vec<IndexRef>, Level), FsError> {
    let mut matcher = Matcher::new(last);
    let mut blocks = Vec::with_capacity(nodes.len());
    for (node, _) in &nodes {
        let b = match matcher.find(node).filter(|b| to.reusable.contains(&b.key)) {
            Some(b) => b,
            None => {
                let s = seal_node(to, node)?;
                puts.extend(s.put);
                s.block
            }
        };
        blocks.push(b);
    }
    used.extend(blocks.iter().copied());
    let refs = nodes
        .iter()
        .zip(&blocks)
        .map(|((_, (start, end)), block)| IndexRef {
            start: *start,
            end: *end,
            block: *block,
        })
        .collect();
    let level = nodes.into_iter().map(|(n, _)| n).zip(blocks).collect();
    Ok((refs, level))
}

/// What [`save`] stored: the index as the record keeps it, every index
/// block it refers to, and the extents its tree holds (if it is a tree).
pub struct Saved {
    pub index: StoredIndex,
    pub blocks: Vec<BlockRef>,
    pub tree: Option<ExtentMap>,
}

/// The stored form of `content`'s index, storing the index blocks it needs
/// (reusing a node of `cache` only if its block is in the given set) and
/// the blocks of `extra` in one parallel round. While the extents changed
/// since the tree was stored (`content.tree`) are few, the tree stays as
/// it is and the record lays them over it.
pub async fn save<S: BlockStore>(
    store: &S,
    owner: &Identity,
    link: &Link,
    (cache, reusable): (&NodeCache, &IdSet),
    (content, extra): (&FileContent, &[Unstored]),
    durability: Durability,
) -> Result<Saved, FsError> {
    let to = Saver {
        store,
        owner,
        link,
        cache,
        reusable,
        durability,
    };
    let mut puts: Vec<Put> = extra
        .iter()
        .map(|u| (u.key, u.sealed.clone(), None))
        .collect();
    if let Some(d) = &content.inline {
        put_all(&to, puts).await?;
        return Ok(Saved {
            index: StoredIndex::Inline(d.clone()),
            blocks: Vec::new(),
            tree: None,
        });
    }
    let mut remember = None;
    let (base, used, tree, held) = match overlay(cache, &link.name, content) {
        Some((held, over, over_known)) => {
            let planned = cache.last_plan(&link.name, held, reusable);
            let plan_known = planned.is_some();
            let (base, used, tree) = match planned {
                Some((base, used)) => (base, used, None),
                None => plan_extents(&to, held, &mut puts)?,
            };
            // Both as remembered (a save that changed only the journal):
            // nothing new to remember.
            if !(plan_known && over_known) {
                remember = Some(LastOverlay {
                    name: link.name.clone(),
                    held: held.clone(),
                    base: base.clone(),
                    used: used.clone(),
                    extents: content.extents.clone(),
                    over: over.clone(),
                });
            }
            let base = StoredIndex::Overlaid {
                base: Box::new(base),
                over,
            };
            (base, used, tree, Some(held.clone()))
        }
        None => {
            let (base, used, tree) = plan_extents(&to, &content.extents, &mut puts)?;
            let held = tree.is_some().then(|| content.extents.clone());
            (base, used, tree, held)
        }
    };
    put_all(&to, puts).await?;
    if let Some(t) = tree {
        cache.trees.put(&link.name, t);
    }
    if let Some(l) = remember {
        // Only once its blocks are stored.
        cache.set_last(l);
    }
    Ok(Saved {
        index: StoredIndex::with_journal(base, &content.journal),
        blocks: used,
        tree: held,
    })
}

/// The extents to lay over the stored tree of `content` (and that tree),
/// if the tree stays: both it and the content are too many extents for
/// the record, and at most [`OVERLAY_MAX`] changed. `true` with them if
/// they are the last save's (remembered in `cache`).
fn overlay<'c>(
    cache: &NodeCache,
    name: &[u8],
    content: &'c FileContent,
) -> Option<(&'c ExtentMap, Vec<Extent>, bool)> {
    let held = content.tree.get()?;
    if held.len() <= RECORD_EXTENTS || content.extents.len() <= RECORD_EXTENTS {
        return None;
    }
    if let Some(over) = cache.last_over(name, held, &content.extents) {
        return Some((held, over, true));
    }
    let over = content.extents.over(held, OVERLAY_MAX)?;
    Some((held, over, false))
}

/// The extents part of [`save`]: in the record while they are few, else
/// a tree of index blocks, whose puts join `puts`. Returns the stored
/// form, the index blocks it refers to and the tree to remember once
/// stored.
fn plan_extents<S>(
    to: &Saver<'_, S>,
    extents: &ExtentMap,
    puts: &mut Vec<Put>,
) -> Result<(StoredIndex, Vec<BlockRef>, Option<Tree>), FsError> {
    if extents.len() <= RECORD_EXTENTS {
        let all = extents.iter().copied().collect();
        return Ok((StoredIndex::Extents(all), Vec::new(), None));
    }
    let last = to.cache.trees.get(&to.link.name);
    let last_level = |i: usize| last.as_ref().and_then(|t| t.get(i));
    let mut tree: Tree = Vec::new();
    let mut used = Vec::new();
    let leaves = runs(extents.iter().copied(), |e| e.offset)
        .into_iter()
        .map(|run| {
            let span = (run[0].offset, run[run.len() - 1].end());
            (IndexNode::Leaf(run), span)
        })
        .collect();
    let (mut level, nodes) = seal_level(to, leaves, last_level(0), &mut used, puts)?;
    tree.push(nodes);
    for _ in 0..MAX_DEPTH {
        if level.len() <= TOP_MAX {
            return Ok((StoredIndex::Tree(level), used, Some(tree)));
        }
        let inner = runs(level.iter().copied(), |r| r.start)
            .into_iter()
            .map(|run| {
                let span = (run[0].start, run[run.len() - 1].end);
                (IndexNode::Inner(run), span)
            })
            .collect();
        let (refs, nodes) = seal_level(to, inner, last_level(tree.len()), &mut used, puts)?;
        level = refs;
        tree.push(nodes);
    }
    Err(FsError::TooBig)
}

/// Fetches and opens one index node.
async fn get_node<S: BlockStore>(
    store: &S,
    link: &Link,
    cache: &NodeCache,
    r: IndexRef,
) -> Result<IndexNode, FsError> {
    let sealed = store.get_block(r.block.key).await?;
    let plain = open(&link.key, &sealed, &index_aad(&link.name, r.block.seal))
        .map_err(|e| FsError::Corrupt(format!("index block {}: {e}", r.block.key.short())))?;
    let node: IndexNode = postcard::from_bytes(&plain)
        .map_err(|e| FsError::Corrupt(format!("index block {}: {e}", r.block.key.short())))?;
    cache.put(Id::hash_parts(&[&link.name, &plain]), r.block);
    Ok(node)
}

/// Loads the extents under the top of an index tree; also every index
/// block of the tree.
pub async fn load<S: BlockStore>(
    store: &S,
    link: &Link,
    cache: &NodeCache,
    top: Vec<IndexRef>,
) -> Result<(ExtentMap, Vec<BlockRef>), FsError> {
    let mut level = top;
    let mut used = Vec::new();
    // The levels from the top down.
    let mut tree: Tree = Vec::new();
    for _ in 0..MAX_DEPTH {
        used.extend(level.iter().map(|r| r.block));
        let nodes: Vec<IndexNode> = stream::iter(level.iter().copied())
            .map(|r| get_node(store, link, cache, r))
            .buffered(FETCH_PARALLEL)
            .try_collect()
            .await?;
        if nodes.iter().all(|n| matches!(n, IndexNode::Leaf(_))) {
            let extents = ExtentMap::from_extents(nodes.iter().flat_map(|n| match n {
                IndexNode::Leaf(x) => x.clone(),
                IndexNode::Inner(_) => Vec::new(),
            }))?;
            tree.push(
                nodes
                    .into_iter()
                    .zip(level.iter().map(|r| r.block))
                    .collect(),
            );
            tree.reverse();
            cache.trees.put(&link.name, tree);
            return Ok((extents, used));
        }
        tree.push(
            nodes
                .iter()
                .cloned()
                .zip(level.iter().map(|r| r.block))
                .collect(),
        );
        let mut next = Vec::new();
        for n in nodes {
            match n {
                IndexNode::Inner(refs) => next.extend(refs),
                IndexNode::Leaf(_) => {
                    return Err(FsError::Corrupt("index tree of uneven depth".into()));
                }
            }
        }
        level = next;
    }
    Err(FsError::Corrupt("index tree too deep".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::extents::Extent;
    use crate::fs::mem_store::MemStore;
    use crate::fs::object::{Kind, TreeBase};

    fn extent(i: u64) -> Extent {
        Extent {
            offset: i * 10,
            len: 5,
            block: BlockRef {
                key: Id::hash(&i.to_be_bytes()),
                seal: i,
                cipher: Cipher::Aes256Gcm,
                len: 5,
            },
            at: 0,
        }
    }

    fn content(n: u64) -> FileContent {
        FileContent {
            extents: ExtentMap::from_extents((0..n).map(extent)).unwrap(),
            ..FileContent::default()
        }
    }

    #[tokio::test]
    async fn small_index_stays_in_the_record() {
        let store = MemStore::default();
        let link = Link::fresh(Kind::File);
        let Saved {
            index: idx,
            blocks: used,
            ..
        } = save(
            &store,
            &Identity::generate(),
            &link,
            (&NodeCache::default(), &IdSet::default()),
            (&content(RECORD_EXTENTS as u64), &[]),
            Durability::Later,
        )
        .await
        .unwrap();
        assert!(matches!(idx, StoredIndex::Extents(ref x) if x.len() == RECORD_EXTENTS));
        assert!(used.is_empty());
    }

    #[tokio::test]
    async fn large_index_round_trips_and_a_small_change_stores_few_nodes() {
        let store = MemStore::default();
        let link = Link::fresh(Kind::File);
        let cache = NodeCache::default();
        let owner = Identity::generate();
        let c = content(100_000);
        let Saved {
            index: idx,
            blocks: used,
            ..
        } = save(
            &store,
            &owner,
            &link,
            (&cache, &IdSet::default()),
            (&c, &[]),
            Durability::Later,
        )
        .await
        .unwrap();
        let StoredIndex::Tree(top) = idx else {
            panic!("100 000 extents need a tree")
        };
        assert!(top.len() <= TOP_MAX);
        let stored = store.blocks.lock().unwrap().len();
        assert_eq!(stored, used.len());
        // A fresh cache: everything is fetched.
        let (back, used2) = load(&store, &link, &NodeCache::default(), top)
            .await
            .unwrap();
        assert_eq!(back, c.extents);
        assert_eq!(used2.len(), used.len());
        // One extent changed: a leaf and its path are new, nothing else
        // (the nodes of the version replaced are reused).
        let reuse: IdSet = used.iter().map(|b| b.key).collect();
        let mut c2 = c.clone();
        let mut e = extent(50_000);
        e.len = 3;
        c2.extents.insert(e);
        save(
            &store,
            &owner,
            &link,
            (&cache, &reuse),
            (&c2, &[]),
            Durability::Later,
        )
        .await
        .unwrap();
        let added = store.blocks.lock().unwrap().len() - stored;
        assert!((1..=4).contains(&added), "{added} new index blocks");
        // Nodes of a version that may have been released are not reused.
        let before = store.blocks.lock().unwrap().len();
        save(
            &store,
            &owner,
            &link,
            (&cache, &IdSet::default()),
            (&c2, &[]),
            Durability::Later,
        )
        .await
        .unwrap();
        assert_eq!(store.blocks.lock().unwrap().len() - before, used.len());
    }

    /// Saves `c` as `link`, reusing nodes of blocks in `reuse`; the number
    /// of blocks the save stored.
    async fn saved_blocks(
        store: &MemStore,
        link: &Link,
        cache: &NodeCache,
        reuse: &IdSet,
        c: &FileContent,
    ) -> usize {
        let before = store.blocks.lock().unwrap().len();
        let owner = Identity::generate();
        save(
            store,
            &owner,
            link,
            (cache, reuse),
            (c, &[]),
            Durability::Later,
        )
        .await
        .unwrap();
        store.blocks.lock().unwrap().len() - before
    }

    #[tokio::test]
    async fn the_last_tree_finds_unchanged_nodes_without_hashing_them() {
        let store = MemStore::default();
        let link = Link::fresh(Kind::File);
        let cache = NodeCache::default();
        let c = content(20_000);
        let Saved {
            index: StoredIndex::Tree(top),
            blocks: used,
            ..
        } = save(
            &store,
            &Identity::generate(),
            &link,
            (&cache, &IdSet::default()),
            (&c, &[]),
            Durability::Later,
        )
        .await
        .unwrap()
        else {
            panic!("a tree")
        };
        let reuse: IdSet = used.iter().map(|b| b.key).collect();
        // Without the nodes' hashes, the last tree alone finds them all.
        cache.nodes.lock().unwrap().clear();
        assert_eq!(saved_blocks(&store, &link, &cache, &reuse, &c).await, 0);
        assert!(cache.nodes.lock().unwrap().is_empty(), "nothing hashed");
        let mut c2 = c.clone();
        let mut e = extent(10_000);
        e.len = 3;
        c2.extents.insert(e);
        let added = saved_blocks(&store, &link, &cache, &reuse, &c2).await;
        assert!((1..=4).contains(&added), "{added} new index blocks");
        // A tree loaded into a fresh cache is remembered the same way.
        let fresh = NodeCache::default();
        load(&store, &link, &fresh, top).await.unwrap();
        fresh.nodes.lock().unwrap().clear();
        assert_eq!(saved_blocks(&store, &link, &fresh, &reuse, &c).await, 0);
        // A remembered node whose block is not known reusable is stored
        // again.
        let none = IdSet::default();
        assert_eq!(
            saved_blocks(&store, &link, &fresh, &none, &c).await,
            used.len()
        );
    }

    /// Saves `c` as `link` (not durably), reusing nodes of `reuse`.
    async fn save_later(
        store: &MemStore,
        owner: &Identity,
        link: &Link,
        (cache, reuse): (&NodeCache, &IdSet),
        c: &FileContent,
    ) -> Saved {
        save(
            store,
            owner,
            link,
            (cache, reuse),
            (c, &[]),
            Durability::Later,
        )
        .await
        .unwrap()
    }

    /// What [`saved_20k`] returns: the store, file, cache and owner, the
    /// content, the first save, its blocks (to reuse) and the tree's
    /// extents.
    type Saved20k = (
        MemStore,
        Link,
        NodeCache,
        Identity,
        FileContent,
        Saved,
        IdSet,
        ExtentMap,
    );

    /// A file of 20,000 extents saved once as a tree.
    async fn saved_20k() -> Saved20k {
        let store = MemStore::default();
        let link = Link::fresh(Kind::File);
        let cache = NodeCache::default();
        let owner = Identity::generate();
        let c = content(20_000);
        let first = save_later(&store, &owner, &link, (&cache, &IdSet::default()), &c).await;
        let reuse: IdSet = first.blocks.iter().map(|b| b.key).collect();
        let held = first.tree.clone().expect("a tree");
        (store, link, cache, owner, c, first, reuse, held)
    }

    #[tokio::test]
    async fn extents_written_since_the_tree_lie_over_it_in_the_record() {
        let (store, link, cache, owner, c, _, reuse, held) = saved_20k().await;
        assert_eq!(held, c.extents);
        let fresh = |i: u64, n: u64| Extent {
            offset: n * 10 + 2,
            len: 4,
            block: BlockRef {
                key: Id::hash(&(1_000_000 + i).to_be_bytes()),
                seal: i,
                cipher: Cipher::Aes256Gcm,
                len: 4,
            },
            at: 0,
        };
        // A few extents laid since: no node is stored, the record lays
        // them over the same tree, and they read back over it.
        let mut c2 = c.clone();
        c2.tree = TreeBase::new(Some(held.clone()));
        for i in 0..10 {
            c2.extents.insert(fresh(i, i * 1500));
        }
        let stored = store.blocks.lock().unwrap().len();
        let second = save_later(&store, &owner, &link, (&cache, &reuse), &c2).await;
        assert_eq!(store.blocks.lock().unwrap().len(), stored);
        assert_eq!(second.tree.as_ref(), Some(&held));
        let StoredIndex::Overlaid { base, over } = second.index else {
            panic!("laid over the tree")
        };
        assert_eq!(over.len(), 10);
        let StoredIndex::Tree(top) = *base else {
            panic!("over a tree")
        };
        let (mut back, _) = load(&store, &link, &NodeCache::default(), top)
            .await
            .unwrap();
        for e in over {
            back.insert(e);
        }
        assert_eq!(back, c2.extents);
        // Past OVERLAY_MAX the tree is stored anew and holds them all.
        let mut c3 = c2.clone();
        for i in 10..10 + OVERLAY_MAX as u64 {
            c3.extents.insert(fresh(i, i * 150));
        }
        let third = save_later(&store, &owner, &link, (&cache, &reuse), &c3).await;
        assert!(matches!(third.index, StoredIndex::Tree(_)));
        assert_eq!(third.tree, Some(c3.extents.clone()));
        // So is a truncation into the tree's bytes (a hole no extent
        // can lay over it).
        let mut c4 = c2.clone();
        c4.extents.truncate(100_000);
        c4.extents.insert(fresh(99, 15_000));
        let fourth = save_later(&store, &owner, &link, (&cache, &reuse), &c4).await;
        assert!(matches!(fourth.index, StoredIndex::Tree(_)));
    }

    #[tokio::test]
    async fn a_save_over_the_same_tree_reuses_its_last_plan_while_its_blocks_are_reusable() {
        let (store, link, cache, owner, c, first, reuse, held) = saved_20k().await;
        let mut c2 = c.clone();
        c2.tree = TreeBase::new(Some(held.clone()));
        for i in 0..10 {
            let mut e = extent(i * 1500);
            e.offset += 2;
            e.len = 3;
            c2.extents.insert(e);
        }
        let second = save_later(&store, &owner, &link, (&cache, &reuse), &c2).await;
        assert!(matches!(second.index, StoredIndex::Overlaid { .. }));
        // Remembered: the same tree under the very same extents.
        let over = cache.last_over(&link.name, &held, &c2.extents);
        assert_eq!(over.map(|o| o.len()), Some(10));
        assert!(cache.last_plan(&link.name, &held, &reuse).is_some());
        assert!(cache.last_plan(b"another file", &held, &reuse).is_none());
        // Saved again (only its journal would differ): the same index,
        // nothing stored.
        let stored = store.blocks.lock().unwrap().len();
        let again = save_later(&store, &owner, &link, (&cache, &reuse), &c2.clone()).await;
        assert_eq!(again.index, second.index);
        assert_eq!(again.blocks, second.blocks);
        assert_eq!(store.blocks.lock().unwrap().len(), stored);
        // Its blocks not reusable (the version may be released): the tree
        // is stored anew, not taken from the last plan.
        let anew = save_later(&store, &owner, &link, (&cache, &IdSet::default()), &c2).await;
        assert_eq!(
            store.blocks.lock().unwrap().len() - stored,
            first.blocks.len()
        );
        assert!(anew.blocks.iter().all(|b| !reuse.contains(&b.key)));
        // A block of the plan released: the plan is forgotten.
        let fresh: IdSet = anew.blocks.iter().map(|b| b.key).collect();
        assert!(cache.last_plan(&link.name, &held, &fresh).is_some());
        let released: std::collections::HashSet<Id> = [anew.blocks[0].key].into();
        cache.forget_blocks(&released);
        assert!(cache.last_plan(&link.name, &held, &fresh).is_none());
    }

    #[tokio::test]
    async fn index_blocks_from_another_file_do_not_open() {
        let store = MemStore::default();
        let (a, b) = (Link::fresh(Kind::File), Link::fresh(Kind::File));
        let Saved {
            index: StoredIndex::Tree(top),
            ..
        } = save(
            &store,
            &Identity::generate(),
            &a,
            (&NodeCache::default(), &IdSet::default()),
            (&content(1000), &[]),
            Durability::Later,
        )
        .await
        .unwrap()
        else {
            panic!("a tree")
        };
        assert!(matches!(
            load(&store, &b, &NodeCache::default(), top).await,
            Err(FsError::Corrupt(_))
        ));
    }
}
