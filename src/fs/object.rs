//! The objects of a file tree as they are stored: each file, directory and
//! symbolic link is one record, encrypted with the object's own key.
//!
//! A directory maps names to [`Link`]s (child record name, child key, kind),
//! so whoever can read a directory can read its children and nobody else
//! can. A file's content is a list of chunks, each an encrypted block; a
//! missing chunk is a hole that reads as zeros. A file of at most
//! [`INLINE_MAX`] bytes keeps them inline in its (encrypted) manifest. Chunk `i` covers bytes
//! `[i·CHUNK_SIZE, (i+1)·CHUNK_SIZE)`; CHUNK_SIZE leaves room for the seal
//! overhead inside the 1 MiB block limit.
//!
//! Record value = `seal(object key, postcard(Object), aad = record name)`.
//! Chunk block = `seal(object key, bytes, aad = record name ‖ index u64 BE)`.

use super::crypto::{SEAL_OVERHEAD, SecretKey};
use crate::id::Id;
use crate::item::MAX_BLOCK;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Plaintext bytes per chunk: 1 MiB less 4 KiB, page aligned, so a sealed
/// chunk fits a block.
pub const CHUNK_SIZE: usize = (1 << 20) - 4096;
const _: () = assert!(CHUNK_SIZE + SEAL_OVERHEAD <= MAX_BLOCK);

/// Files up to this size keep their bytes in the manifest record.
pub const INLINE_MAX: u64 = 8192;

/// Longest file name, in bytes (as ext4).
pub const MAX_NAME: usize = 255;

/// Most chunks in one file manifest (≈ 24 GiB), so a manifest record stays
/// under the 1 MiB record limit.
pub const MAX_CHUNKS: usize = 24 * 1024;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// A point in time, as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
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

/// One stored chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Key of the block holding the sealed chunk.
    pub block: Id,
    /// Plaintext length (CHUNK_SIZE except maybe for the last chunk).
    pub len: u32,
}

/// The type-specific part of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// File content: chunk `i` or a hole; or, for a small file, the bytes
    /// themselves (`inline`, with no chunks), saving a block per file.
    File {
        chunks: Vec<Option<Chunk>>,
        inline: Option<Vec<u8>>,
    },
    /// Directory entries by name.
    Dir { entries: BTreeMap<Vec<u8>, Link> },
    /// Symbolic link target.
    Symlink { target: Vec<u8> },
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub attrs: Attrs,
    pub body: Body,
}

impl Object {
    /// An empty object of `kind`.
    pub fn empty(kind: Kind, attrs: Attrs) -> Object {
        let body = match kind {
            Kind::File => Body::File {
                chunks: Vec::new(),
                inline: None,
            },
            Kind::Dir => Body::Dir {
                entries: BTreeMap::new(),
            },
            Kind::Symlink => Body::Symlink { target: Vec::new() },
        };
        Object { attrs, body }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::File { .. } => Kind::File,
            Body::Dir { .. } => Kind::Dir,
            Body::Symlink { .. } => Kind::Symlink,
        }
    }

    /// Directory entries, if a directory.
    pub fn entries(&self) -> Option<&BTreeMap<Vec<u8>, Link>> {
        match &self.body {
            Body::Dir { entries } => Some(entries),
            _ => None,
        }
    }

    /// The directory entry `name`: `NotDir` if this is not a directory,
    /// `NotFound` if it has no such entry.
    pub fn entry(&self, name: &[u8]) -> Result<Link, super::FsError> {
        self.entries()
            .ok_or(super::FsError::NotDir)?
            .get(name)
            .cloned()
            .ok_or(super::FsError::NotFound)
    }

    /// Mutable directory entries, if a directory.
    pub fn entries_mut(&mut self) -> Option<&mut BTreeMap<Vec<u8>, Link>> {
        match &mut self.body {
            Body::Dir { entries } => Some(entries),
            _ => None,
        }
    }
}

/// Associated data of chunk `index` of the object named `name`.
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
