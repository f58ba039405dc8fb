//! Merging the concurrent versions of a record that storage nodes keep
//! after a partition heals ([`crate::clock`]): what a directory or file
//! looks like once both sides' changes meet.
//!
//! A directory's versions merge entry by entry, with no common ancestor
//! needed: a name in every version stays (the head's entry); a name some
//! versions lack was added on one side or removed on the other, and the
//! child tells which. It was removed if its record is deleted (a delete
//! tombstones the object) or if a version lacking the name holds its
//! object under another name (a rename is a delete plus an add);
//! otherwise it was added and stays. (Which of two names of one object
//! is the newer is told by the entries' ctimes, which a rename stamps: with
//! clocks far apart the older name may be the one kept, never both lost.) A child changed on one side and
//! deleted on the other has a live version, so it stays: nothing is lost
//! without the user deleting it. One name for different objects keeps
//! the head's under the name and the others under conflict names.
//!
//! A file's versions do not merge: the head (highest sequence number,
//! then signature, the same on every node) keeps the name, and every
//! other live version is copied into a conflict copy next to it, after
//! which the head is saved again above all of them ([`Vault::resolve_file`]).
//! A deleted file changed on the other side comes back with the change.

use super::divergence::conflict_name;
use super::file::OpenFile;
use super::object::{Entries, Entry, Kind, Link, Time};
use super::vault::{Vault, Versioned};
use super::{BlockStore, Durability, FsError};
use crate::record::Record;
use std::collections::HashSet;

/// The top of one directory version.
enum DirPeek {
    Leaf(Entries),
    Split(u64),
    Other,
}

/// The writer that made `sib`'s saves that `winner` did not see: the one
/// with the most of them (ties: the larger tag); any of its writers if
/// none.
fn distinct_writer(sib: &Record, winner: &Record) -> u64 {
    sib.clock
        .pairs()
        .iter()
        .map(|&(w, n)| (n.saturating_sub(winner.clock.get(w)), w))
        .max()
        .map_or(0, |(_, w)| w)
}

/// Whether name `a` of an object replaced name `b` of it: its entry's
/// ctime is later (ties: the larger name, so exactly one is kept). An
/// entry without attributes replaces nothing: both names stay.
fn renamed_later(a: (&Vec<u8>, &Entry), b: (&Vec<u8>, &Entry)) -> bool {
    match (&a.1.attrs, &b.1.attrs) {
        (Some(x), Some(y)) => (x.ctime, a.0) > (y.ctime, b.0),
        _ => false,
    }
}

/// Files of merged directories remembered as checked for concurrent
/// versions, at most (emptied when full: a file is then checked again).
const MAX_CHECKED: usize = 4096;

/// Conflict names tried for one name before giving up on a merge.
const NAME_TRIES: u32 = 64;

impl<S: BlockStore> Vault<S> {
    /// The entries of a directory leaf whose versions were written
    /// concurrently (`sets`, head first): see the module comment. Files
    /// whose entries differ between the versions are checked for
    /// concurrent versions of their own in the background.
    pub(crate) async fn merge_entries(&self, dir: &Link, sets: Vec<Entries>) -> Entries {
        let mut names: Vec<Vec<u8>> = sets.iter().flat_map(|s| s.keys().cloned()).collect();
        names.sort();
        names.dedup();
        let mut out = Entries::new();
        let mut renamed_away = 0usize;
        let mut files = Vec::new();
        for name in names {
            let mut links: Vec<(usize, Entry)> = Vec::new();
            for (i, s) in sets.iter().enumerate() {
                if let Some(e) = s.get(&name)
                    && !links.iter().any(|(_, l)| l.link.name == e.link.name)
                {
                    links.push((i, e.clone()));
                }
            }
            for (k, (_, entry)) in links.into_iter().enumerate() {
                let lacking: Vec<&Entries> = sets
                    .iter()
                    .filter(|s| s.get(&name).is_none_or(|e| e.link.name != entry.link.name))
                    .collect();
                if !lacking.is_empty() {
                    // Renamed on a side that lacks the name: that side
                    // holds the object under another name, stamped later
                    // (a rename stamps the entry's ctime).
                    let moved = lacking.iter().any(|s| {
                        s.iter().any(|(n, e)| {
                            n != &name
                                && e.link.name == entry.link.name
                                && renamed_later((n, e), (&name, &entry))
                        })
                    });
                    if moved {
                        renamed_away += 1;
                        continue;
                    }
                    if self.child_deleted(&entry.link).await {
                        continue;
                    }
                }
                // Both sides may have changed a file without changing its
                // entry: every file of a merged leaf is checked once.
                if entry.link.kind == Kind::File {
                    files.push((name.clone(), entry.link.clone()));
                }
                if k == 0 && !out.contains_key(&name) {
                    out.insert(name.clone(), entry);
                    continue;
                }
                let now = Time::now().timestamp();
                let free = (1..=NAME_TRIES)
                    .map(|n| conflict_name(&name, self.conflicts.machine(), now, n))
                    .find(|c| !out.contains_key(c) && sets.iter().all(|s| !s.contains_key(c)));
                match free {
                    Some(c) => {
                        log::warn!(
                            "merged directory: two objects named {:?}; one is kept as {:?}",
                            String::from_utf8_lossy(&name),
                            String::from_utf8_lossy(&c)
                        );
                        out.insert(c, entry);
                    }
                    None => log::error!(
                        "merged directory: no free conflict name for {:?}",
                        String::from_utf8_lossy(&name)
                    ),
                }
            }
        }
        if renamed_away > 0 {
            log::info!("merged directory: {renamed_away} name(s) renamed on one side dropped");
        }
        for (name, link) in files {
            self.spawn_resolve_file(dir.clone(), name, link);
        }
        out
    }

