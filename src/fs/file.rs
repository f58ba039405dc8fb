//! An open file: buffered writes packed into blocks, extents laid over the
//! file's index, parallel uploads, reads with read-ahead.
//!
//! A write goes into this file's dirty ranges (coalesced in memory). Once
//! a block's worth (`CHUNK_SIZE`) is dirty it is packed, sealed and
//! uploaded in the background (up to [`super::vault::UPLOAD_SLOTS`] per
//! vault in flight, to many owners), and each range becomes an extent
//! pointing into that block, laid over the old extents: a 4 KiB write
//! stores 4 KiB, never a read-modify-write of a larger unit. `flush`
//! uploads the rest, waits for every upload, then saves the file's record
//! and index: once it returns, content and index are on r replicas
//! (close-to-open consistency). A few bytes left at flush (with the
//! journal, at most `JOURNAL_MAX`) join the journal in the record instead
//! of a block, so a small `pwrite` + `fsync` stores one record; past that
//! the journal moves into a block. An `fsync` leaves that move to a
//! background task (the block and the index nodes it changes) and saves
//! the record with the journal still in it; a later save lays the moved
//! bytes in and drops them from the journal. A file of at most
//! `INLINE_MAX` bytes keeps all its bytes in the record.
//!
//! The changes since the last load are kept as operations (extents laid,
//! truncations) and as the byte ranges they touched. When another writer
//! saved the file meanwhile, the save compares: if that writer changed
//! other bytes, the operations are re-applied to its version, so
//! concurrent writes to different ranges both land; if the changes
//! overlap, the other version keeps the file and this one is saved next
//! to it as a conflict copy ([`super::divergence`]), so no acknowledged
//! write is lost. A file created with its directory entry written behind
//! ([`super::Vault::create_pending`]) also waits, in every flush until it
//! is stored, for that entry.

use super::divergence::{Spans, conflict_name, content_changes};
use super::extents::{BlockRef, Extent, ExtentMap, Piece};
use super::index::Unstored;
use super::object::{
    Attrs, CHUNK_SIZE, FileContent, INLINE_MAX, JOURNAL_CARRY, JOURNAL_MAX, Link, MAX_FILE_SIZE,
    Object, Time,
};
use super::pending::DirTicket;
use super::ranges::Ranges;
use super::vault::{Vault, Versioned};
use super::{BlockStore, Durability, FsError};
use crate::id::{Id, IdSet};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Bytes fetched ahead of a sequential reader.
const READ_AHEAD_BYTES: u64 = 4 * CHUNK_SIZE as u64;
/// Attempts to save against concurrent writers.
const SAVE_ATTEMPTS: usize = 16;
/// Names tried for a conflict copy (copies made in the same second).
const CONFLICT_NAME_TRIES: u32 = 64;

/// What an upload task returns: the ranges it stored (offset, bytes) and
/// the block they went into (at consecutive offsets from 0).
type UploadDone = (
    Vec<(u64, Arc<Vec<u8>>)>,
    Result<super::extents::BlockRef, FsError>,
);

/// A journal being moved into a block in the background (with the index
/// nodes that change), started by an `fsync` that did not wait for it.
struct Spilling {
    /// The extents the journal is laid over.
    under: ExtentMap,
    /// The journal moved.
    journal: Ranges,
    /// What the task stored: the extents with the journal laid in, the
    /// extents the index tree then holds, and the blocks it stored (the
    /// journal's block and any new index nodes).
    task: tokio::task::JoinHandle<Result<SpillDone, FsError>>,
}

/// What a spill behind stored: the extents with the journal laid in, the
/// extents the index tree holds (see [`FileContent::tree`]) and the blocks
/// it stored.
type SpillDone = (ExtentMap, Option<ExtentMap>, Vec<Id>);

impl Drop for Spilling {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a flush resolved a collision with another machine's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflicted {
    /// This side's content was saved as a new file of this name, next to
    /// the file (which now holds the other side's version).
    Copied(Vec<u8>),
    /// This new file's name was taken by another machine's new file: this
    /// one is linked under this conflict name instead.
    Renamed(Vec<u8>),
}

/// A change to a file's content, kept to re-apply over a newer version.
#[derive(Debug, Clone)]
enum Op {
    /// Extents laid over the content.
    Lay(Vec<Extent>),
    /// The length set.
    Truncate(u64),
    /// Small writes added to the journal.
    Journal(Vec<(u64, Vec<u8>)>),
    /// The journal of the loaded version moved into a block. Not re-applied
    /// over another writer's version: that version's own journal and
    /// extents are as new for those bytes, or newer.
    Spill,
}

