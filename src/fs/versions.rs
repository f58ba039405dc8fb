//! Kept versions of files, through the vault: keeping the version a save
//! replaces, listing a file's versions, reading one back, and the blocks
//! they hold on to (for the owner's orphan check). The layout is
//! [`super::history`]'s.

use super::format::{Decoded, decode_v2};
use super::history::{
    History, Kept, TAG_V2, VersionInfo, cutoff, open_version, seal_version, show_time,
};
use super::object::{Link, Object, Time};
use super::vault::Vault;
use super::{BlockStore, Durability, FsError};
use crate::id::Id;
use std::collections::HashSet;

/// Attempts to store a version block.
const VERSION_PUT_TRIES: usize = 3;

/// The history stored in a tagged record plaintext (none in format v1).
pub fn history_of(tagged: &[u8]) -> Result<History, FsError> {
    match tagged.split_first() {
        Some((&TAG_V2, plain)) => Ok(match decode_v2(plain)? {
            Decoded::Done(o) => o.content().map(|c| c.history.clone()).unwrap_or_default(),
            Decoded::FileTree { history, .. } => history,
            Decoded::DirSplit { .. } => History::default(),
        }),
        _ => Ok(History::default()),
    }
}

impl<S: BlockStore> Vault<S> {
    /// The earliest replacement time of a version still kept.
    pub fn keep_cutoff(&self) -> Time {
        cutoff(self.retention())
    }

    /// Whether replaced versions and deleted files are kept at all.
    pub fn keeps_versions(&self) -> bool {
        !self.retention().is_zero()
    }

    /// The version block of version `seq` of file `link` (`plain`, its
    /// tagged plaintext as read), which a save is about to replace: its
    /// key and sealed bytes, for [`Vault::put_version_block`].
    pub(crate) async fn version_block(
        &self,
        link: &Link,
        seq: u64,
        plain: Option<std::sync::Arc<Vec<u8>>>,
    ) -> Result<(Id, Vec<u8>), FsError> {
        let tagged = match plain {
            Some(p) => p,
            None => {
                // Not read here (made by this process): read it as stored.
                let stored = self.load_stored(link).await?;
                match stored.plain {
                    Some(p) if stored.seq == seq => p,
                    _ => return Err(FsError::Conflict(None)),
                }
            }
        };
        let sealed = seal_version(link, &tagged);
        Ok((Id::of_block(&sealed), sealed))
    }

    /// Stores a version block (sent at the same time as the record that
    /// lists it: a failure loses that version, never the file, so it is
    /// tried again before giving up).
    pub(crate) async fn put_version_block(
        &self,
        key: Id,
        sealed: Vec<u8>,
        durability: Durability,
    ) -> Result<(), FsError> {
        let mut last = None;
        for _ in 0..VERSION_PUT_TRIES {
            let claim = self.identity().claim(key);
            match self
                .store
                .put_block(key, sealed.clone(), claim, durability)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(FsError::Conflict(None)))
    }

    /// The kept versions of file `link` listed from `history`, newest
    /// first, with their tagged record plaintext: down to the first one
    /// replaced before `cutoff` (if given) or no longer stored, or to
    /// version `until`.
    async fn walk_kept(
        &self,
        link: &Link,
        history: &History,
        cutoff: Option<Time>,
        until: Option<u64>,
    ) -> Result<Vec<(Kept, Vec<u8>)>, FsError> {
        let mut out: Vec<(Kept, Vec<u8>)> = Vec::new();
        let mut list = history.kept.clone();
        let mut below = u64::MAX;
        loop {
            let before = out.len();
            for k in list {
                // Numbers only go down along the chain (a loop is corrupt).
                if k.number >= below {
                    continue;
                }
                if cutoff.is_some_and(|c| k.replaced < c) {
                    return Ok(out);
                }
                let sealed = match self.store.get_block(k.block).await {
                    Ok(b) => b,
                    // Let go by an orphan check (retention ended).
                    Err(FsError::NotFound) => return Ok(out),
                    Err(e) => return Err(e),
                };
                let tagged = open_version(link, &sealed)?;
                below = k.number;
                let done = until.is_some_and(|n| k.number <= n);
                out.push((k, tagged));
                if done {
                    return Ok(out);
                }
            }
            if out.len() == before {
                return Ok(out);
            }
            list = match out.last() {
                Some((_, t)) => history_of(t)?.kept,
                None => return Ok(out),
            };
        }
    }