    /// Merges an object loaded from the live head of `versions`
    /// (concurrent versions, head first) with the others: a directory
    /// stored as one leaf takes every version's entries; one split into
    /// shards under one epoch in every version merges shard by shard
    /// ([`Vault::merge_shard`]). What cannot be merged here (a file, a
    /// directory split differently on two sides) is left to its resolver
    /// or a later version: the next save is then made to lose its
    /// compare-and-swap rather than drop a version unseen.
    pub(crate) async fn merge_loaded(
        &self,
        link: &Link,
        versions: &[Record],
        obj: &mut super::object::Object,
        layout: &mut super::shards::Layout,
    ) -> Result<(), FsError> {
        use super::object::Body;
        let key = versions[0].key();
        let peeks: Vec<Option<DirPeek>> = versions
            .iter()
            .map(|r| r.value.as_deref().map(|v| self.peek_dir(link, v)))
            .collect();
        let leaves: Option<Vec<Entries>> = peeks
            .iter()
            .filter_map(|p| p.as_ref())
            .map(|p| match p {
                DirPeek::Leaf(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let splits: Option<HashSet<u64>> = peeks
            .iter()
            .filter_map(|p| p.as_ref())
            .map(|p| match p {
                DirPeek::Split(e) => Some(*e),
                _ => None,
            })
            .collect();
        let split_alike = splits.is_some_and(|s| s.len() == 1);
        match (&mut obj.body, leaves) {
            (Body::Dir { entries }, Some(sets)) if !layout.is_sharded() && sets.len() > 1 => {
                let merged = self.merge_entries(link, sets).await;
                *layout = super::shards::Layout::single(&link.name, versions[0].seq, &merged);
                layout.merged.insert(Vec::new());
                *entries = merged;
                super::vault::set_dir_nlink(obj);
            }
            (Body::Dir { .. }, _) if layout.is_sharded() && split_alike => {
                // Split alike on every side: the shards merge themselves.
            }
            (Body::Dir { .. }, Some(sets)) if sets.len() <= 1 => {}
            _ => {
                if link.kind != Kind::File {
                    log::warn!(
                        "record {} has {} concurrent versions this version cannot merge; \
                         its next change waits until they are",
                        key.short(),
                        versions.len()
                    );
                }
                self.clocks.note_read(key, &versions[..1]);
            }
        }
        Ok(())
    }

    /// What a directory version holds at its top: its entries (a leaf)
    /// or the epoch it is split at; `Other` for anything else.
    fn peek_dir(&self, link: &Link, value: &[u8]) -> DirPeek {
        use super::crypto::open;
        use super::format::{Decoded, decode_v2, object_aad};
        match open(&link.key, value, &object_aad(&link.name)).map(|p| decode_v2(&p)) {
            Ok(Ok(Decoded::Done(o))) => match o.body {
                super::object::Body::Dir { entries } => DirPeek::Leaf(entries),
                _ => DirPeek::Other,
            },
            Ok(Ok(Decoded::DirSplit { epoch, .. })) => DirPeek::Split(epoch),
            _ => DirPeek::Other,
        }
    }

    /// Stores a directory loaded by merging concurrent versions (in the
    /// background, once at a time), so the merge is made once: a change
    /// that changes nothing, whose save writes the merged nodes.
    pub(crate) fn spawn_store_merge(&self, dir: &Link) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if !self
            .resolving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.name.clone())
        {
            return;
        }
        let dir = dir.clone();
        let id = self.identity().record_key(&dir.name).short();
        tokio::spawn(async move {
            match me.update(&dir, |_| Ok(())).await {
                Ok(_) => log::info!("merged directory {id} stored"),
                Err(e) => log::warn!("merged directory {id} not stored yet: {e}"),
            }
            me.background_done(&dir.name);
        });
    }

    /// Ends the background merge work on record `name`.
    fn background_done(&self, name: &[u8]) {
        self.resolving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.merges_done.notify_waiters();
    }

    /// Waits until no merge is being stored and no file's concurrent
    /// versions are being resolved (work started by loads before and
    /// during the wait included).
    pub async fn settle_merges(&self) {
        loop {
            let done = self.merges_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self
                .resolving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return;
            }
            done.await;
        }
    }