/// State of one open file (shared by all handles of the same file).
pub struct OpenFile {
    /// Which object this is.
    pub link: Link,
    /// The file as last loaded or saved, plus the changes uploaded since.
    pub state: Versioned,
    /// Bytes written and not yet uploaded.
    dirty: Ranges,
    /// Ranges being uploaded (none overlaps another or a dirty range).
    uploading: Vec<(u64, Arc<Vec<u8>>)>,
    /// Upload tasks.
    inflight: JoinSet<UploadDone>,
    /// Content changes since `state` was loaded or saved.
    ops: Vec<Op>,
    /// The record differs from the stored one.
    modified: bool,
    /// Where the last read ended (to detect sequential reads).
    last_read_end: Option<u64>,
    /// The directory entry of this new file, while not known to be stored
    /// (kept after a failure, so every later flush reports it too).
    linking: Option<DirTicket>,
    /// The blocks of the stored version `state` started from (shared: a
    /// save that changes only the journal keeps the very same set).
    pub(super) stored_blocks: Arc<IdSet>,
    /// Blocks stored since then (each referred to by `state`, or not any
    /// more if overwritten or truncated away before the save).
    uploaded: IdSet,
    /// Blocks sealed for the next save but not stored yet (a journal
    /// spill): the save stores them with its index nodes, in one round.
    unstored: Vec<Unstored>,
    /// The content and length of the stored version the changes here
    /// apply to (compared with another writer's version on a race).
    base: (FileContent, u64),
    /// The bytes changed here since `base`.
    touched: Spans,
    /// The file's directory and name, where a conflict copy goes.
    place: Option<(Link, Vec<u8>)>,
    /// The conflict the last flush resolved, until taken.
    conflict: Option<Conflicted>,
    /// Loaded before its creator (another machine) saved it: its first
    /// save must not race the creator's (see `Vault::save_file`).
    found_unsaved: bool,
    /// The stored version `base` is, as read (kept when a save replaces it).
    base_plain: Option<Arc<Vec<u8>>>,
    /// When `base` was saved (its mtime if it predates versions).
    base_saved: Time,
    /// The version the last content save of this open made (replacing it
    /// keeps nothing: the open's first save kept what it started from).
    session_saved: Option<u64>,
    /// The blocks of the version this open kept last: its later saves
    /// must not release them.
    session_kept: IdSet,
    /// The journal being moved into a block behind the last `fsync`.
    spilling: Option<Spilling>,
}

impl OpenFile {
    /// Opens the file `link` as stored now.
    pub async fn open<S: BlockStore>(vault: &Vault<S>, link: Link) -> Result<OpenFile, FsError> {
        let state = vault.load(&link).await?;
        let mut f = OpenFile::from_state(link, state);
        f.found_unsaved = f.state.seq == 0;
        Ok(f)
    }

    /// An open file from an already loaded version.
    pub fn from_state(link: Link, state: Versioned) -> OpenFile {
        let mut f = OpenFile {
            link,
            stored_blocks: Arc::default(),
            uploaded: IdSet::default(),
            unstored: Vec::new(),
            state,
            dirty: Ranges::default(),
            uploading: Vec::new(),
            inflight: JoinSet::new(),
            ops: Vec::new(),
            modified: false,
            last_read_end: None,
            linking: None,
            base: Default::default(),
            touched: Spans::default(),
            place: None,
            conflict: None,
            found_unsaved: false,
            base_plain: None,
            base_saved: Time::default(),
            session_saved: None,
            session_kept: IdSet::default(),
            spilling: None,
        };
        f.note_base(None);
        f
    }

    /// Takes `state` as the stored version the next changes apply to.
    fn settle_on(&mut self, state: Versioned) {
        self.settle_on_known(state, None);
    }

    /// [`OpenFile::settle_on`] with `state`'s blocks, if known.
    fn settle_on_known(&mut self, state: Versioned, blocks: Option<Arc<IdSet>>) {
        self.state = state;
        self.note_base(blocks);
        self.ops.clear();
        self.touched = Spans::default();
    }

    /// Notes `state` as the stored version: its blocks (given if known),
    /// its content.
    fn note_base(&mut self, blocks: Option<Arc<IdSet>>) {
        self.stored_blocks = blocks.unwrap_or_else(|| Arc::new(self.state.obj.blocks()));
        let content = self.state.obj.content().cloned().unwrap_or_default();
        self.base_saved = saved_at(&content, self.state.obj.attrs.mtime);
        self.base = (content, self.state.obj.attrs.size);
        self.base_plain = self.state.plain.clone();
    }

    /// Tells where the file is named now (its directory and name), so a
    /// flush that collides with another writer's changes can put this
    /// side's content next to it as a conflict copy.
    pub fn set_place(&mut self, parent: Link, name: Vec<u8>) {
        self.place = Some((parent, name));
    }

    /// The conflict the last flush resolved, if any.
    pub fn take_conflict(&mut self) -> Option<Conflicted> {
        self.conflict.take()
    }

    /// Notes that this file's directory entry is being stored behind;
    /// flushes wait for it.
    pub fn set_linking(&mut self, ticket: DirTicket) {
        self.linking = Some(ticket);
    }

    /// Current length.
    pub fn size(&self) -> u64 {
        self.state.obj.attrs.size
    }

    /// Whether this is a small new file created here and never stored
    /// (all of it fits its record), so its save may be left to its
    /// release: nothing else can have a version of it yet.
    pub fn is_small_and_new(&self) -> bool {
        self.state.seq == 0
            && !self.found_unsaved
            && self.size() <= INLINE_MAX
            && self.uploading.is_empty()
    }

    /// Whether there are changes not yet saved.
    pub fn is_dirty(&self) -> bool {
        self.modified
            || self.spilling.is_some()
            || !self.dirty.is_empty()
            || !self.uploading.is_empty()
            || self.linking.as_ref().is_some_and(|t| !t.is_done())
    }

    /// Re-reads the file if nothing local is pending (close-to-open: a
    /// new open sees what the last close elsewhere saved).
    pub async fn refresh<S: BlockStore>(&mut self, vault: &Vault<S>) -> Result<(), FsError> {
        if !self.is_dirty() {
            let state = vault.load(&self.link).await?;
            self.settle_on(state);
            self.found_unsaved = self.state.seq == 0;
            self.begin_session();
        }
        Ok(())
    }

    /// A new open: its first content save keeps what it replaces (the
    /// version the last close saved), as a version of its own.
    pub fn begin_session(&mut self) {
        self.session_saved = None;
        self.session_kept.clear();
    }

