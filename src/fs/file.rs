//! An open file: buffered writes, parallel chunk uploads, chunked reads.
//!
//! Writes land in per-chunk plaintext buffers. A buffer that fills its
//! chunk is sealed and uploaded at once in a background task (up to
//! [`super::vault::UPLOAD_SLOTS`] per vault in flight, to many owners), so a
//! sequential write streams into the ring instead of paying one round trip
//! per chunk. `flush` uploads the rest, waits for every upload, and only
//! then saves the manifest: once it returns, content and manifest are on r
//! replicas (close-to-open consistency). A file created with its directory
//! entry written behind ([`Vault::create_pending`]) also waits, in every
//! flush until it is stored, for that entry, concurrently with its own
//! manifest: a flush that returns `Ok` leaves the file reachable. Reads come from the buffers, the
//! chunks being uploaded, or the stored chunks, and start fetching the
//! next chunks ahead of a sequential reader.

use super::object::{Body, CHUNK_SIZE, Chunk, INLINE_MAX, Link, MAX_CHUNKS, Object, Time};
use super::pending::DirTicket;
use super::vault::{Vault, Versioned};
use super::{BlockStore, FsError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: u64 = 4;

/// What an upload task returns: chunk index, its plaintext, the result.
type UploadDone = (u64, Arc<Vec<u8>>, Result<Chunk, FsError>);

/// State of one open file (shared by all handles of the same file).
pub struct OpenFile {
    /// Which object this is.
    pub link: Link,
    /// The manifest as last loaded or saved, plus local changes.
    pub state: Versioned,
    /// Chunks being modified: index → plaintext (may be shorter than a chunk).
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Chunks being uploaded: index → plaintext, until the upload lands.
    uploading: HashMap<u64, Arc<Vec<u8>>>,
    /// Upload tasks: (index, plaintext, result).
    inflight: JoinSet<UploadDone>,
    /// The manifest differs from the stored one.
    modified: bool,
    /// Index of the chunk read last (to detect sequential reads).
    last_read: Option<u64>,
    /// The directory entry of this new file, while not known to be stored
    /// (kept after a failure, so every later flush reports it too).
    linking: Option<DirTicket>,
}

fn chunks_of(obj: &Object) -> &[Option<Chunk>] {
    match &obj.body {
        Body::File { chunks, .. } => chunks,
        _ => &[],
    }
}

fn inline_of(obj: &Object) -> Option<&Vec<u8>> {
    match &obj.body {
        Body::File { inline, .. } => inline.as_ref(),
        _ => None,
    }
}

fn inline_mut(obj: &mut Object) -> Result<&mut Option<Vec<u8>>, FsError> {
    match &mut obj.body {
        Body::File { inline, .. } => Ok(inline),
        _ => Err(FsError::Invalid("not a regular file".into())),
    }
}

fn chunks_mut(obj: &mut Object) -> Result<&mut Vec<Option<Chunk>>, FsError> {
    match &mut obj.body {
        Body::File { chunks, .. } => Ok(chunks),
        Body::Dir { .. } => Err(FsError::IsDir),
        Body::Symlink { .. } => Err(FsError::Invalid("not a regular file".into())),
    }
}

impl OpenFile {
    /// Opens the file `link` as stored now.
    pub async fn open<S: BlockStore>(vault: &Vault<S>, link: Link) -> Result<OpenFile, FsError> {
        let state = vault.load(&link).await?;
        Ok(OpenFile::from_state(link, state))
    }

    /// An open file from an already loaded manifest.
    pub fn from_state(link: Link, state: Versioned) -> OpenFile {
        OpenFile {
            link,
            state,
            dirty: BTreeMap::new(),
            uploading: HashMap::new(),
            inflight: JoinSet::new(),
            modified: false,
            last_read: None,
            linking: None,
        }
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

    /// Whether there are changes not yet saved.
    pub fn is_dirty(&self) -> bool {
        self.modified
            || !self.dirty.is_empty()
            || !self.uploading.is_empty()
            || self.linking.as_ref().is_some_and(|t| !t.is_done())
    }

    /// Re-reads the manifest if nothing local is pending (close-to-open:
    /// a new open sees what the last close elsewhere saved).
    pub async fn refresh<S: BlockStore>(&mut self, vault: &Vault<S>) -> Result<(), FsError> {
        if !self.is_dirty() {
            self.state = vault.load(&self.link).await?;
        }
        Ok(())
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
            let (idx, data, res) =
                joined.map_err(|e| FsError::Unavailable(format!("upload task: {e}")))?;
            self.uploading.remove(&idx);
            match res {
                Ok(chunk) => {
                    let chunks = chunks_mut(&mut self.state.obj)?;
                    if chunks.len() <= idx as usize {
                        chunks.resize(idx as usize + 1, None);
                    }
                    chunks[idx as usize] = Some(chunk);
                }
                Err(e) => {
                    // Keep the data so a later flush can retry, unless the
                    // chunk was rewritten meanwhile.
                    self.dirty
                        .entry(idx)
                        .or_insert_with(|| data.as_ref().clone());
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts uploading chunk `idx` (waits for an upload slot).
    async fn start_upload<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        idx: u64,
        data: Vec<u8>,
    ) {
        let permit = Arc::clone(&vault.upload_slots).acquire_owned().await;
        let data = Arc::new(data);
        self.uploading.insert(idx, Arc::clone(&data));
        let vault = Arc::clone(vault);
        let link = self.link.clone();
        self.inflight.spawn(async move {
            let _permit = permit;
            let res = vault.write_chunk(&link, idx, &data).await;
            if let Ok(c) = &res {
                vault.remember_plain(c.block, Arc::clone(&data));
            }
            (idx, data, res)
        });
    }

    /// The current plaintext of chunk `idx` (buffer, upload or store).
    async fn chunk_plain<S: BlockStore>(
        &self,
        vault: &Vault<S>,
        idx: u64,
    ) -> Result<Option<Arc<Vec<u8>>>, FsError> {
        if let Some(d) = self.dirty.get(&idx) {
            return Ok(Some(Arc::new(d.clone())));
        }
        if let Some(d) = self.uploading.get(&idx) {
            return Ok(Some(Arc::clone(d)));
        }
        if idx == 0
            && let Some(d) = inline_of(&self.state.obj)
        {
            return Ok(Some(Arc::new(d.clone())));
        }
        match chunks_of(&self.state.obj)
            .get(idx as usize)
            .copied()
            .flatten()
        {
            Some(c) => vault.read_chunk(&self.link, idx, c).await.map(Some),
            None => Ok(None),
        }
    }

    /// Writes `data` at `offset`; returns the bytes written.
    pub async fn write<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, FsError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::TooBig)?;
        if end.div_ceil(CHUNK_SIZE as u64) > MAX_CHUNKS as u64 {
            return Err(FsError::TooBig);
        }
        chunks_mut(&mut self.state.obj)?;
        self.collect(false).await.ok();
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let idx = pos / CHUNK_SIZE as u64;
            let co = (pos % CHUNK_SIZE as u64) as usize;
            let n = rest.len().min(CHUNK_SIZE - co);
            let (piece, tail) = rest.split_at(n);
            if self.uploading.contains_key(&idx) {
                // Rewriting a chunk in flight: let that upload land first.
                self.collect(true).await.ok();
            }
            if !self.dirty.contains_key(&idx) {
                let base = if co == 0 && n == CHUNK_SIZE {
                    Vec::new()
                } else {
                    match self.chunk_plain(vault, idx).await? {
                        Some(p) => p.as_ref().clone(),
                        None => Vec::new(),
                    }
                };
                self.set_dirty(idx, base)?;
            }
            let buf = self
                .dirty
                .get_mut(&idx)
                .ok_or(FsError::Invalid("chunk buffer vanished".into()))?;
            if buf.len() < co + n {
                buf.resize(co + n, 0);
            }
            buf[co..co + n].copy_from_slice(piece);
            if buf.len() == CHUNK_SIZE {
                let full = self.dirty.remove(&idx).unwrap_or_default();
                self.start_upload(vault, idx, full).await;
            }
            pos += n as u64;
            rest = tail;
        }
        let attrs = &mut self.state.obj.attrs;
        attrs.size = attrs.size.max(end);
        let now = Time::now();
        attrs.mtime = now;
        attrs.ctime = now;
        self.modified = true;
        Ok(data.len())
    }

    /// Reads up to `size` bytes at `offset` (short at end of file).
    pub async fn read<S: BlockStore>(
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
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let idx = pos / CHUNK_SIZE as u64;
            let co = (pos % CHUNK_SIZE as u64) as usize;
            let n = ((end - pos) as usize).min(CHUNK_SIZE - co);
            match self.chunk_plain(vault, idx).await? {
                Some(p) => {
                    let have = p.len().saturating_sub(co).min(n);
                    if have > 0 {
                        out.extend_from_slice(&p[co..co + have]);
                    }
                    out.resize(out.len() + (n - have), 0);
                }
                None => out.resize(out.len() + n, 0),
            }
            if self.last_read.is_some_and(|l| l + 1 == idx || l == idx) {
                self.read_ahead(vault, idx);
            }
            self.last_read = Some(idx);
            pos += n as u64;
        }
        Ok(out)
    }

    /// Starts fetching the chunks after `idx` in the background.
    fn read_ahead<S: BlockStore>(&self, vault: &Arc<Vault<S>>, idx: u64) {
        let chunks = chunks_of(&self.state.obj);
        for next in idx + 1..=idx + READ_AHEAD_CHUNKS {
            if let Some(Some(c)) = chunks.get(next as usize).copied()
                && !vault.has_plain(c.block)
                && vault.claim_prefetch(c.block)
            {
                let v = Arc::clone(vault);
                let link = self.link.clone();
                tokio::spawn(async move {
                    let _ = v.read_chunk(&link, next, c).await;
                    v.release_prefetch(c.block);
                });
            }
        }
    }

    /// Sets the length: drops chunks past it, zero-fills when growing.
    pub async fn truncate<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
        size: u64,
    ) -> Result<(), FsError> {
        if size.div_ceil(CHUNK_SIZE as u64) > MAX_CHUNKS as u64 {
            return Err(FsError::TooBig);
        }
        chunks_mut(&mut self.state.obj)?;
        self.collect(true).await?;
        let keep = size.div_ceil(CHUNK_SIZE as u64);
        self.dirty.retain(|&i, _| i < keep);
        if size < self.size() && !size.is_multiple_of(CHUNK_SIZE as u64) {
            // The chunk holding the new end keeps only its head.
            let idx = size / CHUNK_SIZE as u64;
            let within = (size % CHUNK_SIZE as u64) as usize;
            if let Some(p) = self.chunk_plain(vault, idx).await? {
                let mut head = p.as_ref().clone();
                head.truncate(within);
                self.set_dirty(idx, head)?;
            }
        }
        let chunks = chunks_mut(&mut self.state.obj)?;
        chunks.truncate(keep as usize);
        let attrs = &mut self.state.obj.attrs;
        attrs.size = size;
        let now = Time::now();
        attrs.mtime = now;
        attrs.ctime = now;
        self.modified = true;
        Ok(())
    }

    /// Starts a buffer for chunk `idx` (its current content). Chunk 0's
    /// buffer replaces inline bytes, so no stale copy is left to read.
    fn set_dirty(&mut self, idx: u64, data: Vec<u8>) -> Result<(), FsError> {
        if idx == 0 {
            *inline_mut(&mut self.state.obj)? = None;
        }
        self.dirty.insert(idx, data);
        Ok(())
    }

    /// Small files keep their bytes in the manifest; a file that grew past
    /// [`INLINE_MAX`] moves them into chunk 0.
    async fn place_small_content<S: BlockStore>(
        &mut self,
        vault: &Arc<Vault<S>>,
    ) -> Result<(), FsError> {
        let size = self.size();
        if size <= INLINE_MAX {
            let data = self.read(vault, 0, size as usize).await?;
            self.dirty.clear();
            chunks_mut(&mut self.state.obj)?.clear();
            *inline_mut(&mut self.state.obj)? = Some(data);
        } else if let Some(d) = inline_mut(&mut self.state.obj)?.take() {
            self.dirty.entry(0).or_insert(d);
        }
        Ok(())
    }

    /// Marks attributes changed (chmod, utimens) so `flush` saves them.
    pub fn touch_attrs(&mut self) {
        self.modified = true;
    }

    /// Uploads every pending chunk, waits for all uploads, then saves the
    /// manifest. A concurrent writer's version is replaced (last writer wins).
    /// A new file's directory entry being stored behind is waited for at
    /// the same time; if it failed, so does the flush.
    pub async fn flush<S: BlockStore>(&mut self, vault: &Arc<Vault<S>>) -> Result<(), FsError> {
        let Some(ticket) = self.linking.clone() else {
            return self.store(vault).await;
        };
        let (stored, linked) = tokio::join!(self.store(vault), ticket.wait());
        match linked {
            Ok(_) => self.linking = None,
            Err(e) => {
                stored?;
                return Err(FsError::Unavailable(format!(
                    "the new file's directory entry could not be stored: {e}"
                )));
            }
        }
        stored
    }

    /// The content and manifest part of [`OpenFile::flush`].
    async fn store<S: BlockStore>(&mut self, vault: &Arc<Vault<S>>) -> Result<(), FsError> {
        self.collect(true).await?;
        if self.modified {
            self.place_small_content(vault).await?;
        }
        let pending: Vec<(u64, Vec<u8>)> = std::mem::take(&mut self.dirty).into_iter().collect();
        for (idx, data) in pending {
            self.start_upload(vault, idx, data).await;
        }
        self.collect(true).await?;
        if !self.modified {
            return Ok(());
        }
        // Chunks past the end (from a truncate racing an upload) go.
        let keep = self.size().div_ceil(CHUNK_SIZE as u64) as usize;
        let chunks = chunks_mut(&mut self.state.obj)?;
        chunks.truncate(keep);
        let mut expected = self.state.seq;
        for _ in 0..16 {
            match vault.save(&self.link, &self.state.obj, expected).await {
                Ok(seq) => {
                    self.state.seq = seq;
                    self.modified = false;
                    return Ok(());
                }
                Err(FsError::Conflict(current)) => {
                    expected = match current {
                        Some(c) => c,
                        None => vault
                            .load(&self.link)
                            .await
                            .map(|v| v.seq)
                            .unwrap_or(expected + 1),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Conflict(None))
    }
}
