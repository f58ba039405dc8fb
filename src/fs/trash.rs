//! The trash: files a user deleted, kept for the retention period, then
//! freed.
//!
//! The trash is a directory like any other (sharded, merged, written
//! behind), at a record name and key derived from the identity and
//! reachable from no other directory. Deleting a file's last name (an
//! `rm`, or a `rename` over it) stores the name's removal first, then
//! marks the file's record as trashed (link count 0, and the name of its
//! trash entry in its [`History`](super::history::History)), then adds
//! the entry: `deleted time ‖ random ‖ postcard(machine, path)`, with the
//! file's link and attributes. A crash in between leaves the name, or a
//! file the orphan check frees, never a name of a file the trash frees.
//!
//! Restoring clears the mark, links the file at its old path (or another
//! one), then drops the entry. Emptying (by the user, or the orphan check
//! once the retention period passed) deletes a file only while its record
//! still carries that entry's mark, so a file restored, or deleted again
//! under a newer entry, is never freed through a stale one; then it
//! releases the blocks of the file and of all its kept versions.

use super::history::show_time;
use super::object::{Attrs, Entry, Kind, Link, Time};
use super::vault::Vault;
use super::{BlockStore, FsError, split_path};
use crate::id::Id;
use serde::Serialize;
use std::collections::HashSet;

/// Trash entries emptied at once.
const PURGE_PARALLEL: usize = 16;

/// A deleted file in the trash.
#[derive(Debug, Clone)]
pub struct TrashItem {
    /// Its entry's name in the trash directory.
    pub id: Vec<u8>,
    /// Where it was (`/dir/name`).
    pub path: String,
    /// When it was deleted (the deleting machine's clock).
    pub deleted: Time,
    /// The machine that deleted it.
    pub machine: String,
    pub link: Link,
    /// Its length when deleted.
    pub size: u64,
}

/// A trash item as listed for a user.
#[derive(Debug, Clone, Serialize)]
pub struct TrashListing {
    pub path: String,
    /// When it was deleted (RFC 3339, UTC).
    pub deleted: String,
    pub size: u64,
    pub machine: String,
}

impl TrashItem {
    /// How it is listed.
    pub fn listing(&self) -> TrashListing {
        TrashListing {
            path: self.path.clone(),
            deleted: show_time(self.deleted),
            size: self.size,
            machine: self.machine.clone(),
        }
    }
}

/// The entry name of a file deleted at `deleted` by `machine` from `path`:
/// sorted by time, unique.
fn entry_name(deleted: Time, machine: &str, path: &str) -> Vec<u8> {
    let mut n = Vec::with_capacity(24 + machine.len() + path.len());
    n.extend_from_slice(&(deleted.secs.max(0) as u64).to_be_bytes());
    n.extend_from_slice(&deleted.nanos.to_be_bytes());
    n.extend_from_slice(&rand::random::<u32>().to_be_bytes());
    // Serializing two strings into a Vec cannot fail.
    n.extend(postcard::to_allocvec(&(machine, path)).unwrap_or_default());
    n
}

/// The time, machine and path an entry name holds.
fn parse_entry_name(name: &[u8]) -> Option<(Time, String, String)> {
    if name.len() < 16 {
        return None;
    }
    let secs = u64::from_be_bytes(name[..8].try_into().ok()?) as i64;
    let nanos = u32::from_be_bytes(name[8..12].try_into().ok()?);
    let (machine, path): (String, String) = postcard::from_bytes(&name[16..]).ok()?;
    Some((Time { secs, nanos }, machine, path))
}

/// `path` as stored in the trash: `/a/b`.
pub fn normal_path(path: &str) -> Result<String, FsError> {
    let parts = split_path(path)?;
    if parts.is_empty() {
        return Err(FsError::Invalid("the root is not a file".into()));
    }
    Ok(parts
        .iter()
        .map(|p| format!("/{}", String::from_utf8_lossy(p)))
        .collect())
}

impl<S: BlockStore> Vault<S> {
    /// The trash directory.
    pub fn trash_link(&self) -> Link {
        Link {
            kind: Kind::Dir,
            name: self.identity().trash_name(),
            key: self.identity().trash_key(),
        }
    }

