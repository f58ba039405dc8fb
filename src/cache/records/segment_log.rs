//! The record cache's log: segment files of checksummed frames, the index
//! of live frames with its LRU order, the decoded versions of recent keys,
//! eviction, compaction, and the import of the old one-file-per-record
//! layout. [`super::RecordCache`] wraps it in a mutex.

use crate::id::Id;
use crate::record::Record;
use crate::store::decode_versions;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment takes no more frames once it holds this many bytes.
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;
/// Dead bytes below which no segment is compacted.
pub(super) const COMPACT_DEAD_BYTES: u64 = 16 << 20;
/// A frame's header: payload length, CRC-32, key.
pub(super) const HEADER: u64 = 40;
/// The largest payload a frame may hold (16 versions of the largest
/// record take about 16 MiB); a longer length is damage.
pub(super) const MAX_PAYLOAD: u64 = 64 << 20;
/// Keys whose decoded versions are kept in memory, per generation.
pub(super) const RECENT_KEYS: usize = 2048;
/// Bytes of versions kept in memory, per generation.
pub(super) const RECENT_BYTES: u64 = 2 << 20;

/// Sizes the log works with (smaller in tests).
#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub(super) segment_bytes: u64,
    pub(super) compact_dead_bytes: u64,
}

pub(super) const LIMITS: Limits = Limits {
    segment_bytes: SEGMENT_BYTES,
    compact_dead_bytes: COMPACT_DEAD_BYTES,
};

/// Where the live frame of a key is, and how recently it was used.
#[derive(Clone, Copy)]
pub(super) struct Loc {
    pub(super) seg: u64,
    pub(super) offset: u64,
    /// Payload bytes.
    pub(super) len: u64,
    pub(super) tick: u64,
    /// [`fingerprint`] of the payload; 0 while unknown (read at open).
    pub(super) fp: u64,
}

impl Loc {
    pub(super) fn frame_bytes(&self) -> u64 {
        HEADER + self.len
    }

    /// Whether `self` and `other` stand for the same payload.
    pub(super) fn same_payload(&self, other: &Loc) -> bool {
        (self.fp != 0 && self.fp == other.fp)
            || (self.seg, self.offset) == (other.seg, other.offset)
    }
}

/// One segment file.
pub(super) struct Segment {
    pub(super) file: Arc<File>,
    /// Bytes in the file (appends go there).
    pub(super) size: u64,
    /// Bytes of the frames the index points to.
    pub(super) live: u64,
}

impl Segment {
    pub(super) fn new(file: Arc<File>, size: u64) -> Segment {
        Segment {
            file,
            size,
            live: 0,
        }
    }
}

/// A frame read back: where it starts, its key and payload.
pub(super) struct Frame<'a> {
    pub(super) offset: u64,
    pub(super) key: Id,
    pub(super) payload: &'a [u8],
}

/// The frames of a segment's bytes, up to the first torn or damaged one;
/// `end` is then where the good frames end.
pub(super) struct Frames<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) end: usize,
}

impl<'a> Frames<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Frames { bytes, end: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let rest = &self.bytes[self.end..];
        let header = rest.get(..HEADER as usize)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as u64;
        let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
        if len > MAX_PAYLOAD {
            return None;
        }
        let body = rest.get(8..(HEADER + len) as usize)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        let frame = Frame {
            offset: self.end as u64,
            key: Id(body[..32].try_into().ok()?),
            payload: &body[32..],
        };
        self.end += (HEADER + len) as usize;
        Some(frame)
    }
}

/// The bytes of a frame holding `payload` for `key`.
pub(super) fn encode_frame(key: Id, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&key.0);
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER as usize + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(payload);
    out
}

/// A tag of a payload (never 0): equal tags mean equal bytes.
pub(super) fn fingerprint(bytes: &[u8]) -> u64 {
    // In memory only: BLAKE3, several times faster than the SHA-256 of
    // keys on a journal-carrying record of some 20 KiB per `fsync`.
    let h = blake3::hash(bytes);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default()) | 1
}

