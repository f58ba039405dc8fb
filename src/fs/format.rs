//! How objects are stored, byte by byte (format v2), and how format v1
//! objects, written before it, are read.
//!
//! An object's record value is `seal(object key, postcard(StoredObject),
//! aad = "peerstore object v2" ‖ record name)`. A value that does not open
//! under that associated data is tried as format v1 (`aad = record name`,
//! `postcard(v1::Object)`) and converted in memory; the next save of the
//! object writes it as v2. Content blocks are `seal_gcm(file key,
//! plaintext, aad = record name ‖ seal u64 BE)` (v1 chunks: XChaCha20,
//! the same aad with the chunk number); index blocks are `seal(file key,
//! postcard(IndexNode), aad = "peerstore index v2" ‖ record name ‖ seal u64
//! BE)`. A file's record plaintext is followed by `postcard(History)` and,
//! if the file was re-keyed with its content left as it was,
//! `postcard(Vec<Link>)`: the names and keys its older blocks are sealed
//! under.

use super::FsError;
use super::extents::{BlockRef, Cipher, Extent, ExtentMap};
use super::history::History;
use super::object::{Attrs, Body, CHUNK_SIZE, Entry, FileContent, Link, Object};
use super::ranges::Ranges;
use crate::postcard_tail::append;
use serde::{Deserialize, Serialize};

/// Associated-data prefix of a v2 object record.
const OBJECT_AAD: &[u8] = b"peerstore object v2";
/// Associated-data prefix of an index block.
const INDEX_AAD: &[u8] = b"peerstore index v2";

/// Associated data of the v2 record of the object named `name`.
pub fn object_aad(name: &[u8]) -> Vec<u8> {
    [OBJECT_AAD, name].concat()
}

/// Associated data of index block `seal` of the file named `name`.
pub fn index_aad(name: &[u8], seal: u64) -> Vec<u8> {
    [INDEX_AAD, name, &seal.to_be_bytes()].concat()
}

/// A stored object (the plaintext of its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub attrs: Attrs,
    pub body: StoredBody,
}

/// The type-specific part of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredBody {
    File(StoredIndex),
    /// The top node of the directory's shard tree.
    Dir(DirNode),
    Symlink(Vec<u8>),
    Special,
}

/// A node of a directory's shard tree (the top one in the directory's
/// record, the others in shard records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirNode {
    /// Entries sorted by name.
    Leaf(Vec<(Vec<u8>, Entry)>),
    /// Split into [`super::shards::FANOUT`] children, stored in shard
    /// records named from this node's path and `epoch`; an absent child
    /// is empty.
    Split { epoch: u64 },
}

/// Associated-data prefix of a shard record.
const SHARD_AAD: &[u8] = b"peerstore shard v2";

/// Associated data of the shard record named `name`.
pub fn shard_aad(name: &[u8]) -> Vec<u8> {
    [SHARD_AAD, name].concat()
}

/// A file's index as kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredIndex {
    /// A small file's bytes.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The extents, sorted by offset (a file with few extents).
    Extents(Vec<Extent>),
    /// The top of an index tree: its nodes, in file order.
    Tree(Vec<IndexRef>),
    /// `Extents` or `Tree`, with small writes laid over them: (offset,
    /// bytes) sorted by offset, none empty, overlapping or touching
    /// another.
    Journaled {
        base: Box<StoredIndex>,
        #[serde(with = "pieces")]
        writes: Vec<(u64, Vec<u8>)>,
    },
    /// A `Tree` with newer extents laid over it (sorted by offset, none
    /// overlapping another): the extents written since the tree was, so
    /// that a journal moved into a block changes the record, not the
    /// tree's nodes, until the overlay grows past
    /// [`super::index::OVERLAY_MAX`].
    Overlaid {
        base: Box<StoredIndex>,
        over: Vec<Extent>,
    },
}