    /// Whether `link`'s object was deleted: its record is stored and every
    /// version of it is a delete or in the trash. Unreadable or absent
    /// counts as not deleted (kept: a name is never dropped on a guess).
    async fn child_deleted(&self, link: &Link) -> bool {
        let key = self.identity().record_key(&link.name);
        let Ok(versions) = self.store.get_versions(key).await else {
            return false;
        };
        if versions.is_empty() {
            return false;
        }
        for r in versions.iter().filter(|r| !r.is_tombstone()) {
            match self.decode_version(link, r).await {
                Ok(v) if v.obj.is_trashed() => {}
                _ => return false,
            }
        }
        true
    }

    /// Resolves a file's concurrent versions in the background, once per
    /// file at a time.
    fn spawn_resolve_file(&self, dir: Link, name: Vec<u8>, link: Link) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        {
            let mut busy = self.resolving.lock().unwrap_or_else(|e| e.into_inner());
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.len() >= MAX_CHECKED {
                checked.clear();
            }
            if !checked.insert(link.name.clone()) || !busy.insert(link.name.clone()) {
                return;
            }
        }
        tokio::spawn(async move {
            if let Err(e) = me.resolve_file(&dir, &name, &link).await {
                log::warn!(
                    "concurrent versions of {:?} not resolved yet: {e}",
                    String::from_utf8_lossy(&name)
                );
            }
            me.background_done(&link.name);
        });
    }

    /// Resolves the concurrent versions of file `link` (named `name` in
    /// `dir`): every live version but the winner is copied into a
    /// conflict copy next to it, the copies' entries are stored, and then
    /// the winner is saved again above every version. The winner is the
    /// head, or, if the head is a delete, the best live version (a change
    /// beats a delete). Nothing is done for a file with one version.
    pub async fn resolve_file(&self, dir: &Link, name: &[u8], link: &Link) -> Result<(), FsError> {
        let key = self.identity().record_key(&link.name);
        let versions = self.read_versions(key).await?;
        if versions.len() < 2 {
            return Ok(());
        }
        // A change beats a delete: versions in the trash give way to
        // versions in use (they were deleted on one side, changed on the
        // other), unless every live version is in the trash.
        let mut live = Vec::new();
        let mut trashed = Vec::new();
        for r in versions.iter().filter(|r| !r.is_tombstone()) {
            match self.decode_version(link, r).await?.obj.is_trashed() {
                true => trashed.push(r),
                false => live.push(r),
            }
        }
        if live.is_empty() {
            live = trashed;
        }
        let Some(winner) = live.first().copied() else {
            return Ok(());
        };
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| FsError::Unavailable("vault closing".into()))?;
        let mut copied = 0;
        for sib in live.iter().skip(1) {
            let mine = self.decode_version(link, sib).await?;
            // The copy's name is a function of the version (its writer and
            // time): two machines resolving at once pick the same name,
            // and only one copy is linked.
            let at = mine.obj.attrs.mtime.timestamp();
            let label = format!("{:06x}", distinct_writer(sib, winner) >> 40);
            let copy_name = conflict_name(name, &label, at, 1);
            let mut f = OpenFile::from_state(link.clone(), mine);
            let (copy, attrs) = f.write_unlinked_copy(&me, Durability::Now).await?;
            let entry = Entry {
                link: copy.clone(),
                attrs: Some(attrs),
            };
            let cname = copy_name.clone();
            let linked = self
                .update(dir, move |d| {
                    let entries = d.entries_mut().ok_or(FsError::NotDir)?;
                    if entries.contains_key(&cname) {
                        return Err(FsError::Exists);
                    }
                    entries.insert(cname.clone(), entry.clone());
                    Ok(())
                })
                .await;
            match linked {
                Ok(_) => copied += 1,
                // Another machine's copy of this version is linked.
                Err(FsError::Exists) => {
                    if let Err(e) = self.unlink_object(&copy, None).await {
                        log::debug!("a second copy of a version not deleted: {e}");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // The copies' entries first: once the versions are resolved, the
        // copies are only reachable through them.
        self.settle_dir(dir).await;
        let head = &versions[0];
        let rec = self
            .sign_next(
                &link.name,
                head.seq + 1,
                winner.value.as_deref().map(<[u8]>::to_vec),
            )
            .await?;
        self.store
            .put_record(rec, Some(head.seq), Durability::Now)
            .await?;
        log::warn!(
            "file {:?} had {} concurrent versions: kept {copied} conflict copies beside it",
            String::from_utf8_lossy(name),
            versions.len(),
        );
        Ok(())
    }

    /// Decodes one stored version of `link`'s object.
    async fn decode_version(&self, link: &Link, rec: &Record) -> Result<Versioned, FsError> {
        let value = rec
            .value
            .as_deref()
            .ok_or_else(|| FsError::Corrupt("a deleted version has no content".into()))?;
        let (obj, layout, plain) = self.decode(link, rec.key(), value, rec.seq).await?;
        Ok(Versioned {
            obj,
            seq: rec.seq,
            layout,
            plain,
        })
    }
}