pub(super) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:020}.log"))
}

pub(super) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a directory of the one-file-per-record layout.
pub(super) fn is_old_fanout(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The payload of the frame at `loc`.
pub(super) fn read_payload(file: &File, loc: &Loc) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset + HEADER)?;
    Ok(buf)
}

/// The versions of `key` in the frame at `loc`, and their fingerprint.
pub(super) fn load(file: &File, loc: &Loc, key: Id) -> Result<(u64, Vec<Record>), String> {
    let bytes = read_payload(file, loc).map_err(|e| e.to_string())?;
    let versions = decode_versions(&bytes, key)?;
    Ok((fingerprint(&bytes), versions))
}

/// Whether `versions` are signed versions of record `key`.
pub(super) fn sound(key: Id, versions: &[Record]) -> bool {
    !versions.is_empty()
        && versions
            .iter()
            .all(|r| r.key() == key && r.verify().is_ok())
}

/// A key's decoded versions, shared between the cache and its readers.
pub(super) type Shared = Arc<Vec<Record>>;

/// Decoded versions of the keys most recently written or read, each
/// tagged with the fingerprint of the payload they were decoded from (or
/// encoded to): served only while the index holds that payload. Two
/// generations: when the young one fills, it becomes the old one and the
/// old one is dropped; a hit in the old one moves to the young one.
#[derive(Default)]
pub(super) struct Recent {
    pub(super) young: HashMap<Id, (u64, u64, Shared)>,
    pub(super) old: HashMap<Id, (u64, u64, Shared)>,
    pub(super) young_bytes: u64,
}

impl Recent {
    /// The versions kept for `key` if they are those of payload `fp`.
    pub(super) fn get(&mut self, key: Id, fp: u64) -> Option<Shared> {
        if let Some((f, _, v)) = self.young.get(&key) {
            return (*f == fp).then(|| Arc::clone(v));
        }
        let (f, size, v) = self.old.remove(&key)?;
        if f != fp {
            return None;
        }
        let out = Arc::clone(&v);
        self.keep(key, fp, size, v);
        Some(out)
    }

    /// Keeps `versions` (payload `fp`, `size` bytes) for `key`.
    pub(super) fn keep(&mut self, key: Id, fp: u64, size: u64, versions: Shared) {
        self.remove(key);
        if size > RECENT_BYTES / 8 {
            return;
        }
        if self.young.len() >= RECENT_KEYS || self.young_bytes + size > RECENT_BYTES {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young.insert(key, (fp, size, versions));
        self.young_bytes += size;
    }

    pub(super) fn remove(&mut self, key: Id) {
        if let Some((_, size, _)) = self.young.remove(&key) {
            self.young_bytes -= size;
        }
        self.old.remove(&key);
    }
}

/// What the index says of a key.
pub(super) enum Found {
    Missing,
    /// Decoded versions kept in memory (already touched).
    Recent(Loc, Shared),
    /// To be read from the segment file.
    OnDisk(Loc, Arc<File>),
}

/// The log, its index and LRU order.
pub(super) struct Log {
    pub(super) dir: PathBuf,
    pub(super) limits: Limits,
    pub(super) entries: HashMap<Id, Loc>,
    pub(super) order: BTreeMap<u64, Id>,
    pub(super) tick: u64,
    /// Bytes of the live frames.
    pub(super) total: u64,
    pub(super) pinned: HashSet<Id>,
    pub(super) segments: BTreeMap<u64, Segment>,
    /// The number of the next segment (above every one seen on disk).
    pub(super) next_seg: u64,
    pub(super) recent: Recent,
}

impl Log {
    pub(super) fn new(dir: &Path, limits: Limits) -> Log {
        Log {
            dir: dir.to_path_buf(),
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            total: 0,
            pinned: HashSet::new(),
            segments: BTreeMap::new(),
            next_seg: 1,
            recent: Recent::default(),
        }
    }