    /// The versions of file `link`, oldest first, `current` (its object
    /// as just loaded) last.
    pub async fn versions(
        &self,
        link: &Link,
        current: &Object,
    ) -> Result<Vec<VersionInfo>, FsError> {
        let c = current.content().ok_or(FsError::IsDir)?;
        let mut out = vec![VersionInfo {
            version: c.history.number(),
            time: show_time(if c.history.number == 0 {
                current.attrs.mtime
            } else {
                c.history.saved
            }),
            size: current.attrs.size,
            machine: c.history.machine.clone(),
            current: true,
        }];
        for (k, _) in self.walk_kept(link, &c.history, None, None).await? {
            out.push(VersionInfo {
                version: k.number,
                time: show_time(k.saved),
                size: k.size,
                machine: k.machine,
                current: false,
            });
        }
        out.reverse();
        Ok(out)
    }

    /// Version `number` of file `link` (`current` itself too: its object
    /// as just loaded), decoded.
    pub async fn load_version(
        &self,
        link: &Link,
        current: Object,
        number: u64,
    ) -> Result<Object, FsError> {
        let c = current.content().ok_or(FsError::IsDir)?;
        if c.history.number() == number {
            return Ok(current);
        }
        let tagged = self
            .walk_kept(link, &c.history, None, Some(number))
            .await?
            .into_iter()
            .find(|(k, _)| k.number == number)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                FsError::Invalid(format!(
                    "no version {number} is kept (see `peerstore versions`)"
                ))
            })?;
        let (obj, _) = self.decode_plain(link, &tagged, 0).await?;
        if obj.content().is_none() {
            return Err(FsError::Corrupt("a kept version is not a file".into()));
        }
        Ok(obj)
    }

    /// The blocks the kept versions of file `link` hold on to (their
    /// version blocks, content and index blocks), for versions replaced
    /// at or after `cutoff` (every version stored, without one).
    pub(crate) async fn kept_blocks(
        &self,
        link: &Link,
        history: &History,
        cutoff: Option<Time>,
    ) -> Result<HashSet<Id>, FsError> {
        let mut blocks = HashSet::new();
        for (k, tagged) in self.walk_kept(link, history, cutoff, None).await? {
            blocks.insert(k.block);
            let (obj, _) = self.decode_plain(link, &tagged, 0).await?;
            blocks.extend(obj.blocks());
        }
        Ok(blocks)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fs::Identity;
    use crate::fs::file::OpenFile;
    use crate::fs::mem_store::MemStore;
    use crate::fs::object::{Attrs, Kind};
    use crate::fs::vault::Versioned;
    use std::sync::Arc;

    async fn file(v: &Arc<Vault<MemStore>>, name: &[u8]) -> Link {
        let (link, _) = v
            .create(&v.root(), name, Kind::File, Attrs::new(0o644, 0, 0), None)
            .await
            .unwrap();
        link
    }

    /// Opens `link`, writes `data` over it whole, closes it.
    async fn overwrite(v: &Arc<Vault<MemStore>>, link: &Link, data: &[u8]) {
        let mut f = OpenFile::open(v, link.clone()).await.unwrap();
        f.truncate(v, 0).await.unwrap();
        f.write(v, 0, data).await.unwrap();
        f.flush(v, Durability::Later).await.unwrap();
    }

    /// The file as stored now.
    pub(crate) async fn now(v: &Arc<Vault<MemStore>>, link: &Link) -> Object {
        v.load(link).await.unwrap().obj
    }

    async fn content(v: &Arc<Vault<MemStore>>, link: &Link, obj: Object) -> Vec<u8> {
        let size = obj.attrs.size as usize;
        let mut f = OpenFile::from_state(link.clone(), Versioned::new(obj, 0));
        f.read(v, 0, size).await.unwrap()
    }

    #[tokio::test]
    async fn every_overwrite_keeps_the_version_it_replaced() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store.clone(), Identity::from_secret([4; 32]));
        let link = file(&v, b"f").await;
        // Small, inline, and large versions (index in blocks), 40 of them:
        // more than one record lists.
        let body = |i: usize| -> Vec<u8> {
            let len = if i.is_multiple_of(3) {
                3 << 20
            } else {
                100 + i
            };
            (0..len).map(|b| (b * 7 + i) as u8).collect()
        };
        for i in 0..40 {
            overwrite(&v, &link, &body(i)).await;
        }
        v.settle_all().await.unwrap();
        let list = v.versions(&link, &now(&v, &link).await).await.unwrap();
        assert_eq!(list.len(), 40);
        assert_eq!(
            list.iter().map(|i| i.version).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>()
        );
        assert!(list[39].current && !list[38].current);
        for (i, info) in list.iter().enumerate() {
            assert_eq!(info.size, body(i).len() as u64, "version {}", i + 1);
        }
        for n in [1u64, 2, 17, 34, 40] {
            let obj = v
                .load_version(&link, now(&v, &link).await, n)
                .await
                .unwrap();
            assert_eq!(
                content(&v, &link, obj).await,
                body(n as usize - 1),
                "version {n}"
            );
        }
        assert!(
            v.load_version(&link, now(&v, &link).await, 41)
                .await
                .is_err()
        );
        // Every block a kept version needs is still stored.
        let cur = v.load(&link).await.unwrap();
        let kept = v
            .kept_blocks(&link, &cur.obj.content().unwrap().history, None)
            .await
            .unwrap();
        let held: HashSet<Id> = store.blocks.lock().unwrap().keys().copied().collect();
        assert!(kept.is_subset(&held));
        assert!(kept.len() > 40);
    }

    #[tokio::test]
    async fn saves_of_one_open_keep_one_version_and_attribute_changes_none() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store, Identity::from_secret([5; 32]));
        let link = file(&v, b"db").await;
        overwrite(&v, &link, &[1; 20_000]).await;
        // One open, 50 small writes each followed by fsync.
        let mut f = OpenFile::open(&v, link.clone()).await.unwrap();
        for i in 0..50u64 {
            f.write(&v, i * 100, &[2; 10]).await.unwrap();
            f.flush(&v, Durability::Now).await.unwrap();
        }
        f.touch_attrs();
        f.state.obj.attrs.mode = 0o600;
        f.flush(&v, Durability::Later).await.unwrap();
        // A new open that only changes the mode keeps nothing either.
        let mut g = OpenFile::open(&v, link.clone()).await.unwrap();
        g.state.obj.attrs.mode = 0o640;
        g.touch_attrs();
        g.flush(&v, Durability::Later).await.unwrap();
        let list = v.versions(&link, &now(&v, &link).await).await.unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].size, 20_000);
    }

    #[tokio::test]
    async fn a_file_created_empty_keeps_no_empty_version() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store, Identity::from_secret([3; 32]));
        let link = file(&v, b"new").await;
        // `touch new`: an empty record is saved.
        let mut f = OpenFile::open(&v, link.clone()).await.unwrap();
        f.touch_attrs();
        f.flush(&v, Durability::Later).await.unwrap();
        overwrite(&v, &link, b"one").await;
        overwrite(&v, &link, b"two").await;
        let list = v.versions(&link, &now(&v, &link).await).await.unwrap();
        let sizes: Vec<u64> = list.iter().map(|i| i.size).collect();
        assert_eq!(sizes, [3, 3], "{list:?}");
        assert!(list.iter().all(|i| !i.machine.is_empty()));
    }

    #[tokio::test]
    async fn with_no_retention_nothing_is_kept() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store, Identity::from_secret([6; 32]));
        v.set_retention(std::time::Duration::ZERO);
        let link = file(&v, b"f").await;
        for i in 0..5u8 {
            overwrite(&v, &link, &[i; 100]).await;
        }
        assert_eq!(
            v.versions(&link, &now(&v, &link).await)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