    /// Moves file `link`, whose last name (`path`) was just removed, to
    /// the trash: its record is saved as trashed, and its trash entry
    /// queued; the ticket of the trash's change. `Conflict` if its record
    /// changed since `seq`. The caller waits for the ticket without
    /// holding the object (an `rm -rf` has thousands of them waiting).
    pub(crate) async fn trash_file(
        &self,
        link: &Link,
        seq: u64,
        mut obj: super::Object,
        path: &str,
    ) -> Result<super::pending::DirTicket, FsError> {
        let id = entry_name(Time::now(), self.conflicts.machine(), path);
        let reusable = obj.blocks();
        obj.content_mut()?.history.trashed = Some(id.clone());
        obj.attrs.nlink = 0;
        obj.attrs.ctime = Time::now();
        self.resave(link, &mut obj, seq, &reusable).await?;
        let entry = Entry {
            link: link.clone(),
            attrs: Some(obj.attrs.clone()),
        };
        // Freed now: an async fn keeps its locals to its end, through the
        // queueing below.
        drop((obj, reusable));
        // Held: it waits up to `TRASH_DELAY` for the next entries, so an
        // `rm -rf` stores the trash's shards once per batch of many
        // removals rather than about one shard per removal (the trash's
        // names spread over all its shards). While `settle_all` runs
        // (`fsyncdir`, `syncfs`, unmount) it is stored at once.
        let add: super::pending::DirChange = Box::new(move |d| {
            let entries = d.entries_mut().ok_or(FsError::NotDir)?;
            entries.insert(id.clone(), entry.clone());
            Ok(())
        });
        self.queue_dir_change_held(&self.trash_link(), add, super::pending::TRASH_DELAY)
            .await
    }

    /// Everything in the trash, oldest first.
    pub async fn trash_items(&self) -> Result<Vec<TrashItem>, FsError> {
        let v = self.load(&self.trash_link()).await?;
        let mut items = Vec::new();
        for (name, e) in v.obj.entries().into_iter().flatten() {
            let Some((deleted, machine, path)) = parse_entry_name(name) else {
                log::warn!("a trash entry of no known form is skipped");
                continue;
            };
            items.push(TrashItem {
                id: name.clone(),
                path,
                deleted,
                machine,
                link: e.link.clone(),
                size: e.attrs.as_ref().map_or(0, |a| a.size),
            });
        }
        Ok(items)
    }

    /// Puts the newest deleted file that was at `path` back there, or at
    /// `to`, creating missing directories; the path it is at now.
    pub async fn trash_restore(&self, path: &str, to: Option<&str>) -> Result<String, FsError> {
        let path = normal_path(path)?;
        let items = self.trash_items().await?;
        let item = items.iter().rev().find(|i| i.path == path).ok_or_else(|| {
            FsError::Invalid(format!("nothing deleted from {path} is in the trash"))
        })?;
        let dest = normal_path(to.unwrap_or(&path))?;
        let (dir, leaf) = dest.rsplit_once('/').unwrap_or(("", &dest));
        let parent = self.mkdir_p(if dir.is_empty() { "/" } else { dir }).await?;
        let leaf = leaf.as_bytes().to_vec();
        if self.load(&parent).await?.obj.entry(&leaf).is_ok() {
            return Err(FsError::Exists);
        }
        let attrs = self
            .set_trash_mark(&item.link, Some(&item.id), None)
            .await?;
        let entry = Entry {
            link: item.link.clone(),
            attrs: Some(attrs),
        };
        let name = leaf.clone();
        let linked = self
            .update(&parent, move |d| {
                let entries = d.entries_mut().ok_or(FsError::NotDir)?;
                if entries.contains_key(&name) {
                    return Err(FsError::Exists);
                }
                entries.insert(name.clone(), entry.clone());
                super::vault::touch(&mut d.attrs);
                Ok(())
            })
            .await;
        if let Err(e) = linked {
            // Back into the trash as it was.
            if let Err(m) = self.set_trash_mark(&item.link, None, Some(&item.id)).await {
                log::warn!("a file not restored could not be marked trashed again: {m}");
            }
            return Err(e);
        }
        let id = item.id.clone();
        self.update(&self.trash_link(), move |d| {
            d.entries_mut().ok_or(FsError::NotDir)?.remove(&id);
            Ok(())
        })
        .await?;
        Ok(dest)
    }