    fn content(&mut self) -> Result<&mut FileContent, FsError> {
        self.state.obj.content_mut()
    }

    /// Applies finished uploads; with `wait`, waits for all of them.
    async fn collect(&mut self, wait: bool) -> Result<(), FsError> {
        let mut first_err = None;
        loop {
            let next = if wait {
                self.inflight.join_next().await
            } else {
                self.inflight.try_join_next()
            };
            let Some(joined) = next else { break };
            let (ranges, res) =
                joined.map_err(|e| FsError::Unavailable(format!("upload task: {e}")))?;
            self.uploading
                .retain(|(o, d)| !ranges.iter().any(|(ro, rd)| ro == o && Arc::ptr_eq(rd, d)));
            match res {
                Ok(block) => {
                    self.uploaded.insert(block.key);
                    let mut at = 0u32;
                    let mut laid = Vec::with_capacity(ranges.len());
                    for (offset, data) in &ranges {
                        laid.push(Extent {
                            offset: *offset,
                            len: data.len() as u32,
                            block,
                            at,
                        });
                        at += data.len() as u32;
                    }
                    let c = self.content()?;
                    for e in &laid {
                        c.lay(*e);
                    }
                    self.ops.push(Op::Lay(laid));
                }
                Err(e) => {
                    // Keep the bytes so a later flush retries them (no
                    // dirty range overlaps an upload, so none is newer).
                    for (offset, data) in ranges {
                        self.dirty.add(offset, &data);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes up to one block's worth of dirty bytes, in file order.
    fn take_block(&mut self) -> Vec<(u64, Arc<Vec<u8>>)> {
        self.dirty
            .take_front(CHUNK_SIZE)
            .into_iter()
            .map(|(o, d)| (o, Arc::new(d)))
            .collect()
    }

    /// Starts uploading one block of dirty bytes (waits for an upload slot).
    async fn start_upload<S: BlockStore>(&mut self, vault: &Arc<Vault<S>>, durability: Durability) {
        let ranges = self.take_block();
        if ranges.is_empty() {
            return;
        }
        let permit = Arc::clone(&vault.upload_slots).acquire_owned().await;
        self.uploading.extend(ranges.iter().cloned());
        let vault = Arc::clone(vault);
        let link = self.link.clone();
        self.inflight.spawn(async move {
            let _permit = permit;
            let plain = match &ranges[..] {
                // One range (a sequential writer): its buffer is the block.
                [(_, d)] => Arc::clone(d),
                _ => {
                    let mut p = Vec::with_capacity(ranges.iter().map(|(_, d)| d.len()).sum());
                    for (_, d) in &ranges {
                        p.extend_from_slice(d);
                    }
                    Arc::new(p)
                }
            };
            // Not kept in the decrypted-block cache: a copy would fill it
            // with blocks nobody reads (a read finds them in the on-disk
            // block cache).
            let res = vault.write_block(&link, &plain, durability).await;
            (ranges, res)
        });
    }

    /// Whether `[offset, end)` overlaps a range being uploaded.
    fn overlaps_upload(&self, offset: u64, end: u64) -> bool {
        self.uploading
            .iter()
            .any(|(o, d)| *o < end && offset < *o + d.len() as u64)
    }

    /// Moves a small file's inline bytes into the dirty ranges, so that
    /// every byte of the file is in one place.
    fn spill_inline(&mut self) -> Result<(), FsError> {
        if let Some(d) = self.content()?.inline.take() {
            self.dirty.add(0, &d);
        }
        Ok(())
    }

    /// Writes `data` at `offset`; returns the bytes written.
    pub async fn write<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, FsError> {
        let end = write_end(offset, data)?;
        self.content()?;
        self.collect(false).await.ok();
        if self.overlaps_upload(offset, end) {
            // Rewriting bytes in flight: let those uploads land first.
            self.collect(true).await.ok();
        }
        self.add_dirty(offset, data, end)?;
        while self.dirty.bytes() >= CHUNK_SIZE {
            self.start_upload(vault, Durability::Later).await;
        }
        Ok(data.len())
    }

    /// [`OpenFile::write`] when it needs no waiting: no upload in flight,
    /// and the dirty bytes stay under a block's worth. `None`: call
    /// `write`.
    pub fn write_now(&mut self, offset: u64, data: &[u8]) -> Option<Result<usize, FsError>> {
        if !self.inflight.is_empty()
            || !self.uploading.is_empty()
            || self.dirty.bytes() + data.len() >= CHUNK_SIZE
        {
            return None;
        }
        Some(
            write_end(offset, data)
                .and_then(|end| self.add_dirty(offset, data, end))
                .map(|()| data.len()),
        )
    }

    /// Adds `data` at `offset` (ending at `end`) to the dirty bytes (the
    /// file's inline bytes first, if it had them) and notes the change.
    fn add_dirty(&mut self, offset: u64, data: &[u8], end: u64) -> Result<(), FsError> {
        self.spill_inline()?;
        self.dirty.add(offset, data);
        self.touched.add(offset, end);
        let attrs = &mut self.state.obj.attrs;
        attrs.size = attrs.size.max(end);
        let now = Time::now();
        attrs.mtime = now;
        attrs.ctime = now;
        self.modified = true;
        Ok(())
    }

    /// Reads up to `size` bytes at `offset` (short at end of file). A
    /// block of the version read that is gone was released by a writer
    /// that replaced that version (on another machine): with nothing
    /// pending here, the file is reloaded and read again.
    pub async fn read<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, FsError> {
        match self.read_loaded(vault, offset, size).await {
            Err(FsError::NotFound) if !self.is_dirty() => {
                self.refresh(vault).await?;
                self.read_loaded(vault, offset, size).await
            }
            other => other,
        }
    }

    /// [`OpenFile::read`] of the version loaded.
    async fn read_loaded<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, FsError> {
        let file_size = self.size();
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let end = file_size.min(offset + size as u64);
        let mut out = vec![0u8; (end - offset) as usize];
        let empty = FileContent::default();
        let content = self.state.obj.content().unwrap_or(&empty);
        if let Some(d) = &content.inline {
            let n = d.len().min(end as usize).saturating_sub(offset as usize);
            if n > 0 {
                out[..n].copy_from_slice(&d[offset as usize..offset as usize + n]);
            }
        }
        let mut pos = offset;
        for p in content.extents.pieces(offset, end) {
            match p {
                Piece::Hole(n) => pos += n,
                Piece::Data(e) => {
                    let plain = vault
                        .read_block(&self.link, &content.priors, e.block)
                        .await?;
                    let at = (pos - offset) as usize;
                    out[at..at + e.len as usize]
                        .copy_from_slice(&plain[e.at as usize..(e.at + e.len) as usize]);
                    pos += e.len as u64;
                }
            }
        }
        // Newer over older: the journal, uploads, unsaved writes.
        content.journal.overlay(offset, &mut out);
        for (o, d) in &self.uploading {
            let (s, e) = ((*o).max(offset), (o + d.len() as u64).min(end));
            if s < e {
                out[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&d[(s - o) as usize..(e - o) as usize]);
            }
        }
        self.dirty.overlay(offset, &mut out);
        if self.last_read_end == Some(offset) {
            self.read_ahead(vault, content, end);
        }
        self.last_read_end = Some(end);
        Ok(out)
    }

    /// Starts fetching the blocks after `from` in the background.
    fn read_ahead<S: BlockStore>(&self, vault: &Arc<Vault<S>>, content: &FileContent, from: u64) {
        let mut seen = std::collections::HashSet::new();
        for e in content
            .extents
            .overlapping(from, from.saturating_add(READ_AHEAD_BYTES))
        {
            if seen.insert(e.block.key)
                && !vault.has_plain(e.block.key)
                && vault.claim_prefetch(e.block.key)
            {
                let v = Arc::clone(vault);
                let link = self.link.clone();
                let priors = content.priors.clone();
                tokio::spawn(async move {
                    let _ = v.read_block(&link, &priors, e.block).await;
                    v.release_prefetch(e.block.key);
                });
            }
        }
    }

    /// Sets the length: drops bytes past it, reads zeros when growing.
    pub async fn truncate<S: BlockStore>(
        &mut self,
        _vault: &Arc<Vault<S>>,
        size: u64,
    ) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        self.content()?;
        self.collect(true).await?;
        self.spill_inline()?;
        // Dirty bytes past the new end go.
        self.dirty.truncate(size);
        self.touched.add(size.min(self.size()), u64::MAX);
        self.content()?.truncate(size);
        self.ops.push(Op::Truncate(size));
        let attrs = &mut self.state.obj.attrs;
        attrs.size = size;
        let now = Time::now();
        attrs.mtime = now;
        attrs.ctime = now;
        self.modified = true;
        Ok(())
    }

    /// Marks attributes changed (chmod, utimens) so `flush` saves them.
    pub fn touch_attrs(&mut self) {
        self.modified = true;
    }

    /// Uploads every pending byte, waits for all uploads, then saves the
    /// file. A concurrent writer's version gets this file's changes laid
    /// over it. A new file's directory entry being stored behind is waited
    /// for at the same time by a durable flush (`fsync`), and looked at by
    /// any flush once stored; if it failed, so does the flush. A flush
    /// that is not durable (`close`) does not wait for it: the entry is
    /// held a moment for the next files' entries ([`Vault::create_pending`]).
    pub async fn flush<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        durability: Durability,
    ) -> Result<(), FsError> {
        let Some(ticket) = self.linking.clone() else {
            return self.store(vault, durability).await;
        };
        if durability == Durability::Later && !ticket.is_done() {
            return self.store(vault, durability).await;
        }
        ticket.hurry();
        let (stored, linked) = tokio::join!(self.store(vault, durability), ticket.wait());
        match linked {
            Ok(dir) => {
                self.linking = None;
                self.note_linked_name(&dir.obj);
            }
            Err(e) => {
                stored?;
                return Err(unlinked(e));
            }
        }
        stored
    }

    /// Waits until this new file's directory entry is stored (at once,
    /// not held for others); an error if it could not be.
    pub async fn wait_linked(&mut self) -> Result<(), FsError> {
        let Some(ticket) = self.linking.clone() else {
            return Ok(());
        };
        ticket.hurry();
        let dir = ticket.wait().await.map_err(unlinked)?;
        self.linking = None;
        self.note_linked_name(&dir.obj);
        Ok(())
    }

    /// The ticket of this new file's directory entry, if no flush has
    /// seen it stored yet; the caller answers for it from now on (see
    /// [`linked_as`]).
    pub fn take_linking(&mut self) -> Option<DirTicket> {
        self.linking.take()
    }

    /// After this new file's entry is stored in `dir`: if another machine
    /// had taken its name meanwhile, the file was linked under a conflict
    /// name instead (see `Vault::create_pending`); that name is noted.
    fn note_linked_name(&mut self, dir: &Object) {
        let Some((_, name)) = &self.place else {
            return;
        };
        if let Some(actual) = linked_as(dir, name, &self.link) {
            self.conflict = Some(Conflicted::Renamed(actual.clone()));
            self.place = self.place.take().map(|(p, _)| (p, actual));
        }
    }

    /// Reads the whole (small) file as it is here.
    async fn all_bytes<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
    ) -> Result<Vec<u8>, FsError> {
        let keep = self.last_read_end;
        let size = self.size() as usize;
        let d = self.read(vault, 0, size).await?;
        self.last_read_end = keep;
        Ok(d)
    }

    /// Whether the dirty bytes join the journal at this save: they fit
    /// `JOURNAL_MAX` with it, or, while a spill behind is in flight (it
    /// is laid in first if done), `JOURNAL_CARRY` at an `fsync`. Past
    /// that the save waits for the spill and then judges again.
    async fn journal_takes(&mut self, durability: Durability) -> Result<bool, FsError> {
        self.lay_in_spill(false).await;
        let total = self.dirty.bytes() + self.content()?.journal.bytes();
        // An `fsync` carries a full journal while it moves behind.
        if total <= JOURNAL_MAX || (durability == Durability::Now && total <= JOURNAL_CARRY) {
            return Ok(true);
        }
        if self.spilling.is_none() {
            return Ok(false);
        }
        self.lay_in_spill(true).await;
        Ok(self.dirty.bytes() + self.content()?.journal.bytes() <= JOURNAL_MAX)
    }

    /// Starts moving the journal into a block in the background: the
    /// block and the index nodes laid over it are stored (durably, as a
    /// later `fsync`'s record will refer to them) while the records saved
    /// meanwhile still carry the journal.
    fn spill_behind<S: BlockStore>(&mut self, vault: &Arc<Vault<S>>) -> Result<(), FsError> {
        let mut c = self.content()?.clone();
        let (under, journal) = (c.extents.clone(), c.journal.clone());
        let mut reusable = IdSet::clone(&self.stored_blocks);
        reusable.extend(self.uploaded.iter().copied());
        let (vault, link) = (Arc::clone(vault), self.link.clone());
        let task = tokio::spawn(async move {
            let Some(u) = spill_journal(&vault, &link, &mut c) else {
                return Ok((c.extents, c.tree.get().cloned(), Vec::new()));
            };
            let key = u.key;
            let saved = vault
                .store_index(&link, &c, &reusable, &[u], Durability::Now)
                .await?;
            let (used, tree) = (saved.blocks, saved.tree);
            let mut fresh: Vec<Id> = used
                .iter()
                .map(|b| b.key)
                .filter(|k| !reusable.contains(k))
                .collect();
            fresh.push(key);
            Ok((c.extents, tree, fresh))
        });
        self.spilling = Some(Spilling {
            under,
            journal,
            task,
        });
        Ok(())
    }

    /// Lays a spill behind in once it is done (with `wait`, waits for it):
    /// the extents take the moved journal and the journal keeps only what
    /// was written over it since. If the content changed otherwise
    /// meanwhile (another writer's version, a truncation, an upload), or
    /// the spill failed, the journal stays (a later save moves it again)
    /// and the blocks stored for it are freed with the next save.
    async fn lay_in_spill(&mut self, wait: bool) {
        let done = self
            .spilling
            .as_ref()
            .is_some_and(|s| wait || s.task.is_finished());
        let Some(mut s) = self.spilling.take().filter(|_| done) else {
            return;
        };
        let (extents, tree, fresh) = match (&mut s.task).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                log::debug!("moving a journal into a block behind failed: {e}");
                return;
            }
            Err(e) => {
                log::warn!("the task moving a journal into a block ended: {e}");
                return;
            }
        };
        self.uploaded.extend(fresh);
        let Ok(c) = self.state.obj.content_mut() else {
            return;
        };
        if c.extents != s.under || !c.priors.is_empty() {
            return;
        }
        let Some(rest) = c.journal.beyond(&s.journal) else {
            return;
        };
        c.extents = extents;
        c.tree = super::object::TreeBase::new(tree);
        c.journal = rest;
        self.ops.push(Op::Spill);
        self.modified = true;
    }