/// A journal's (offset, bytes) pieces with each piece's bytes encoded as
/// bytes rather than a sequence of `u8`s: the same postcard encoding (a
/// length, then the bytes), written and read in one copy instead of one
/// call per byte (a record's journal holds up to 32 KiB).
mod pieces {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(writes: &[(u64, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(writes.iter().map(|(at, b)| (*at, Bytes::new(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let pieces = Vec::<(u64, ByteBuf)>::deserialize(d)?;
        Ok(pieces
            .into_iter()
            .map(|(at, b)| (at, b.into_vec()))
            .collect())
    }
}

/// The largest journal a record may hold when read (bytes). Writers keep
/// theirs under [`super::object::JOURNAL_MAX`] (under
/// [`super::object::JOURNAL_CARRY`] while a spill is stored behind); this
/// leaves room to change those limits.
const JOURNAL_READ_MAX: usize = 4 * super::object::JOURNAL_MAX;
const _: () = assert!(super::object::JOURNAL_CARRY <= JOURNAL_READ_MAX);

impl StoredIndex {
    /// `base` with `journal` laid over it (`base` itself if it is empty).
    pub fn with_journal(base: StoredIndex, journal: &Ranges) -> StoredIndex {
        if journal.is_empty() {
            return base;
        }
        StoredIndex::Journaled {
            base: Box::new(base),
            writes: journal.to_pieces(),
        }
    }
}

/// The journal of a stored index, checked.
fn journal_of(writes: Vec<(u64, Vec<u8>)>, size: u64) -> Result<Ranges, FsError> {
    let mut j = Ranges::from_pieces(writes)
        .filter(|j| j.bytes() <= JOURNAL_READ_MAX)
        .ok_or_else(|| FsError::Corrupt("bad journal of small writes".into()))?;
    j.truncate(size);
    Ok(j)
}

/// A node of a file's index tree, stored as an index block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexNode {
    /// Extents sorted by offset.
    Leaf(Vec<Extent>),
    /// Child nodes in file order.
    Inner(Vec<IndexRef>),
}

/// Where a node of an index tree is, and which file bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// First file byte covered by the node's extents.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    pub block: BlockRef,
}

/// What a record held, decoded: an object whose file index may still have
/// to be fetched (`StoredIndex::Tree`).
pub enum Decoded {
    /// Complete.
    Done(Object),
    /// A file whose index tree is in blocks, the extents laid over it,
    /// and its journal.
    FileTree {
        attrs: Attrs,
        top: Vec<IndexRef>,
        over: ExtentMap,
        journal: Ranges,
        history: History,
        priors: Vec<Link>,
    },
    /// A directory whose entries are in shard records.
    DirSplit { attrs: Attrs, epoch: u64 },
}

/// Decodes a record's plaintext in format v2.
pub fn decode_v2(plain: &[u8]) -> Result<Decoded, FsError> {
    let (s, rest): (StoredObject, &[u8]) = postcard::take_from_bytes(plain)
        .map_err(|e| FsError::Corrupt(format!("object does not parse: {e}")))?;
    let (history, priors): (History, Vec<Link>) = match (&s.body, rest.is_empty()) {
        (StoredBody::File(_), false) => {
            let (h, rest): (History, &[u8]) = postcard::take_from_bytes(rest)
                .map_err(|e| FsError::Corrupt(format!("file history does not parse: {e}")))?;
            let priors = match rest.is_empty() {
                true => Vec::new(),
                false => postcard::from_bytes(rest).map_err(|e| {
                    FsError::Corrupt(format!("file's earlier keys do not parse: {e}"))
                })?,
            };
            (h, priors)
        }
        _ => (History::default(), Vec::new()),
    };
    let attrs = s.attrs;
    let body = match s.body {
        StoredBody::File(index) => {
            let (base, journal) = match index {
                StoredIndex::Journaled { base, writes } => (*base, journal_of(writes, attrs.size)?),
                other => (other, Ranges::default()),
            };
            let (base, over) = match base {
                StoredIndex::Overlaid { base, over } => (*base, ExtentMap::from_extents(over)?),
                other => (other, ExtentMap::new()),
            };
            match base {
                StoredIndex::Tree(top) => {
                    return Ok(Decoded::FileTree {
                        attrs,
                        top,
                        over,
                        journal,
                        history,
                        priors,
                    });
                }
                StoredIndex::Inline(d) if journal.is_empty() => Body::File(FileContent {
                    inline: Some(d),
                    history,
                    priors,
                    ..FileContent::default()
                }),
                _ if !over.is_empty() => {
                    return Err(FsError::Corrupt("extents laid over no tree".into()));
                }
                StoredIndex::Extents(x) => Body::File(FileContent {
                    extents: ExtentMap::from_extents(x)?,
                    journal,
                    history,
                    priors,
                    ..FileContent::default()
                }),
                StoredIndex::Inline(_)
                | StoredIndex::Journaled { .. }
                | StoredIndex::Overlaid { .. } => {
                    return Err(FsError::Corrupt("journal over a bad base".into()));
                }
            }
        }
        StoredBody::Dir(DirNode::Leaf(entries)) => Body::Dir {
            entries: entries.into_iter().collect(),
        },
        StoredBody::Dir(DirNode::Split { epoch }) => {
            return Ok(Decoded::DirSplit { attrs, epoch });
        }
        StoredBody::Symlink(target) => Body::Symlink { target },
        StoredBody::Special => Body::Special,
    };
    Ok(Decoded::Done(Object { attrs, body }))
}

/// How the part of an object kept in its record is given to
/// [`encode_v2`]: a file's index, a directory's top node.
pub enum Top {
    None,
    File(StoredIndex),
    Dir(DirNode),
}

/// Encodes an object with its top part (a file's index, a directory's
/// top node).
pub fn encode_v2(obj: &Object, top: Top) -> Result<Vec<u8>, FsError> {
    let body = match (&obj.body, top) {
        (Body::File(_), Top::File(i)) => StoredBody::File(i),
        (Body::Dir { .. }, Top::Dir(n)) => StoredBody::Dir(n),
        (Body::Dir { entries }, Top::None) => StoredBody::Dir(DirNode::Leaf(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )),
        (Body::File(_), _) | (_, Top::File(_) | Top::Dir(_)) => {
            return Err(FsError::Invalid(
                "object saved with the wrong top part".into(),
            ));
        }
        (Body::Symlink { target }, _) => StoredBody::Symlink(target.clone()),
        (Body::Special, _) => StoredBody::Special,
    };
    let mut attrs = obj.attrs.clone();
    if matches!(obj.body, Body::Dir { .. }) {
        attrs.nlink = 0; // computed when loaded
    }
    let stored = StoredObject { attrs, body };
    // A file's history (and its priors, if any) ride after the object: a
    // reader of the format before it stops at the object. A tuple encodes
    // as its parts one after another, so the whole is sized once and
    // written into one buffer (a record is often ~20 KiB).
    let mut bytes = Vec::new();
    match &obj.body {
        Body::File(c) if !c.priors.is_empty() => {
            append(&(&stored, &c.history, &c.priors), &mut bytes)
        }
        Body::File(c) => append(&(&stored, &c.history), &mut bytes),
        _ => append(&stored, &mut bytes),
    }
    .map_err(|e| FsError::Invalid(e.to_string()))?;
    Ok(bytes)
}

/// Format v1 (the release before issue 10), read only.
pub mod v1 {
    use super::super::object::{Link, Time};
    use super::*;
    use crate::id::Id;
    use std::collections::BTreeMap;

    /// v1 attributes (no link count).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Attrs {
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub size: u64,
        pub atime: Time,
        pub mtime: Time,
        pub ctime: Time,
    }

    /// v1 chunk `i`: file bytes `[i·CHUNK_SIZE, i·CHUNK_SIZE + len)`.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    pub struct Chunk {
        pub block: Id,
        pub len: u32,
    }

    /// v1 object bodies.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Body {
        File {
            chunks: Vec<Option<Chunk>>,
            inline: Option<Vec<u8>>,
        },
        Dir {
            entries: BTreeMap<Vec<u8>, Link>,
        },
        Symlink {
            target: Vec<u8>,
        },
    }

    /// A v1 object (record plaintext, sealed with aad = record name).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Object {
        pub attrs: Attrs,
        pub body: Body,
    }