    /// Sets file `link`'s trash mark from `from` to `to` (link count 0
    /// while marked, 1 when not), by compare-and-swap; its attributes
    /// after. `NotFound` if it is not marked `from`.
    async fn set_trash_mark(
        &self,
        link: &Link,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Attrs, FsError> {
        for _ in 0..super::vault::CAS_ATTEMPTS {
            let v = self.load(link).await?;
            let mut o = v.obj.clone();
            let c = o.content_mut()?;
            if c.history.trashed.as_deref() != from {
                return Err(FsError::Invalid(
                    "that file was restored or deleted again meanwhile".into(),
                ));
            }
            c.history.trashed = to.map(<[u8]>::to_vec);
            o.attrs.nlink = if to.is_some() { 0 } else { 1 };
            o.attrs.ctime = Time::now();
            let reusable = v.obj.blocks();
            match self.resave(link, &mut o, v.seq, &reusable).await {
                Ok(_) => return Ok(o.attrs),
                Err(FsError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Conflict(None))
    }

    /// Deletes every file in the trash and frees its blocks; how many.
    pub async fn trash_empty(&self) -> Result<usize, FsError> {
        let items = self.trash_items().await?;
        self.purge(items).await
    }

    /// Deletes the files deleted longer ago than the retention period;
    /// how many.
    pub async fn expire_trash(&self) -> Result<usize, FsError> {
        let cutoff = self.keep_cutoff();
        let items: Vec<TrashItem> = self
            .trash_items()
            .await?
            .into_iter()
            .filter(|i| i.deleted < cutoff)
            .collect();
        if items.is_empty() {
            return Ok(0);
        }
        self.purge(items).await
    }

    /// Deletes the files of `items` still marked as theirs, frees their
    /// blocks and their versions', then drops the entries.
    async fn purge(&self, items: Vec<TrashItem>) -> Result<usize, FsError> {
        let mut deleted = 0;
        for chunk in items.chunks(PURGE_PARALLEL) {
            let mut batch = Vec::with_capacity(chunk.len());
            for item in chunk {
                batch.push(self.purge_one(item));
            }
            for r in futures::future::join_all(batch).await {
                if r? {
                    deleted += 1;
                }
            }
        }
        let ids: HashSet<Vec<u8>> = items.into_iter().map(|i| i.id).collect();
        if !ids.is_empty() {
            self.update(&self.trash_link(), move |d| {
                let entries = d.entries_mut().ok_or(FsError::NotDir)?;
                for id in &ids {
                    entries.remove(id);
                }
                Ok(())
            })
            .await?;
        }
        Ok(deleted)
    }

    /// Deletes one trashed file if it still carries `item`'s mark; whether
    /// it did.
    async fn purge_one(&self, item: &TrashItem) -> Result<bool, FsError> {
        let v = match self.load(&item.link).await {
            Ok(v) => v,
            Err(FsError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let marked = v
            .obj
            .content()
            .is_some_and(|c| c.history.trashed.as_deref() == Some(&item.id[..]));
        if !marked {
            return Ok(false);
        }
        self.delete(&item.link).await?;
        self.release_file(&item.link, &v.obj).await;
        Ok(true)
    }

    /// Releases (behind) the blocks of deleted file `link` as last stored
    /// (`obj`) and of every version it kept.
    pub(crate) async fn release_file(&self, link: &Link, obj: &super::Object) {
        let mut blocks: HashSet<Id> = obj.blocks().into_iter().collect();
        if let Some(c) = obj.content()
            && !c.history.kept.is_empty()
        {
            match self.kept_blocks(link, &c.history, None).await {
                Ok(k) => blocks.extend(k),
                Err(e) => log::warn!(
                    "a deleted file's kept versions could not be read ({e}); the orphan check frees them"
                ),
            }
        }
        self.release_behind(blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::file::OpenFile;
    use crate::fs::mem_store::MemStore;
    use crate::fs::{Durability, Identity};
    use std::sync::Arc;

    async fn write(v: &Arc<Vault<MemStore>>, path: &str, data: &[u8]) -> Link {
        let (parent, name) = v.resolve_parent(path).await.unwrap();
        let link = match v.load(&parent).await.unwrap().obj.entry(&name) {
            Ok(l) => l,
            Err(_) => {
                v.create(&parent, &name, Kind::File, Attrs::new(0o644, 0, 0), None)
                    .await
                    .unwrap()
                    .0
            }
        };
        let mut f = OpenFile::open(v, link.clone()).await.unwrap();
        f.truncate(v, 0).await.unwrap();
        f.write(v, 0, data).await.unwrap();
        f.flush(v, Durability::Later).await.unwrap();
        link
    }

    async fn read(v: &Arc<Vault<MemStore>>, path: &str) -> Result<Vec<u8>, FsError> {
        let (link, st) = v.resolve(path).await?;
        let size = st.obj.attrs.size as usize;
        OpenFile::from_state(link, st).read(v, 0, size).await
    }

    fn held(store: &MemStore) -> usize {
        store.blocks.lock().unwrap().len()
    }

    /// A removal's trash entry waits to be batched with the next ones,
    /// but not when a settle (`fsyncdir`, unmount) waits for it.
    /// (On the runtime's virtual clock: the batching delay passes exactly,
    /// not by polling.)
    #[tokio::test(start_paused = true)]
    async fn a_trash_entry_is_batched_but_a_settle_does_not_wait_for_the_batch() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store.clone(), Identity::from_secret([7; 32]));
        let root = v.root();
        for name in ["a", "b"] {
            write(&v, &format!("/{name}.txt"), name.as_bytes()).await;
        }
        // A removal written behind, then settled: at once, and listed.
        v.remove_behind(&root, b"a.txt", false, Some("/a.txt"))
            .await
            .unwrap();
        let t0 = tokio::time::Instant::now();
        v.settle_all().await.unwrap();
        assert!(
            t0.elapsed() < super::super::pending::TRASH_DELAY,
            "settle_all waited out the trash's batching delay"
        );
        let paths = |items: Vec<TrashItem>| items.into_iter().map(|i| i.path).collect::<Vec<_>>();
        assert_eq!(paths(v.trash_items().await.unwrap()), ["/a.txt"]);
        // Without a settle, the entry waits for the batch, then is stored.
        v.remove_behind(&root, b"b.txt", false, Some("/b.txt"))
            .await
            .unwrap();
        let fresh = || Vault::new(store.clone(), Identity::from_secret([7; 32]));
        assert_eq!(fresh().trash_items().await.unwrap().len(), 1, "batched");
        tokio::time::sleep(super::super::pending::TRASH_DELAY * 2).await;
        assert_eq!(
            fresh().trash_items().await.unwrap().len(),
            2,
            "the batched entry is stored once the delay has passed"
        );
    }

    /// An unlink into the trash returns once the file's record is saved
    /// and its entry queued, not after the trash's batching delay (a
    /// removal written behind frees its state before that wait); its
    /// `finish` waits for the entry to be stored.
    #[tokio::test(start_paused = true)]
    async fn an_unlink_returns_before_its_trash_entry_is_stored_and_finish_waits_for_it() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store.clone(), Identity::from_secret([7; 32]));
        let link = write(&v, "/a.txt", b"a").await;
        let delay = super::super::pending::TRASH_DELAY;
        let t0 = tokio::time::Instant::now();
        let unlinked = v.begin_unlink(&link, Some("/a.txt")).await.unwrap();
        assert!(t0.elapsed() < delay, "the unlink waited for the batch");
        let fresh = || Vault::new(store.clone(), Identity::from_secret([7; 32]));
        assert!(
            fresh().trash_items().await.unwrap().is_empty(),
            "the entry was stored before its batch"
        );
        assert!(unlinked.finish().await.unwrap(), "its last name went");
        assert!(t0.elapsed() >= delay, "finish did not wait for the batch");
        let items = fresh().trash_items().await.unwrap();
        assert_eq!(
            items.into_iter().map(|i| i.path).collect::<Vec<_>>(),
            ["/a.txt"]
        );
    }

    #[tokio::test]
    async fn deleted_files_are_restored_with_their_versions_and_emptying_frees_them() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store.clone(), Identity::from_secret([7; 32]));
        let dir = v.mkdir_p("/docs").await.unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write(&v, "/docs/a.txt", &big).await;
        write(&v, "/docs/a.txt", b"second").await;
        write(&v, "/b.txt", b"bee").await;
        v.remove(&dir, b"a.txt", false, Some("/docs/a.txt"))
            .await
            .unwrap();
        let root = v.root();
        v.remove(&root, b"b.txt", false, Some("/b.txt"))
            .await
            .unwrap();
        v.remove(&root, b"docs", true, None).await.unwrap();
        v.settle_all().await.unwrap();
        assert_eq!(
            read(&v, "/docs/a.txt").await.unwrap_err(),
            FsError::NotFound
        );
        let items = v.trash_items().await.unwrap();
        let paths: Vec<&str> = items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["/docs/a.txt", "/b.txt"]);
        assert_eq!(items[0].size, 6);
        // Nothing of a file in the trash is freed.
        let blocks = held(&store);
        assert!(blocks > 0);
        // Restored, with its directory made again, and its versions.
        assert_eq!(
            v.trash_restore("docs/a.txt", None).await.unwrap(),
            "/docs/a.txt"
        );
        assert_eq!(read(&v, "/docs/a.txt").await.unwrap(), b"second");
        let (link, st) = v.resolve("/docs/a.txt").await.unwrap();
        assert_eq!(st.obj.attrs.nlink, 1);
        assert_eq!(v.versions(&link, &st.obj).await.unwrap().len(), 2);
        let old = v.load_version(&link, st.obj.clone(), 1).await.unwrap();
        assert_eq!(old.attrs.size, big.len() as u64);
        assert_eq!(v.trash_items().await.unwrap().len(), 1);
        // A name taken is not overwritten: restore elsewhere instead.
        write(&v, "/b.txt", b"new bee").await;
        assert_eq!(
            v.trash_restore("/b.txt", None).await.unwrap_err(),
            FsError::Exists
        );
        v.trash_restore("/b.txt", Some("/old-b.txt")).await.unwrap();
        assert_eq!(read(&v, "/old-b.txt").await.unwrap(), b"bee");
        assert_eq!(read(&v, "/b.txt").await.unwrap(), b"new bee");
        assert!(
            v.trash_restore("/b.txt", None).await.is_err(),
            "nothing left to restore"
        );
        // Deleted again and emptied: every block of it and its versions goes.
        let dir = v.resolve("/docs").await.unwrap().0;
        v.remove(&dir, b"a.txt", false, Some("/docs/a.txt"))
            .await
            .unwrap();
        v.settle_all().await.unwrap();
        assert_eq!(v.trash_empty().await.unwrap(), 1);
        v.settle_all().await.unwrap();
        assert!(v.trash_items().await.unwrap().is_empty());
        assert_eq!(held(&store), 0, "the 3 MB version's blocks are freed");
        assert_eq!(v.load(&link).await.unwrap_err(), FsError::NotFound);
    }