    /// Moves the dirty bytes into the content's journal (the top layer).
    fn dirty_into_journal(&mut self) -> Result<(), FsError> {
        let added = std::mem::take(&mut self.dirty).into_pieces();
        let c = self.content()?;
        for (o, d) in &added {
            c.journal.add(*o, d);
        }
        if !added.is_empty() {
            self.ops.push(Op::Journal(added));
        }
        Ok(())
    }

    /// The content and record part of [`OpenFile::flush`].
    async fn store<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        durability: Durability,
    ) -> Result<(), FsError> {
        self.collect(true).await?;
        if durability == Durability::Later {
            // A close saves the file with a spill behind laid in, so no
            // block it stored is left unreferenced.
            self.lay_in_spill(true).await;
        }
        if !self.modified {
            return Ok(());
        }
        let small = self.size() <= INLINE_MAX;
        if small {
            let bytes = self.all_bytes(vault).await?;
            self.dirty = Ranges::default();
            let c = self.content()?;
            c.extents = Default::default();
            c.journal = Ranges::default();
            c.inline = Some(bytes);
            c.priors.clear();
        } else if self.journal_takes(durability).await? {
            // Few bytes: they join the journal in the record.
            self.dirty_into_journal()?;
            if durability == Durability::Now
                && self.spilling.is_none()
                && self.content()?.journal.bytes() > JOURNAL_MAX
            {
                self.spill_behind(vault)?;
            }
        } else {
            // The journal goes into a block (stored with the save's index
            // nodes); the rest is laid over it: into a fresh journal if
            // it fits, so the save takes one round of puts before its
            // record, else uploaded first.
            let link = self.link.clone();
            if let Some(u) = spill_journal(vault, &link, self.content()?) {
                self.uploaded.insert(u.key);
                self.unstored.push(u);
                self.ops.push(Op::Spill);
            }
            if self.dirty.bytes() <= JOURNAL_MAX {
                self.dirty_into_journal()?;
            } else {
                while !self.dirty.is_empty() {
                    self.start_upload(vault, durability).await;
                }
                self.collect(true).await?;
            }
        }
        let content_changed = !self.touched.is_empty();
        if content_changed && !self.content()?.priors.is_empty() {
            // The first write since a re-key seals the whole content
            // under the file's own key.
            let link = self.link.clone();
            let fresh = reseal(vault, &link, self.content()?, durability).await?;
            self.uploaded.extend(fresh);
        }
        let mut next = self.state.obj.clone();
        let mut expected = self.state.seq;
        // The blocks of the version a successful save replaces, and those
        // stored since (a spill behind's index nodes), reusable like them.
        let mut replaced = if self.uploaded.is_empty() {
            Arc::clone(&self.stored_blocks)
        } else {
            let mut r = IdSet::clone(&self.stored_blocks);
            r.extend(self.uploaded.iter().copied());
            Arc::new(r)
        };
        for _ in 0..SAVE_ATTEMPTS {
            // Changing content another open saved keeps that version (not
            // a file created empty that never had content: `echo x > new`).
            let never_written = self.base.1 == 0 && self.base.0.history.number == 0;
            let keep = content_changed
                && expected > 0
                && !never_written
                && self.session_saved != Some(expected)
                && vault.keeps_versions();
            let version = match keep {
                true => match vault
                    .version_block(&self.link, expected, self.base_plain.clone())
                    .await
                {
                    Ok(v) => Some(v),
                    // The save goes on: losing the old version beats
                    // failing the new one.
                    Err(e) => {
                        log::warn!("the version a save of a file replaces cannot be kept: {e}");
                        None
                    }
                },
                false => None,
            };
            let keep = version.is_some();
            let kept_block = version.as_ref().map(|(k, _)| *k);
            let mut history = self.base.0.history.clone();
            history.saved = self.base_saved;
            if content_changed {
                history = history.after_save(
                    kept_block.map(|k| (k, self.base.1)),
                    vault.conflicts.machine(),
                    Time::now(),
                    vault.keep_cutoff(),
                );
            }
            next.content_mut()?.history = history;
            // The version block goes at the same time as the record.
            let save = vault.save_file(
                &self.link,
                &mut next,
                expected,
                (replaced.as_ref(), &self.unstored),
                durability,
                self.found_unsaved,
            );
            let (kept_put, saved) = match version {
                Some((key, sealed)) => {
                    let (p, s) =
                        tokio::join!(vault.put_version_block(key, sealed, durability), save);
                    (Some(p), s)
                }
                None => (None, save.await),
            };
            if let Some(Err(e)) = kept_put {
                log::warn!("the version a save of a file replaced could not be kept: {e}");
            }
            if matches!(saved, Ok(_) | Err(FsError::Conflict(_))) {
                // The record was tried: everything it refers to is stored.
                self.unstored.clear();
            }
            match saved {
                Ok(seq) => {
                    // What the replaced version or this file's uploads
                    // referred to and the new version does not is freed,
                    // unless a kept version refers to it.
                    if keep {
                        self.session_kept = IdSet::clone(&replaced);
                    }
                    // A save that changed only the journal refers to the
                    // very blocks of the version it replaces. (`replaced`
                    // is the stored set itself only while nothing was
                    // uploaded and no race moved `self.base` to another
                    // writer's version.)
                    let kept = if Arc::ptr_eq(&replaced, &self.stored_blocks)
                        && same_blocks(&next, &self.base.0)
                    {
                        Arc::clone(&self.stored_blocks)
                    } else {
                        Arc::new(next.blocks())
                    };
                    let unused: HashSet<Id> = (!Arc::ptr_eq(&replaced, &kept))
                        .then(|| replaced.iter())
                        .into_iter()
                        .flatten()
                        .chain(&self.uploaded)
                        .filter(|k| !kept.contains(k) && !self.session_kept.contains(k))
                        .copied()
                        .collect();
                    vault.release_behind(unused);
                    self.uploaded.clear();
                    if content_changed {
                        self.session_saved = Some(seq);
                    }
                    self.settle_on_known(Versioned::new(next, seq), Some(kept));
                    self.modified = false;
                    return Ok(());
                }
                Err(FsError::Conflict(current)) => {
                    // A version block kept for a version that lost is unused.
                    self.uploaded.extend(kept_block);
                    let theirs = vault.load(&self.link).await?;
                    if current.is_none() && theirs.seq > 0 {
                        // The owner holds no version while other replicas
                        // do (a put counted without it, as the ring
                        // changed): give it theirs before swapping again.
                        vault.reseed(&self.link).await;
                    }
                    let their_content = theirs.obj.content().cloned().unwrap_or_default();
                    let their_size = theirs.obj.attrs.size;
                    let (their_mtime, their_plain) = (theirs.obj.attrs.mtime, theirs.plain.clone());
                    let (base, base_size) = &self.base;
                    let changed = content_changes(base, *base_size, &their_content, their_size);
                    if changed.overlaps(&self.touched) {
                        return self.fork(vault, theirs, durability).await;
                    }
                    expected = theirs.seq;
                    replaced = Arc::new(theirs.obj.blocks());
                    next = if small {
                        match self.merge_small(&theirs.obj) {
                            Some(o) => o,
                            None => return self.fork(vault, theirs, durability).await,
                        }
                    } else {
                        let mut o = self.rebase(vault, theirs.obj, durability).await?;
                        // Two journals merged: keep the record small.
                        let c = o.content_mut()?;
                        if c.journal.bytes() > JOURNAL_MAX
                            && let Some(u) = spill_journal(vault, &self.link, c)
                        {
                            self.uploaded.insert(u.key);
                            self.unstored.push(u);
                        }
                        o
                    };
                    // The next race is judged against this version, and it
                    // is the one the save replaces.
                    self.base_saved = saved_at(&their_content, their_mtime);
                    self.base = (their_content, their_size);
                    self.base_plain = their_plain;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Conflict(None))
    }

    /// This small file's changes laid over `theirs`, a newer version that
    /// changed other bytes: their bytes with these written ranges on top,
    /// the length of whichever side changed it. `None` if `theirs` keeps
    /// its bytes in blocks (then the caller makes a conflict copy).
    fn merge_small(&self, theirs: &Object) -> Option<Object> {
        let tc = theirs.content()?;
        let their_bytes: &[u8] = match &tc.inline {
            Some(d) => d,
            None if tc.extents.is_empty() && tc.journal.is_empty() => &[],
            None => return None,
        };
        let ours = self.state.obj.content()?.inline.as_deref().unwrap_or(&[]);
        let size = if self.size() != self.base.1 {
            self.size()
        } else {
            theirs.attrs.size
        };
        if size > INLINE_MAX {
            return None;
        }
        let mut bytes = their_bytes.to_vec();
        bytes.resize(size as usize, 0);
        for (s, e) in self.touched.iter() {
            let e = (e.min(size) as usize).min(ours.len());
            let s = (s as usize).min(e);
            bytes[s..e].copy_from_slice(&ours[s..e]);
        }
        let mut o = self.state.obj.clone();
        o.attrs.nlink = theirs.attrs.nlink;
        o.attrs.size = size;
        o.content_mut().ok()?.inline = Some(bytes);
        Some(o)
    }

    /// A new file holding this file's content, saved (durably if asked)
    /// but not linked into any directory yet; its link and attributes.
    /// A resolver of concurrent versions links it under a name of its
    /// own, or deletes it if another machine linked its copy first.
    pub(crate) async fn write_unlinked_copy<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        durability: Durability,
    ) -> Result<(Link, Attrs), FsError> {
        let attrs = Attrs {
            nlink: 1,
            ..self.state.obj.attrs.clone()
        };
        let link = Link::fresh(super::object::Kind::File);
        // The copy lives where the file does: the same folder scope.
        let id = vault.identity();
        let scope = vault.clocks.scope(id.record_key(&self.link.name));
        vault.clocks.set_scope(id.record_key(&link.name), scope);
        let empty = Versioned::new(Object::empty(super::object::Kind::File, attrs.clone()), 0);
        let mut copy = OpenFile::from_state(link.clone(), empty);
        self.copy_content(vault, &mut copy, attrs).await?;
        Box::pin(copy.flush(vault, durability)).await?;
        Ok((link, copy.state.obj.attrs.clone()))
    }

    /// Writes this file's content into `copy` (holes stay holes) and
    /// gives it `attrs`.
    async fn copy_content<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        copy: &mut OpenFile,
        attrs: Attrs,
    ) -> Result<(), FsError> {
        let size = attrs.size;
        copy.truncate(vault, size).await?;
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(CHUNK_SIZE as u64) as usize;
            let data = self.read_loaded(vault, at, n).await?;
            if data.iter().any(|&b| b != 0) {
                copy.write(vault, at, &data).await?;
            }
            at += n as u64;
        }
        copy.state.obj.attrs = attrs;
        Ok(())
    }

    /// Keeps this side's content as a conflict copy next to the file (in
    /// the directory and under the name [`OpenFile::set_place`] gave) and
    /// takes `theirs`, the version that won the race, as the file. Without
    /// a place there is nowhere to keep it: the flush fails.
    async fn fork<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        theirs: Versioned,
        durability: Durability,
    ) -> Result<(), FsError> {
        let Some((parent, name)) = self.place.clone() else {
            return Err(FsError::Conflict(None));
        };
        let attrs = Attrs {
            nlink: 1,
            ..self.state.obj.attrs.clone()
        };
        let now = Time::now().timestamp();
        let mut made = None;
        for n in 1..=CONFLICT_NAME_TRIES {
            let copy_name = conflict_name(&name, vault.conflicts.machine(), now, n);
            match vault
                .create_pending(&parent, &copy_name, attrs.clone())
                .await
            {
                Ok(created) => {
                    made = Some((copy_name, created));
                    break;
                }
                Err(FsError::Exists) => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((copy_name, (link, v, ticket))) = made else {
            return Err(FsError::Conflict(None));
        };
        let mut copy = OpenFile::from_state(link.clone(), v);
        copy.set_linking(ticket);
        self.copy_content(vault, &mut copy, attrs).await?;
        // Boxed: the copy's flush could (in principle) fork again.
        Box::pin(copy.flush(vault, durability)).await?;
        // Named before this flush reports it (a close does not wait for
        // a new file's entry otherwise).
        copy.wait_linked().await?;
        let listed = copy.state.obj.attrs.clone();
        if let Err(e) = vault
            .queue_entry_attrs(&parent, &copy_name, &link, listed, durability)
            .await
        {
            log::debug!("conflict copy's listed attributes not queued: {e}");
        }
        // This side's uploads are in the copy now (sealed again under its
        // own key); the file itself is the other writer's version.
        let kept = theirs.obj.blocks();
        let unused: HashSet<Id> = self
            .uploaded
            .drain()
            .filter(|k| !kept.contains(k))
            .collect();
        vault.release_behind(unused);
        self.settle_on(theirs);
        self.modified = false;
        self.conflict = Some(Conflicted::Copied(copy_name));
        Ok(())
    }

    /// This file's changes laid over `theirs`, another writer's newer
    /// version: their content with these extents and truncations on top,
    /// these attributes (the length as the changes leave it).
    async fn rebase<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        theirs: Object,
        durability: Durability,
    ) -> Result<Object, FsError> {
        let mut obj = theirs;
        let mut size = obj.attrs.size;
        let link = &self.link;
        let c = obj.content_mut()?;
        if let Some(d) = c.inline.take()
            && !d.is_empty()
        {
            let block = vault.write_block(link, &d, durability).await?;
            self.uploaded.insert(block.key);
            c.lay(Extent {
                offset: 0,
                len: d.len() as u32,
                block,
                at: 0,
            });
        }
        for op in &self.ops {
            match op {
                Op::Lay(x) => {
                    for e in x {
                        c.lay(*e);
                        size = size.max(e.end());
                    }
                }
                Op::Truncate(n) => {
                    c.truncate(*n);
                    size = *n;
                }
                Op::Journal(x) => {
                    for (o, d) in x {
                        c.journal.add(*o, d);
                        size = size.max(o + d.len() as u64);
                    }
                }
                Op::Spill => {}
            }
        }
        obj.attrs = Attrs {
            size,
            nlink: obj.attrs.nlink,
            ..self.state.obj.attrs.clone()
        };
        Ok(obj)
    }
}

