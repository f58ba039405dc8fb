//! The objects of a file tree as this program holds them: each file,
//! directory, symbolic link and special file is one record (and a
//! directory's shards, a file's index and content blocks hang off it),
//! encrypted with the object's own key. How they are stored, byte by
//! byte, is [`super::format`].
//!
//! A directory maps names to [`Entry`]s: a [`Link`] (child record name,
//! child key, kind), so whoever can read a directory can read its children
//! and nobody else can, and a copy of the child's attributes for listings.
//! A file's content is an [`ExtentMap`] over encrypted blocks (bytes no
//! extent covers read as zeros) with a journal of small writes on top,
//! kept in the record; a file of at most [`INLINE_MAX`] bytes keeps all
//! its bytes inline in its record instead.

use super::crypto::{GCM_OVERHEAD, SEAL_OVERHEAD, SecretKey};
use super::extents::{BlockRef, Extent, ExtentMap};
use super::ranges::Ranges;
use crate::item::MAX_BLOCK;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most plaintext bytes in one content block: 1 MiB less 4 KiB, page
/// aligned, so a sealed block fits the ring's block limit. (Format v1 cut
/// files into chunks of exactly this size.)
pub const CHUNK_SIZE: usize = (1 << 20) - 4096;
const _: () = assert!(CHUNK_SIZE + SEAL_OVERHEAD <= MAX_BLOCK);
const _: () = assert!(CHUNK_SIZE + GCM_OVERHEAD <= MAX_BLOCK);

/// Files up to this size keep their bytes in the manifest record.
pub const INLINE_MAX: u64 = 8192;

/// A larger file keeps its small writes in its record (its journal) while
/// they total at most this many bytes; a save that would pass it moves
/// the journal into a block instead (also after merging another writer's
/// journal).
pub const JOURNAL_MAX: usize = 16 << 10;

/// While a full journal is being moved into a block behind an `fsync`
/// (so that the `fsync` waits only for the record), the records saved
/// meanwhile carry it and the writes since, at most this many bytes.
pub const JOURNAL_CARRY: usize = 2 * JOURNAL_MAX;

/// Longest file name, in bytes (as ext4).
pub const MAX_NAME: usize = 255;

/// Largest file size (as ext4 with 4 KiB blocks: 16 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 44;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A named pipe (`mkfifo`): only its attributes are stored.
    Fifo,
    /// A Unix socket's name (`mknod S_IFSOCK`, `bind`): attributes only.
    Socket,
}

/// A point in time, as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// Seconds added to this machine's clock wherever it stamps a time (see
/// [`set_clock_skew`]).
static CLOCK_SKEW_SECS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts the times this process stamps (file times, conflict copies'
/// names) by `secs`: a machine whose clock is off, for tests that show
/// nothing depends on clocks agreeing.
pub fn set_clock_skew(secs: i64) {
    CLOCK_SKEW_SECS.store(secs, std::sync::atomic::Ordering::Relaxed);
}

impl Time {
    /// The current time (by this machine's clock, see [`set_clock_skew`]).
    pub fn now() -> Time {
        let t = Time::from_system(SystemTime::now());
        Time {
            secs: t.secs + CLOCK_SKEW_SECS.load(std::sync::atomic::Ordering::Relaxed),
            ..t
        }
    }

    /// As a `jiff` timestamp (the epoch if out of its range).
    pub fn timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::new(self.secs, self.nanos as i32).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// From a `SystemTime` (times before 1970 are negative).
    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time { secs, nanos }
            }
        }
    }

    /// As a `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs())
                + std::time::Duration::from_nanos(self.nanos as u64)
        }
    }
}

/// POSIX attributes kept with every object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits (and setuid/setgid/sticky), without the type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File length in bytes (symlink: target length; directory: 0).
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Names linking to the object (a directory: 2 + its subdirectories,
    /// computed when it is loaded).
    pub nlink: u32,
}