    #[tokio::test]
    async fn the_trash_expires_and_the_walk_keeps_only_what_is_retained() {
        let store = Arc::new(MemStore::default());
        let v = Vault::new(store.clone(), Identity::from_secret([8; 32]));
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 13) as u8).collect();
        let link = write(&v, "/f", &big).await;
        write(&v, "/f", b"small now").await;
        write(&v, "/g", &big).await;
        v.remove(&v.root(), b"g", false, Some("/g")).await.unwrap();
        v.settle_all().await.unwrap();
        let all: HashSet<Id> = store.blocks.lock().unwrap().keys().copied().collect();
        // Within the retention period everything stored is live.
        assert_eq!(v.live_blocks().await.unwrap(), all);
        assert_eq!(v.expire_trash().await.unwrap(), 0);
        // Past it: the trash is emptied, and f's old version is not live.
        // (Times have nanoseconds: the deletion is before "now".)
        v.set_retention(std::time::Duration::ZERO);
        assert_eq!(v.expire_trash().await.unwrap(), 1);
        v.settle_all().await.unwrap();
        let live = v.live_blocks().await.unwrap();
        let cur = v.load(&link).await.unwrap();
        assert!(live.is_empty(), "f is inline now: {} live", live.len());
        assert!(cur.obj.blocks().is_empty());
        assert!(
            held(&store) > 0,
            "the old version is left to the orphan check"
        );
    }

    #[test]
    fn entry_names_sort_by_time_and_parse_back() {
        let a = entry_name(
            Time {
                secs: 100,
                nanos: 5,
            },
            "box-1a2b3c",
            "/a/b.txt",
        );
        let b = entry_name(
            Time {
                secs: 101,
                nanos: 0,
            },
            "x",
            "/z",
        );
        assert!(a < b);
        let (t, m, p) = parse_entry_name(&a).unwrap();
        assert_eq!(
            (t.secs, t.nanos, m.as_str(), p.as_str()),
            (100, 5, "box-1a2b3c", "/a/b.txt")
        );
        assert!(parse_entry_name(b"short").is_none());
        assert_eq!(normal_path("a//b/").unwrap(), "/a/b");
        assert!(normal_path("/").is_err());
    }
}