/// Where a write of `data` at `offset` ends; too big past the largest
/// file.
fn write_end(offset: u64, data: &[u8]) -> Result<u64, FsError> {
    offset
        .checked_add(data.len() as u64)
        .filter(|e| *e <= MAX_FILE_SIZE)
        .ok_or(FsError::TooBig)
}

/// Whether `obj` refers to exactly the blocks of content `base`: the
/// very same extents (one shared map, checked in O(1)) and index nodes.
fn same_blocks(obj: &Object, base: &FileContent) -> bool {
    obj.content()
        .is_some_and(|c| c.extents.is_copy_of(&base.extents) && c.index_blocks == base.index_blocks)
}

/// When a version with `content` and `mtime` was saved (its mtime if it
/// predates versions).
fn saved_at(content: &FileContent, mtime: Time) -> Time {
    match content.history.number {
        0 => mtime,
        _ => content.history.saved,
    }
}

/// Moves `content`'s journal into one new block (laid under nothing newer:
/// the journal is the top layer). Returns the block, sealed, for the save
/// to store with its index nodes, if there was a journal.
fn spill_journal<S: BlockStore>(
    vault: &Arc<Vault<S>>,
    link: &Link,
    content: &mut FileContent,
) -> Option<Unstored> {
    if content.journal.is_empty() {
        return None;
    }
    let mut plain = Vec::with_capacity(content.journal.bytes());
    for (_, d) in content.journal.iter() {
        plain.extend_from_slice(d);
    }
    let (block, unstored) = vault.seal_block(link, &plain);
    let journal = std::mem::take(&mut content.journal);
    let mut at = 0u32;
    for (offset, d) in journal.iter() {
        content.lay(Extent {
            offset,
            len: d.len() as u32,
            block,
            at,
        });
        at += d.len() as u32;
    }
    Some(unstored)
}