impl Attrs {
    /// Fresh attributes stamped now.
    pub fn new(mode: u32, uid: u32, gid: u32) -> Attrs {
        let now = Time::now();
        Attrs {
            mode: mode & 0o7777,
            uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
        }
    }
}

/// How a directory refers to a child: enough to find and decrypt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub kind: Kind,
    /// The child's record name (random, reveals nothing).
    pub name: Vec<u8>,
    /// The child's encryption key.
    pub key: SecretKey,
}

impl Link {
    /// A link to a new object of `kind` with a fresh name and key.
    pub fn fresh(kind: Kind) -> Link {
        Link {
            kind,
            name: SecretKey::random().0[..16].to_vec(),
            key: SecretKey::random(),
        }
    }
}

/// A directory entry: the child's link and, for listings, a copy of its
/// attributes as of the last change made through this entry (`None` in
/// directories converted from format v1, whose entries carried none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub link: Link,
    pub attrs: Option<Attrs>,
}

impl Entry {
    /// An entry for `link` without an attribute copy.
    pub fn bare(link: Link) -> Entry {
        Entry { link, attrs: None }
    }
}

/// A file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileContent {
    /// A small file's bytes, kept in its record (then `extents` is empty).
    pub inline: Option<Vec<u8>>,
    /// Where the bytes are.
    pub extents: ExtentMap,
    /// The blocks of the stored index tree this content was loaded from
    /// or saved as (none while the index fits the record).
    pub index_blocks: Vec<BlockRef>,
    /// Small writes kept in the record, over the extents (empty for an
    /// inline file): a small `write` + `fsync` stores one record, not a
    /// block, index nodes and a record.
    pub journal: Ranges,
    /// This version's number, the versions it keeps and its trash mark
    /// ([`super::history`]).
    pub history: super::history::History,
    /// The record names and keys the file had before re-keys that left
    /// its content blocks as they were (a revoked share, see
    /// [`super::rekey`]), newest first: a block that does not open under
    /// the file's own link opens under one of these. The next save that
    /// changes the content seals every block under the file's own key and
    /// empties this.
    pub priors: Vec<Link>,
    /// The extents as the stored index tree holds them, if the index is
    /// a tree: a save lays the extents changed since over it in the
    /// record ([`super::index`]) instead of storing new tree nodes.
    pub tree: TreeBase,
}

/// The extents a file's stored index tree holds (`None`: no tree, or not
/// known). How the content was stored, not what it is: two contents equal
/// in every other part are equal whatever their bases.
#[derive(Debug, Clone, Default)]
pub struct TreeBase(Option<Box<ExtentMap>>);

impl TreeBase {
    pub fn new(tree: Option<ExtentMap>) -> TreeBase {
        TreeBase(tree.map(Box::new))
    }

    pub fn get(&self) -> Option<&ExtentMap> {
        self.0.as_deref()
    }
}

impl PartialEq for TreeBase {
    fn eq(&self, _: &TreeBase) -> bool {
        true
    }
}

impl Eq for TreeBase {}

impl FileContent {
    /// Lays `e` over the content (over the journal too).
    pub fn lay(&mut self, e: Extent) {
        self.journal.cut(e.offset, e.end());
        self.extents.insert(e);
    }

    /// Drops the content at and past `size`.
    pub fn truncate(&mut self, size: u64) {
        self.journal.truncate(size);
        self.extents.truncate(size);
    }
}

/// A directory's entries by name: a persistent map, so copies of a large
/// directory (views, cached versions, the version being saved) share
/// their structure and a change copies O(log n), not the whole map.
pub type Entries = imbl::OrdMap<Vec<u8>, Entry>;

/// The type-specific part of an object.
// A file's content is the body of most objects, held one per object (not
// in arrays): boxing it would add an allocation per object for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    File(FileContent),
    /// Directory entries by name.
    Dir {
        entries: Entries,
    },
    /// Symbolic link target.
    Symlink {
        target: Vec<u8>,
    },
    /// A fifo or socket: nothing but attributes.
    Special,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub attrs: Attrs,
    pub body: Body,
}