    /// Decodes a v1 record plaintext into today's object.
    pub fn decode(plain: &[u8]) -> Result<super::Object, FsError> {
        let o: Object = postcard::from_bytes(plain)
            .map_err(|e| FsError::Corrupt(format!("v1 object does not parse: {e}")))?;
        let a = o.attrs;
        let attrs = super::Attrs {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            nlink: 1,
        };
        let body = match o.body {
            Body::File { chunks, inline } => {
                let mut extents = Vec::new();
                for (i, c) in chunks.iter().enumerate() {
                    let Some(c) = c else { continue };
                    if c.len == 0 {
                        continue;
                    }
                    if c.len as usize > CHUNK_SIZE {
                        return Err(FsError::Corrupt(format!("v1 chunk {i} is too long")));
                    }
                    extents.push(Extent {
                        offset: i as u64 * CHUNK_SIZE as u64,
                        len: c.len,
                        block: BlockRef {
                            key: c.block,
                            seal: i as u64,
                            cipher: Cipher::XChaCha20Poly1305,
                            len: c.len,
                        },
                        at: 0,
                    });
                }
                super::Body::File(FileContent {
                    inline,
                    extents: ExtentMap::from_extents(extents)?,
                    ..FileContent::default()
                })
            }
            Body::Dir { entries } => super::Body::Dir {
                entries: entries
                    .into_iter()
                    .map(|(n, l)| (n, Entry::bare(l)))
                    .collect(),
            },
            Body::Symlink { target } => super::Body::Symlink { target },
        };
        Ok(super::Object { attrs, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::object::{Kind, Link, Time};
    use crate::id::Id;

    /// [`StoredIndex`]'s first variants as they were declared before their
    /// bytes were encoded as bytes (a sequence of `u8`s each).
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum AsSequences {
        Inline(Vec<u8>),
        Extents(Vec<Extent>),
        Tree(Vec<IndexRef>),
        Journaled {
            base: Box<AsSequences>,
            writes: Vec<(u64, Vec<u8>)>,
        },
    }

    #[test]
    fn bytes_encode_as_the_sequences_did() {
        let writes = vec![(3u64, vec![7u8; 300]), (9000, vec![1, 2, 3])];
        let now = StoredIndex::Journaled {
            base: Box::new(StoredIndex::Inline(vec![5; 200])),
            writes: writes.clone(),
        };
        let before = AsSequences::Journaled {
            base: Box::new(AsSequences::Inline(vec![5; 200])),
            writes,
        };
        let bytes = postcard::to_allocvec(&now).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&before).unwrap());
        assert_eq!(postcard::from_bytes::<StoredIndex>(&bytes).unwrap(), now);
        assert_eq!(postcard::from_bytes::<AsSequences>(&bytes).unwrap(), before);
    }

    /// A stored file of `size` bytes: `writes` journaled over `base`.
    fn journaled(size: u64, base: StoredIndex, writes: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
        let mut attrs = Attrs::new(0o644, 0, 0);
        attrs.size = size;
        postcard::to_allocvec(&StoredObject {
            attrs,
            body: StoredBody::File(StoredIndex::Journaled {
                base: Box::new(base),
                writes,
            }),
        })
        .unwrap()
    }

    #[test]
    fn a_file_encodes_as_its_object_then_its_history_then_its_priors() {
        let mut obj = Object::empty(Kind::File, Attrs::new(0o644, 0, 0));
        let top = || StoredIndex::Inline(b"abc".to_vec());
        let parts = |o: &Object| {
            let c = o.content().unwrap();
            let mut b = postcard::to_allocvec(&StoredObject {
                attrs: o.attrs.clone(),
                body: StoredBody::File(top()),
            })
            .unwrap();
            b.extend(postcard::to_allocvec(&c.history).unwrap());
            if !c.priors.is_empty() {
                b.extend(postcard::to_allocvec(&c.priors).unwrap());
            }
            b
        };
        assert_eq!(encode_v2(&obj, Top::File(top())).unwrap(), parts(&obj));
        obj.content_mut()
            .unwrap()
            .priors
            .push(Link::fresh(Kind::File));
        let with_priors = encode_v2(&obj, Top::File(top())).unwrap();
        assert_eq!(with_priors, parts(&obj));
        let Decoded::Done(back) = decode_v2(&with_priors).unwrap() else {
            panic!("not decoded whole");
        };
        assert_eq!(back.content().unwrap().priors.len(), 1);
    }

    #[test]
    fn a_journal_round_trips_and_bad_ones_are_refused() {
        let mut j = Ranges::default();
        j.add(100, b"abc");
        j.add(9000, b"xyz");
        let mut obj = Object::empty(Kind::File, Attrs::new(0o644, 0, 0));
        obj.attrs.size = 20_000;
        obj.content_mut().unwrap().journal = j.clone();
        let top = Top::File(StoredIndex::with_journal(
            StoredIndex::Extents(Vec::new()),
            &j,
        ));
        let Decoded::Done(back) = decode_v2(&encode_v2(&obj, top).unwrap()).unwrap() else {
            panic!("not decoded whole");
        };
        assert_eq!(back.content().unwrap().journal, j);
        // No journal: the plain extents form, as before.
        let plain = StoredIndex::with_journal(StoredIndex::Extents(Vec::new()), &Ranges::default());
        assert_eq!(plain, StoredIndex::Extents(Vec::new()));
        // Overlapping writes, or a journal over inline bytes, are corrupt.
        let none = || StoredIndex::Extents(Vec::new());
        let bad = journaled(100, none(), vec![(0, vec![1; 4]), (2, vec![2; 4])]);
        assert!(matches!(decode_v2(&bad), Err(FsError::Corrupt(_))));
        let over_inline = journaled(10, StoredIndex::Inline(vec![1]), vec![(0, vec![2])]);
        assert!(matches!(decode_v2(&over_inline), Err(FsError::Corrupt(_))));
        // Bytes past the file's length are dropped, not shown later.
        let Decoded::Done(o) = decode_v2(&journaled(3, none(), vec![(1, vec![7; 4])])).unwrap()
        else {
            panic!("not decoded whole");
        };
        assert_eq!(
            o.content().unwrap().journal.to_pieces(),
            vec![(1, vec![7; 2])]
        );
    }

    #[test]
    fn v1_file_becomes_extents() {
        let o = v1::Object {
            attrs: v1::Attrs {
                mode: 0o640,
                uid: 1,
                gid: 2,
                size: CHUNK_SIZE as u64 * 2 + 10,
                atime: Time::default(),
                mtime: Time { secs: 5, nanos: 0 },
                ctime: Time::default(),
            },
            body: v1::Body::File {
                chunks: vec![
                    None,
                    Some(v1::Chunk {
                        block: Id([1; 32]),
                        len: 100,
                    }),
                ],
                inline: None,
            },
        };
        let obj = v1::decode(&postcard::to_allocvec(&o).unwrap()).unwrap();
        assert_eq!(obj.attrs.mode, 0o640);
        assert_eq!(obj.attrs.mtime.secs, 5);
        let c = obj.content().unwrap();
        let x: Vec<_> = c.extents.iter().copied().collect();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].offset, CHUNK_SIZE as u64);
        assert_eq!(x[0].block.seal, 1);
        assert_eq!(x[0].block.cipher, Cipher::XChaCha20Poly1305);
    }

    #[test]
    fn v2_round_trip() {
        let mut obj = Object::empty(Kind::Dir, Attrs::new(0o755, 0, 0));
        obj.entries_mut().unwrap().insert(
            b"a".to_vec(),
            Entry {
                link: Link::fresh(Kind::File),
                attrs: Some(Attrs::new(0o600, 1, 1)),
            },
        );
        let bytes = encode_v2(&obj, Top::None).unwrap();
        let Decoded::Done(back) = decode_v2(&bytes).unwrap() else {
            panic!("a directory decodes whole")
        };
        assert_eq!(back.entries(), obj.entries());
        assert!(decode_v2(&bytes[..bytes.len() / 2]).is_err());
    }
}