/// Blocks re-sealed at once by [`reseal`].
const RESEAL_PARALLEL: usize = 4;

/// Seals every content block of `content` that is under one of its
/// `priors` again under the file's own `link` (a block already under it
/// is left as it is), points the extents at the new blocks and empties
/// the priors. Returns the new blocks' keys.
async fn reseal<S: BlockStore>(
    vault: &Arc<Vault<S>>,
    link: &Link,
    content: &mut FileContent,
    durability: Durability,
) -> Result<HashSet<Id>, FsError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let blocks: Vec<_> = content.extents.blocks().into_iter().collect();
    let priors = &content.priors;
    let moved: Vec<Option<(Id, BlockRef)>> = stream::iter(blocks)
        .map(|b| async move {
            match vault.under_prior(link, priors, b).await? {
                None => Ok(None),
                Some(plain) => {
                    let fresh = vault.write_block(link, &plain, durability).await?;
                    Ok::<_, FsError>(Some((b.key, fresh)))
                }
            }
        })
        .buffer_unordered(RESEAL_PARALLEL)
        .try_collect()
        .await?;
    let moved: std::collections::HashMap<Id, BlockRef> = moved.into_iter().flatten().collect();
    content.extents.replace_blocks(&moved);
    content.priors.clear();
    Ok(moved.values().map(|b| b.key).collect())
}

/// A flush's error for a new file's entry that could not be stored.
fn unlinked(e: FsError) -> FsError {
    FsError::Unavailable(format!(
        "the new file's directory entry could not be stored: {e}"
    ))
}

/// The name `link` has in `dir`, its new file's entry stored, if it is not
/// `name`: another machine's new file had taken `name` meanwhile, so this
/// one was linked under a conflict name (see `Vault::create_pending`).
pub fn linked_as(dir: &Object, name: &[u8], link: &Link) -> Option<Vec<u8>> {
    let entries = dir.entries()?;
    let mine = |e: &super::Entry| e.link.name == link.name;
    if entries.get(name).is_some_and(mine) {
        return None;
    }
    entries
        .iter()
        .find(|(_, e)| mine(e))
        .map(|(actual, _)| actual.clone())
}