impl Object {
    /// The blocks this version refers to: a file's content blocks and the
    /// blocks of its index tree (none for other objects).
    pub fn blocks(&self) -> crate::id::IdSet {
        match &self.body {
            Body::File(c) => c
                .extents
                .iter()
                .map(|e| e.block.key)
                .chain(c.index_blocks.iter().map(|b| b.key))
                .collect(),
            _ => Default::default(),
        }
    }

    /// An empty object of `kind`.
    pub fn empty(kind: Kind, attrs: Attrs) -> Object {
        let body = match kind {
            Kind::File => Body::File(FileContent::default()),
            Kind::Dir => Body::Dir {
                entries: Entries::new(),
            },
            Kind::Symlink => Body::Symlink { target: Vec::new() },
            Kind::Fifo | Kind::Socket => Body::Special,
        };
        Object { attrs, body }
    }

    /// Whether the body can be that of an object of `kind`.
    pub fn fits(&self, kind: Kind) -> bool {
        matches!(
            (&self.body, kind),
            (Body::File(_), Kind::File)
                | (Body::Dir { .. }, Kind::Dir)
                | (Body::Symlink { .. }, Kind::Symlink)
                | (Body::Special, Kind::Fifo | Kind::Socket)
        )
    }

    /// Directory entries, if a directory.
    pub fn entries(&self) -> Option<&Entries> {
        match &self.body {
            Body::Dir { entries } => Some(entries),
            _ => None,
        }
    }

    /// The directory entry `name`: `NotDir` if this is not a directory,
    /// `NotFound` if it has no such entry.
    pub fn entry(&self, name: &[u8]) -> Result<Link, super::FsError> {
        self.dir_entry(name).map(|e| e.link.clone())
    }

    /// The directory entry `name` with its attribute copy; errors as
    /// [`entry`](Self::entry).
    pub fn dir_entry(&self, name: &[u8]) -> Result<&Entry, super::FsError> {
        self.entries()
            .ok_or(super::FsError::NotDir)?
            .get(name)
            .ok_or(super::FsError::NotFound)
    }

    /// Mutable directory entries, if a directory.
    pub fn entries_mut(&mut self) -> Option<&mut Entries> {
        match &mut self.body {
            Body::Dir { entries } => Some(entries),
            _ => None,
        }
    }

    /// Whether this is a file in the trash ([`super::trash`]).
    pub fn is_trashed(&self) -> bool {
        self.content().is_some_and(|c| c.history.trashed.is_some())
    }

    /// A file's content, if a file.
    pub fn content(&self) -> Option<&FileContent> {
        match &self.body {
            Body::File(c) => Some(c),
            _ => None,
        }
    }

    /// A file's content to change; `IsDir` or `Invalid` otherwise.
    pub fn content_mut(&mut self) -> Result<&mut FileContent, super::FsError> {
        match &mut self.body {
            Body::File(c) => Ok(c),
            Body::Dir { .. } => Err(super::FsError::IsDir),
            _ => Err(super::FsError::Invalid("not a regular file".into())),
        }
    }
}

/// Associated data of content block `seal` of the object named `name`
/// (format v1: chunk number `seal`).
pub fn chunk_aad(name: &[u8], index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name.len() + 8);
    aad.extend_from_slice(name);
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_including_before_epoch() {
        for t in [
            UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123),
            UNIX_EPOCH - std::time::Duration::new(5, 250_000_000),
        ] {
            assert_eq!(Time::from_system(t).to_system(), t);
        }
    }

    #[test]
    fn fresh_links_differ() {
        let a = Link::fresh(Kind::File);
        let b = Link::fresh(Kind::File);
        assert_ne!(a.name, b.name);
        assert_ne!(a.key, b.key);
        assert_eq!(a.name.len(), 16);
    }
}