    /// Rebuilds the index from the segments, oldest first.
    pub(super) fn load_segments(&mut self) -> std::io::Result<()> {
        let mut numbers: Vec<u64> = fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|e| segment_number(&e.file_name().to_string_lossy()))
            .collect();
        numbers.sort_unstable();
        let newest = numbers.last().copied();
        self.next_seg = newest.map_or(1, |n| n + 1);
        for n in numbers {
            self.load_segment(n, Some(n) == newest);
        }
        Ok(())
    }

    /// Indexes the frames of segment `n`; cuts a torn tail off the
    /// `newest` one (appends go there).
    pub(super) fn load_segment(&mut self, n: u64, newest: bool) {
        let path = segment_path(&self.dir, n);
        let read = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map(|_| (f, bytes))
            });
        let (file, bytes) = match read {
            Ok(r) => r,
            Err(e) => {
                log::warn!("record cache: {}: {e}; skipped", path.display());
                return;
            }
        };
        let file = Arc::new(file);
        let size = bytes.len() as u64;
        self.segments
            .insert(n, Segment::new(Arc::clone(&file), size));
        let mut frames = Frames::new(&bytes);
        for f in frames.by_ref() {
            self.index_loaded(n, &f);
        }
        let good = frames.end as u64;
        if good < size {
            log::warn!(
                "record cache: {} ends in {} bytes of a torn or damaged frame",
                path.display(),
                size - good
            );
            if newest {
                if let Err(e) = file.set_len(good) {
                    log::debug!("record cache: cutting {}: {e}", path.display());
                }
                if let Some(s) = self.segments.get_mut(&n) {
                    s.size = good;
                }
            }
        }
    }

    /// Applies a frame read at open: it replaces what came before.
    pub(super) fn index_loaded(&mut self, seg: u64, f: &Frame) {
        if f.payload.is_empty() {
            self.remove(f.key);
            return;
        }
        let tick = self.next_tick();
        let loc = Loc {
            seg,
            offset: f.offset,
            len: f.payload.len() as u64,
            tick,
            fp: 0,
        };
        self.insert(f.key, loc);
    }

    pub(super) fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Points the index at `loc` for `key` (replacing any entry).
    pub(super) fn insert(&mut self, key: Id, loc: Loc) {
        self.remove(key);
        self.order.insert(loc.tick, key);
        self.total += loc.frame_bytes();
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live += loc.frame_bytes();
        }
        self.entries.insert(key, loc);
    }

    /// Takes `key` out of the index (not out of the log).
    pub(super) fn remove(&mut self, key: Id) -> Option<Loc> {
        let loc = self.entries.remove(&key)?;
        self.order.remove(&loc.tick);
        self.total = self.total.saturating_sub(loc.frame_bytes());
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live = s.live.saturating_sub(loc.frame_bytes());
        }
        Some(loc)
    }

    pub(super) fn touch(&mut self, key: Id) {
        let tick = self.next_tick();
        if let Some(l) = self.entries.get_mut(&key) {
            self.order.remove(&l.tick);
            l.tick = tick;
            self.order.insert(tick, key);
        }
    }

    /// The segment appends go to: the newest, or a new one if it is full.
    pub(super) fn tail(&mut self) -> Option<u64> {
        if let Some((&n, s)) = self.segments.last_key_value()
            && n + 1 == self.next_seg
            && s.size < self.limits.segment_bytes
        {
            return Some(n);
        }
        let n = self.next_seg;
        self.next_seg += 1;
        let path = segment_path(&self.dir, n);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                self.segments.insert(n, Segment::new(Arc::new(file), 0));
                Some(n)
            }
            Err(e) => {
                log::debug!("record cache: {}: {e}", path.display());
                None
            }
        }
    }

    /// Appends a frame; where it went.
    pub(super) fn append(&mut self, key: Id, payload: &[u8]) -> Option<(u64, u64)> {
        if payload.len() as u64 > MAX_PAYLOAD {
            log::debug!(
                "record cache: {} bytes for {} not kept",
                payload.len(),
                key.short()
            );
            return None;
        }
        let n = self.tail()?;
        let seg = self.segments.get_mut(&n)?;
        let frame = encode_frame(key, payload);
        let offset = seg.size;
        if let Err(e) = seg.file.write_all_at(&frame, offset) {
            log::debug!("record cache: appending to segment {n}: {e}");
            let _ = seg.file.set_len(offset);
            return None;
        }
        seg.size += frame.len() as u64;
        Some((n, offset))
    }

    /// Appends `payload` (of fingerprint `fp`) as what is kept for `key`,
    /// most recently used; false if it could not be written.
    pub(super) fn write_entry(&mut self, key: Id, payload: &[u8], fp: u64) -> bool {
        let Some((seg, offset)) = self.append(key, payload) else {
            return false;
        };
        let tick = self.next_tick();
        self.insert(
            key,
            Loc {
                seg,
                offset,
                len: payload.len() as u64,
                tick,
                fp,
            },
        );
        true
    }

    /// Drops `key`, with a tombstone so that it stays dropped on reopen.
    pub(super) fn forget_entry(&mut self, key: Id) {
        self.recent.remove(key);
        if self.remove(key).is_some() && self.append(key, &[]).is_none() {
            log::debug!("record cache: no tombstone for {}", key.short());
        }
    }

    /// Drops `key` if it still holds the payload `seen` was read from.
    pub(super) fn forget_if_unchanged(&mut self, key: Id, seen: &Loc) {
        if self.entries.get(&key).is_some_and(|l| l.same_payload(seen)) {
            self.forget_entry(key);
        }
    }

    /// Whether the log already holds `payload` (fingerprint `fp`) for `key`.
    pub(super) fn holds(&mut self, key: Id, fp: u64, payload: &[u8]) -> bool {
        let Some(loc) = self.entries.get(&key).copied() else {
            return false;
        };
        if loc.fp != 0 || loc.len != payload.len() as u64 {
            return loc.fp == fp;
        }
        // Indexed at open: reading it is cheaper than writing it again.
        let Some(seg) = self.segments.get(&loc.seg) else {
            return false;
        };
        let same = read_payload(&seg.file, &loc).is_ok_and(|old| old == payload);
        if same && let Some(l) = self.entries.get_mut(&key) {
            l.fp = fp;
        }
        same
    }

    pub(super) fn find(&mut self, key: Id) -> Found {
        let Some(loc) = self.entries.get(&key).copied() else {
            return Found::Missing;
        };
        if loc.fp != 0
            && let Some(v) = self.recent.get(key, loc.fp)
        {
            self.touch(key);
            return Found::Recent(loc, v);
        }
        match self.segments.get(&loc.seg) {
            Some(s) => Found::OnDisk(loc, Arc::clone(&s.file)),
            None => Found::Missing,
        }
    }

    /// Notes that `versions` (of payload `fp`) were read and verified
    /// from `seen`, if `key` still holds that payload.
    pub(super) fn settle(&mut self, key: Id, seen: &Loc, fp: u64, versions: &Shared) {
        let Some(l) = self.entries.get_mut(&key) else {
            return;
        };
        if !l.same_payload(seen) {
            return;
        }
        l.fp = fp;
        let len = l.len;
        self.touch(key);
        self.recent.keep(key, fp, len, Arc::clone(versions));
    }

    /// Drops least recently used unpinned records while over `capacity`.
    pub(super) fn evict(&mut self, capacity: u64) {
        let mut cursor = 0;
        while self.total > capacity {
            let Some((&t, &key)) = self.order.range(cursor..).next() else {
                break;
            };
            cursor = t + 1;
            if !self.pinned.contains(&key) {
                self.forget_entry(key);
            }
        }
    }

    /// Bytes of the segments the index does not point to.
    pub(super) fn dead_bytes(&self) -> u64 {
        let size: u64 = self.segments.values().map(|s| s.size).sum();
        size.saturating_sub(self.total)
    }

    /// When dead bytes outweigh the live ones (and the floor), moves the
    /// live entries of the oldest segment to the tail and deletes it.
    pub(super) fn compact(&mut self) {
        let dead = self.dead_bytes();
        if dead <= self.total || dead <= self.limits.compact_dead_bytes {
            return;
        }
        let (Some(&oldest), Some(&newest)) = (
            self.segments.keys().next(),
            self.segments.keys().next_back(),
        ) else {
            return;
        };
        if oldest != newest && self.move_live_entries(oldest) {
            self.delete_segment(oldest);
        }
    }

    /// Appends again the frames of segment `n` the index points to; false
    /// if some could not be. Its tombstones are not kept: `n` is the
    /// oldest segment, no earlier frame is left for them to hide.
    pub(super) fn move_live_entries(&mut self, n: u64) -> bool {
        let Some(seg) = self.segments.get(&n) else {
            return false;
        };
        if seg.live == 0 {
            return true;
        }
        let mut bytes = vec![0; seg.size as usize];
        if let Err(e) = seg.file.read_exact_at(&mut bytes, 0) {
            log::debug!("record cache: compacting segment {n}: {e}");
            return false;
        }
        for f in Frames::new(&bytes) {
            let Some(loc) = self.entries.get(&f.key).copied() else {
                continue;
            };
            if (loc.seg, loc.offset) != (n, f.offset) {
                continue;
            }
            let Some((seg, offset)) = self.append(f.key, f.payload) else {
                return false;
            };
            self.insert(f.key, Loc { seg, offset, ..loc });
        }
        self.drop_unreadable(n);
        true
    }

    /// Forgets entries still pointing to segment `n` after its frames were
    /// moved: the file was damaged after it was read at open.
    pub(super) fn drop_unreadable(&mut self, n: u64) {
        if self.segments.get(&n).is_none_or(|s| s.live == 0) {
            return;
        }
        let lost: Vec<Id> = self
            .entries
            .iter()
            .filter(|(_, l)| l.seg == n)
            .map(|(k, _)| *k)
            .collect();
        log::warn!(
            "record cache: {} entries of segment {n} unreadable; dropped",
            lost.len()
        );
        for key in lost {
            self.forget_entry(key);
        }
    }

    /// Deletes segment `n` (kept in the index if the file stays, so that
    /// it is tried again and no younger tombstone is compacted first).
    pub(super) fn delete_segment(&mut self, n: u64) {
        let path = segment_path(&self.dir, n);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                log::debug!("record cache: deleting {}: {e}", path.display());
                return;
            }
        }
        self.segments.remove(&n);
    }

    /// Moves the files of the one-file-per-record layout into the log and
    /// deletes them, their directories and `tmp/`.
    pub(super) fn import_old_layout(&mut self) {
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in listing.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            if name == "tmp" {
                if let Err(e) = fs::remove_dir_all(&path) {
                    log::debug!("record cache: {}: {e}", path.display());
                }
            } else if is_old_fanout(&name) {
                self.import_old_dir(&path);
                let _ = fs::remove_dir(&path);
            }
        }
    }

    /// Imports the record files of `dir` (verified when read, as every
    /// entry: checking a whole cache's signatures here would hold up
    /// the mount).
    pub(super) fn import_old_dir(&mut self, dir: &Path) {
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        for e in listing.flatten() {
            let Ok(key) = e.file_name().to_string_lossy().parse::<Id>() else {
                continue;
            };
            let path = e.path();
            // A key the log holds was imported already (and maybe written
            // since): the file is stale.
            if !self.entries.contains_key(&key) {
                match fs::read(&path) {
                    Ok(b) if b.is_empty() || b.len() as u64 > MAX_PAYLOAD => {}
                    Ok(b) => {
                        if !self.write_entry(key, &b, fingerprint(&b)) {
                            continue;
                        }
                    }
                    Err(err) => {
                        log::debug!("record cache: {}: {err}", path.display());
                        continue;
                    }
                }
            }
            if let Err(err) = fs::remove_file(&path) {
                log::debug!("record cache: {}: {err}", path.display());
            }
        }
    }
}
