//! Owners' releases kept as tombstones: in memory ([`ReleaseBook`]) and,
//! for the disk store, in an append-only log ([`ReleaseLog`]).
//!
//! A release is kept for [`RELEASE_TTL_MS`] after its time. While it is
//! kept, a claim it covers is refused (a replica that missed the release
//! cannot put the block back) and the release is handed to whoever offers
//! such a block, so it spreads to the replicas that missed it. After that
//! the owner's orphan check is the safety net.
//!
//! # `releases.log`
//!
//! A sequence of entries, each `u32` little-endian length n, then n bytes:
//! the postcard encoding of a [`Release`] (owner 32 bytes, time varint,
//! keys varint count × 32 bytes, sig varint 64 + 64 bytes). Every entry is
//! verified when the log is read; a torn or unverifiable tail is dropped.
//! On open, expired entries are dropped and the log rewritten atomically.

use super::StoreError;
use super::fsutil::{io_err, stage_with, sync_dir};
use crate::id::Id;
use crate::ownership::{Claim, Release};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long a release is kept (30 days).
pub const RELEASE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest log entry read back (a release of the most keys, with room).
const MAX_ENTRY: usize = 64 << 10;

/// The releases kept, by block key.
#[derive(Debug, Default)]
pub struct ReleaseBook {
    /// Per key, the newest release of each owner that named it.
    by_key: HashMap<Id, Vec<Arc<Release>>>,
}

impl ReleaseBook {
    /// Keeps `rel` for each of its keys (replacing an older one of the
    /// same owner).
    pub fn add(&mut self, rel: &Arc<Release>) {
        for key in &rel.keys {
            let list = self.by_key.entry(*key).or_default();
            match list.iter_mut().find(|r| r.owner == rel.owner) {
                Some(r) if r.time >= rel.time => {}
                Some(r) => *r = rel.clone(),
                None => list.push(rel.clone()),
            }
        }
    }

    /// The kept release that removes `claim` on block `key`, if any.
    pub fn covering(&self, key: Id, claim: &Claim) -> Option<Arc<Release>> {
        self.by_key
            .get(&key)?
            .iter()
            .find(|r| r.covers(claim))
            .cloned()
    }

    /// Forgets releases older than the TTL at `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        self.by_key.retain(|_, list| {
            list.retain(|r| !expired(r, now_ms));
            !list.is_empty()
        });
    }

    /// Keys with a kept release.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no release is kept.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

fn expired(r: &Release, now_ms: u64) -> bool {
    r.time.saturating_add(RELEASE_TTL_MS) < now_ms
}

/// The append-only log of releases under the store's root.
#[derive(Debug)]
pub struct ReleaseLog {
    path: PathBuf,
    file: File,
}

impl ReleaseLog {
    /// Opens (creating) the log at `path`, returning the releases still
    /// kept at `now_ms`. Rewrites the log if entries were dropped.
    pub fn open(path: &Path, now_ms: u64) -> Result<(ReleaseLog, Vec<Release>), StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", path, e)),
        };
        let (all, clean) = parse(&bytes);
        let kept: Vec<Release> = all.into_iter().filter(|r| !expired(r, now_ms)).collect();
        if !clean || dropped(&bytes, &kept) {
            rewrite(path, &kept)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_err("open", path, e))?;
        Ok((
            ReleaseLog {
                path: path.to_path_buf(),
                file,
            },
            kept,
        ))
    }

    /// Appends `rel` and syncs it: once this returns, the release
    /// survives a crash.
    pub fn append(&mut self, rel: &Release) -> Result<(), StoreError> {
        let entry = entry(rel);
        self.file
            .write_all(&entry)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err("append to", &self.path, e))
    }
}

/// Whether `kept` is not everything the log `bytes` holds.
fn dropped(bytes: &[u8], kept: &[Release]) -> bool {
    kept.iter().map(|r| entry(r).len()).sum::<usize>() != bytes.len()
}

fn entry(rel: &Release) -> Vec<u8> {
    let body = postcard::to_stdvec(rel).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The verified entries of a log, and whether all of it parsed.
fn parse(mut bytes: &[u8]) -> (Vec<Release>, bool) {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return (out, false);
        }
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if n > MAX_ENTRY || bytes.len() < 4 + n {
            return (out, false);
        }
        match postcard::from_bytes::<Release>(&bytes[4..4 + n]) {
            Ok(r) if r.verify().is_ok() => out.push(r),
            _ => {
                log::warn!("releases.log: an entry does not verify; dropping the rest");
                return (out, false);
            }
        }
        bytes = &bytes[4 + n..];
    }
    (out, true)
}

/// Replaces the log at `path` by `kept`, atomically.
fn rewrite(path: &Path, kept: &[Release]) -> Result<(), StoreError> {
    let bytes: Vec<u8> = kept.iter().flat_map(entry).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    let staged = stage_with(&dir.join("tmp"), &bytes, true)?;
    staged.commit(path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn sk(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn book_keeps_newest_per_owner_and_prunes() {
        let k = Id::hash(b"k");
        let mut book = ReleaseBook::default();
        book.add(&Arc::new(Release::sign(&sk(1), vec![k], 100)));
        book.add(&Arc::new(Release::sign(&sk(1), vec![k], 50)));
        assert!(book.covering(k, &Claim::sign(&sk(1), k, 100)).is_some());
        assert!(book.covering(k, &Claim::sign(&sk(1), k, 101)).is_none());
        assert!(book.covering(k, &Claim::sign(&sk(2), k, 1)).is_none());
        book.prune(100 + RELEASE_TTL_MS + 1);
        assert!(book.is_empty());
    }

    #[test]
    fn log_survives_reopen_and_drops_torn_and_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let path = dir.path().join("releases.log");
        let now = 10 * RELEASE_TTL_MS;
        let old = Release::sign(&sk(1), vec![Id::hash(b"a")], 1);
        let new = Release::sign(&sk(1), vec![Id::hash(b"b")], now);
        {
            let (mut log, kept) = ReleaseLog::open(&path, now).unwrap();
            assert!(kept.is_empty());
            log.append(&old).unwrap();
            log.append(&new).unwrap();
        }
        // A torn tail, as a crash mid-append leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (_, kept) = ReleaseLog::open(&path, now).unwrap();
        assert_eq!(kept, vec![new.clone()]);
        let (_, again) = ReleaseLog::open(&path, now).unwrap();
        assert_eq!(again, vec![new]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            entry(&again[0]).len()
        );
    }
}
