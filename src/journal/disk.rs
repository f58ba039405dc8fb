//! The mount's local write journal on disk: writes waiting to be replayed
//! to the ring, in order.
//!
//! # Format
//!
//! Entries are appended to segment files `DIR/seg-<N>.log`, where `<N>` is
//! the number of the segment's first entry, written with 20 digits. The
//! entries of a segment are numbered consecutively from `<N>` in file order
//! (numbers are not stored). Each entry is one frame:
//!
//! ```text
//! u32 LE   payload length (at most 64 MiB; more is damage)
//! u32 LE   CRC-32 (IEEE, crc32fast) of the payload
//! payload  postcard bytes of an [`Entry`]
//! ```
//!
//! One segment is appended to at a time, through one open file; once it
//! passes 8 MiB the next entry starts a new one. The file is written with
//! zeros ahead of its frames (1 MiB at a time), so an append overwrites
//! bytes the file already has and its `fdatasync` commits no metadata (on
//! a busy file system a metadata commit made it twice as slow); a header
//! of zeros followed only by zeros is the end of the segment, and after
//! the last frame a reopen leaves the zeros be. Appends are serialized, so
//! numbers follow file order. A lazy append ([`Journal::append`]) is a plain
//! write, on disk after the next [`Journal::sync`]: one `fdatasync` of each
//! segment written since, and a directory fsync if a segment was created. A
//! durable one ([`Journal::append_durable`]) `fdatasync`s its segment (and
//! the directory after a new segment) before it returns.
//!
//! An entry appended as *sent* ([`Journal::append_sent`], durably) is a
//! write the ring took lazily while this journal keeps it, until a ring
//! sync makes it durable there and it is removed: it is in no lookup and
//! not in the journal's size, and nothing replays it while the node runs.
//! Its frame is like any other, so a reopen after a crash indexes it and
//! the replay sends it again (a put the ring may hold already).
//!
//! # Open
//!
//! The segments are read in order and indexed; new appends always go to a
//! new segment. A torn frame at the end of the last segment (a crash
//! mid-append, never acknowledged) is cut off. A frame that fails its CRC,
//! claims more than 64 MiB or does not decode is damage: the segment's bytes
//! from that frame on are copied to `DIR/damaged/seg-<N>.log.<offset>`
//! (kept for the user, never deleted), the segment is cut there with a
//! warning, and the next segment is read. The next number is past every
//! segment's first number, every entry read, a damaged last frame, and the
//! numbers naming files in `DIR/failed/` and `DIR/damaged/` (never
//! overwritten).
//!
//! A journal of earlier versions (one file `DIR/<20-digit number>` per
//! entry) is migrated on open: its entries are appended in order to a new
//! segment, synced, and the old files deleted; one that does not decode is
//! moved to `DIR/damaged/`.
//!
//! # Index
//!
//! The index lives in memory: each entry's segment, offset and frame length
//! (a read is one positioned read of that frame, checked against its CRC),
//! each record's newest journaled version, and which entry holds each
//! block. Removing an entry only drops it from the index; a segment file is
//! deleted as soon as none of its entries is left (if it was the one being
//! appended to, the next append starts a new one). So a reopen brings back
//! the removed entries of a segment that still holds others: they are
//! replayed again (puts the ring already holds).
//!
//! `DIR/tmp/` stages whole-file writes (entries set aside to `DIR/failed/`,
//! damaged parts), so a crash leaves whole files only.

use crate::id::Id;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use crate::store::StoreError;
use crate::store::fsutil::{
    clear_dir, ensure_dir, io_err, remove_file, stage_with, sync_dir, zeros_ahead,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A segment this large is not appended to any more.
const SEGMENT_MAX: u64 = 8 << 20;

/// The largest payload a frame may hold; a larger length is damage.
const MAX_PAYLOAD: u32 = 64 << 20;

/// Bytes before each payload: its length and its CRC.
const HEADER: usize = 8;

/// One journaled write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A block, under the hash of its bytes, claimed by its owner.
    Block {
        key: Id,
        /// Postcard writes bytes as it writes a sequence of `u8` (a length,
        /// then the bytes), only without a call per byte.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        claim: Claim,
    },
    /// A record version.
    Record { record: Record },
    /// An owner's release of its claims on blocks.
    Release { release: Release },
}

impl Entry {
    /// The item's DHT key (for a release, the hash of its signature).
    pub fn key(&self) -> Id {
        match self {
            Entry::Block { key, .. } => *key,
            Entry::Record { record } => record.key(),
            Entry::Release { release } => Id::hash(&release.sig),
        }
    }
}

/// What kind of write an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Record,
    Release,
}

/// Where one entry is, without its bytes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: Id,
    kind: Kind,
    /// The first number of its segment.
    segment: u64,
    /// Where its frame starts in the segment.
    offset: u64,
    /// Its whole frame's length, header included.
    len: u32,
}

impl Meta {
    /// Where `entry`'s frame is: at `offset` in `segment`, `len` bytes.
    fn of(entry: &Entry, segment: u64, offset: u64, len: u32) -> Meta {
        Meta {
            key: entry.key(),
            kind: match entry {
                Entry::Block { .. } => Kind::Block,
                Entry::Record { .. } => Kind::Record,
                Entry::Release { .. } => Kind::Release,
            },
            segment,
            offset,
            len,
        }
    }
}

/// The segment being appended to.
struct Writer {
    /// Its first entry's number.
    first: u64,
    /// Opened for writing (frames go where the zeros ahead start).
    file: Arc<File>,
    /// Its entries' length: where the next frame goes.
    len: u64,
    /// The file's size: entries, then zeros.
    size: u64,
}

#[derive(Default)]
struct Index {
    /// The number the next entry gets.
    next: u64,
    /// Every entry, oldest first.
    entries: BTreeMap<u64, Meta>,
    /// Each record's newest journaled version and its entry.
    records: HashMap<Id, (u64, Record)>,
    /// Each journaled block's (newest) entry.
    blocks: HashMap<Id, u64>,
    /// Sum of the entries' frame lengths.
    bytes: u64,
    /// Entries appended as sent ([`Journal::append_sent`]), by number.
    sent: HashMap<u64, Meta>,
    /// Live entries of each segment on disk (sent ones too), by first
    /// number.
    live: HashMap<u64, u64>,
    /// The segment appended to, once this journal appended something.
    current: Option<Writer>,
    /// Segments written lazily since the last sync.
    unsynced: HashMap<u64, Arc<File>>,
    /// Lazy appends so far (a durable append that saw none since it
    /// wrote knows its `fdatasync` covered every one).
    lazy_appends: u64,
    /// Segment files created so far (the directory needs an fsync for them).
    created: u64,
}

impl Index {
    /// Adds entry `n`, whose frame is at `offset` in `segment`; a lookup
    /// by key keeps finding the newest entry of the key.
    fn insert(&mut self, n: u64, entry: &Entry, segment: u64, offset: u64, len: u32) {
        let key = entry.key();
        match entry {
            Entry::Block { .. } => {
                let newest = self.blocks.entry(key).or_insert(n);
                *newest = (*newest).max(n);
            }
            Entry::Record { record } => {
                if self.records.get(&key).is_none_or(|(m, _)| *m < n) {
                    self.records.insert(key, (n, record.clone()));
                }
            }
            Entry::Release { .. } => {}
        }
        let meta = Meta::of(entry, segment, offset, len);
        self.entries.insert(n, meta);
        *self.live.entry(segment).or_default() += 1;
        self.bytes += u64::from(len);
    }

    /// Drops entry `n` from the index; what it was, if it was there.
    fn forget(&mut self, n: u64) -> Option<Meta> {
        let m = self.entries.remove(&n)?;
        self.bytes = self.bytes.saturating_sub(u64::from(m.len));
        match m.kind {
            Kind::Block => {
                if self.blocks.get(&m.key) == Some(&n) {
                    self.blocks.remove(&m.key);
                }
            }
            Kind::Record => {
                if self.records.get(&m.key).is_some_and(|(k, _)| *k == n) {
                    self.records.remove(&m.key);
                }
            }
            Kind::Release => {}
        }
        if let Some(live) = self.live.get_mut(&m.segment) {
            *live = live.saturating_sub(1);
        }
        Some(m)
    }

    /// Drops sent entry `n`; its segment, if it was one.
    fn forget_sent(&mut self, n: u64) -> Option<u64> {
        let segment = self.sent.remove(&n)?.segment;
        if let Some(live) = self.live.get_mut(&segment) {
            *live = live.saturating_sub(1);
        }
        Some(segment)
    }

    /// Whether `segment` holds no live entry.
    fn is_dead(&self, segment: u64) -> bool {
        self.live.get(&segment) == Some(&0)
    }
}

/// How an entry is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Append {
    /// On disk after the next sync.
    Lazy,
    /// On disk before the append returns.
    Durable,
    /// Durable, and sent to the ring already (see [`Journal::append_sent`]).
    Sent,
    /// Sent to the ring already, on disk after the next sync or durable
    /// append (see [`Journal::append_sent_lazily`]).
    SentLazily,
}

/// The journal in one directory.
pub struct Journal {
    dir: PathBuf,
    tmp: PathBuf,
    index: Mutex<Index>,
    /// [`Index::created`] as of the last directory fsync; held while one
    /// runs.
    dir_synced: Mutex<u64>,
    /// Held through a [`Journal::sync`], so a sync that finds nothing left
    /// to do returns only after the one that took its segments finished.
    syncing: Mutex<()>,
}

/// How many entries and bytes a journal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalSize {
    pub entries: u64,
    pub bytes: u64,
}

/// Entry `n` from its frame, checked against its CRC.
fn decode_frame(n: u64, frame: &Frame) -> Result<Entry, StoreError> {
    if !frame.intact() {
        return Err(StoreError::Io(format!(
            "journal entry {n} fails its CRC check"
        )));
    }
    postcard::from_bytes(frame.payload())
        .map_err(|e| StoreError::Io(format!("journal entry {n}: {e}")))
}

/// An old-format entry file's name.
fn entry_name(n: u64) -> String {
    format!("{n:020}")
}

/// Segment `first`'s file name.
fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// The number in a name of 20 digits.
fn parse_number(digits: &str) -> Option<u64> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// The first number of a segment file's name.
fn parse_segment_name(name: &str) -> Option<u64> {
    parse_number(name.strip_prefix("seg-")?.strip_suffix(".log")?)
}

/// `entry` as one frame: length, CRC, payload.
fn encode(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let mut frame = vec![0; HEADER];
    crate::postcard_tail::append(entry, &mut frame)
        .map_err(|e| StoreError::Io(format!("encode journal entry: {e}")))?;
    let len = u32::try_from(frame.len() - HEADER)
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Io(format!("journal entry of {} bytes", frame.len())))?;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// A frame header's payload length and CRC.
fn header(bytes: &[u8; HEADER]) -> (u32, u32) {
    let [a, b, c, d, e, f, g, h] = *bytes;
    (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    )
}

/// One frame as read back by number.
struct Frame(Vec<u8>);

impl Frame {
    fn payload(&self) -> &[u8] {
        self.0.get(HEADER..).unwrap_or_default()
    }

    /// Whether its header matches its payload.
    fn intact(&self) -> bool {
        let Some(head) = self.0.first_chunk::<HEADER>() else {
            return false;
        };
        let (len, crc) = header(head);
        len as usize == self.payload().len() && crc32fast::hash(self.payload()) == crc
    }
}

/// What reading the next frame of a segment found.
enum Scan {
    /// The end of the segment, after a whole frame.
    End,
    /// An entry and its frame's length.
    Entry(Entry, u32),
    /// A frame cut short by the end of the file.
    Torn,
    /// A frame that is not what was written (why).
    Damaged(String),
}

/// Reads the frame at `offset` of a segment of `size` bytes.
fn scan_frame(r: &mut impl Read, offset: u64, size: u64) -> std::io::Result<Scan> {
    let left = size.saturating_sub(offset);
    if left == 0 {
        return Ok(Scan::End);
    }
    if left < HEADER as u64 {
        return Ok(Scan::Torn);
    }
    let mut head = [0; HEADER];
    r.read_exact(&mut head)?;
    if head == [0; HEADER] {
        // The zeros written ahead: the end, if nothing but zeros follows.
        let mut rest = r.take(left - HEADER as u64);
        let mut buf = vec![0; 64 << 10];
        loop {
            let n = rest.read(&mut buf)?;
            if n == 0 {
                return Ok(Scan::End);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(Scan::Damaged("a frame of zeros before more bytes".into()));
            }
        }
    }
    let (len, crc) = header(&head);
    if len > MAX_PAYLOAD {
        return Ok(Scan::Damaged(format!("frame length {len} above the limit")));
    }
    if u64::from(len) > left - HEADER as u64 {
        return Ok(Scan::Torn);
    }
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Scan::Damaged("CRC mismatch".into()));
    }
    Ok(match postcard::from_bytes::<Entry>(&payload) {
        Ok(entry) => Scan::Entry(entry, len + HEADER as u32),
        Err(e) => Scan::Damaged(format!("undecodable entry: {e}")),
    })
}

/// The segments (by first number) and old-format entries in `dir`, each
/// in order.
fn list(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
    let mut segments = Vec::new();
    let mut old = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let e = e.map_err(|e| io_err("list", dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = parse_segment_name(name) {
            segments.push(first);
        } else if let Some(n) = parse_number(name) {
            old.push(n);
        }
    }
    segments.sort_unstable();
    old.sort_unstable();
    Ok((segments, old))
}

/// A number past every one in the names of the files kept in `dir`
/// (`<n>` or `seg-<n>.log.<offset>`), 0 if there are none.
fn kept_past(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let segment = name.strip_prefix("seg-").and_then(|s| s.get(..20));
            parse_number(segment.unwrap_or(&name))
        })
        .map(|n| n.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// An old-format entry file.
fn read_old(path: &Path) -> Result<Entry, String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > u64::from(MAX_PAYLOAD) {
        return Err(format!("{len} bytes"));
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    postcard::from_bytes(&bytes).map_err(|e| e.to_string())
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and indexes what it
    /// holds (migrating a journal of the per-entry format).
    pub fn open(dir: &Path) -> Result<Journal, StoreError> {
        let tmp = dir.join("tmp");
        ensure_dir(dir)?;
        ensure_dir(&tmp)?;
        // Leftovers of writes a crash interrupted: never renamed, so never
        // acknowledged.
        clear_dir(&tmp)?;
        let (segments, old) = list(dir)?;
        let j = Journal {
            dir: dir.to_path_buf(),
            tmp,
            index: Mutex::new(Index::default()),
            dir_synced: Mutex::new(0),
            syncing: Mutex::new(()),
        };
        {
            let mut ix = j.lock();
            for (i, first) in segments.iter().enumerate() {
                j.load_segment(&mut ix, *first, i + 1 == segments.len())?;
            }
            // Numbers restart when the journal was emptied; the files kept
            // for the user are named by number and never overwritten.
            let kept = kept_past(&dir.join("failed")).max(kept_past(&dir.join("damaged")));
            ix.next = ix.next.max(kept);
        }
        j.migrate(&old)?;
        Ok(j)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(segment_name(first))
    }

    /// Reads and indexes segment `first`, cutting off a torn tail (if it is
    /// the `last`) or damage.
    fn load_segment(&self, ix: &mut Index, first: u64, last: bool) -> Result<(), StoreError> {
        let path = self.segment_path(first);
        if first < ix.next {
            // Its numbers overlap the segment before's: not as a journal
            // writes them.
            return self.set_segment_aside(&path, first);
        }
        ix.next = first;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        let size = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
        let mut reader = BufReader::with_capacity(1 << 18, &file);
        let mut offset = 0;
        let tail = loop {
            let scan = match scan_frame(&mut reader, offset, size) {
                Ok(scan) => scan,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Scan::Torn,
                Err(e) => return Err(io_err("read", &path, e)),
            };
            match scan {
                Scan::Entry(entry, len) => {
                    ix.insert(ix.next, &entry, first, offset, len);
                    ix.next = ix.next.saturating_add(1);
                    offset += u64::from(len);
                }
                Scan::Torn if !last => {
                    break Scan::Damaged("a frame cut short, before the last segment".into());
                }
                end => break end,
            }
        };
        match tail {
            Scan::Torn => {
                log::info!(
                    "journal segment {}: an append a crash cut short ({} bytes) removed",
                    path.display(),
                    size - offset
                );
                Self::truncate(&file, &path, offset)?;
            }
            Scan::Damaged(why) => {
                self.move_damage(&file, &path, first, offset, size, &why)?;
                if last {
                    // The damaged frame may have held an entry: its number
                    // is not reused. (A later segment starts past it.)
                    ix.next = ix.next.saturating_add(1);
                }
            }
            Scan::End | Scan::Entry(..) => {}
        }
        if !ix.live.contains_key(&first) {
            remove_file(&path)?;
        }
        Ok(())
    }

    /// Cuts `file` at `len`, durably.
    fn truncate(file: &File, path: &Path, len: u64) -> Result<(), StoreError> {
        file.set_len(len)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err("truncate", path, e))
    }

    /// Copies segment `first`'s bytes from `offset` to its end to
    /// `DIR/damaged/`, then cuts the segment there.
    fn move_damage(
        &self,
        file: &File,
        path: &Path,
        first: u64,
        offset: u64,
        size: u64,
        why: &str,
    ) -> Result<(), StoreError> {
        let damaged = self.dir.join("damaged");
        ensure_dir(&damaged)?;
        let dest = damaged.join(format!("{}.{offset}", segment_name(first)));
        let mut rest = vec![0; (size - offset) as usize];
        file.read_exact_at(&mut rest, offset)
            .map_err(|e| io_err("read", path, e))?;
        stage_with(&self.tmp, &rest, true)?.commit(&dest)?;
        sync_dir(&damaged)?;
        Self::truncate(file, path, offset)?;
        log::warn!(
            "journal segment {} is damaged at byte {offset} ({why}): its last {} bytes were moved to {}",
            path.display(),
            rest.len(),
            dest.display()
        );
        Ok(())
    }

    /// Moves a whole segment file to `DIR/damaged/`.
    fn set_segment_aside(&self, path: &Path, first: u64) -> Result<(), StoreError> {
        let damaged = self.dir.join("damaged");
        ensure_dir(&damaged)?;
        let dest = damaged.join(format!("{}.0", segment_name(first)));
        fs::rename(path, &dest).map_err(|e| io_err("move aside", path, e))?;
        sync_dir(&damaged)?;
        sync_dir(&self.dir)?;
        log::warn!(
            "journal segment {} overlaps the one before it: moved to {}",
            path.display(),
            dest.display()
        );
        Ok(())
    }

    /// Moves the old-format entries `old` (numbers, in order) into a new
    /// segment, then deletes their files. A crash midway leaves the files,
    /// migrated again at the next open: repeated entries, in order.
    fn migrate(&self, old: &[u64]) -> Result<(), StoreError> {
        let Some(last) = old.last() else {
            return Ok(());
        };
        {
            let mut ix = self.lock();
            ix.next = ix.next.max(last.saturating_add(1));
        }
        let mut moved = Vec::new();
        for n in old {
            let path = self.dir.join(entry_name(*n));
            match read_old(&path) {
                Ok(entry) => {
                    self.append(&entry)?;
                    moved.push(path);
                }
                Err(e) => self.set_old_aside(&path, *n, &e)?,
            }
        }
        self.sync()?;
        for path in &moved {
            remove_file(path)?;
        }
        sync_dir(&self.dir)?;
        log::info!(
            "journal {}: {} entries moved from the per-entry format to a segment",
            self.dir.display(),
            moved.len()
        );
        Ok(())
    }

    /// Moves the undecodable old-format entry file `path` to `DIR/damaged/`.
    fn set_old_aside(&self, path: &Path, n: u64, why: &str) -> Result<(), StoreError> {
        let damaged = self.dir.join("damaged");
        ensure_dir(&damaged)?;
        fs::rename(path, damaged.join(entry_name(n))).map_err(|e| io_err("move aside", path, e))?;
        sync_dir(&damaged)?;
        log::warn!(
            "journal entry {} is damaged ({why}); moved to {}",
            path.display(),
            damaged.display()
        );
        Ok(())
    }

    /// Appends `entry` (blocking file I/O): on disk after the next
    /// [`sync`](Self::sync). Returns its number.
    pub fn append(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, Append::Lazy)
    }

    /// [`append`](Self::append), on disk when this returns.
    pub fn append_durable(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, Append::Durable)
    }

    /// Appends `entry`, a write the ring took lazily, on disk when this
    /// returns; kept out of every lookup, of the size and of the replay
    /// until [`remove`](Self::remove)d (once a ring sync made it durable
    /// there), or until a reopen, which takes it for any other entry.
    pub fn append_sent(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, Append::Sent)
    }

    /// [`append_sent`](Self::append_sent), on disk once the next
    /// [`sync`](Self::sync) or durable append returns (one that writes to
    /// the same segment makes everything before it durable). For a write
    /// nothing acknowledged refers to until such a durable step follows
    /// (a block a durable record will refer to).
    pub fn append_sent_lazily(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, Append::SentLazily)
    }

    /// How many entries appended as sent are held.
    pub fn sent(&self) -> usize {
        self.lock().sent.len()
    }

    fn append_with(&self, entry: &Entry, how: Append) -> Result<u64, StoreError> {
        let durable = matches!(how, Append::Durable | Append::Sent);
        let frame = encode(entry)?;
        let len = frame.len() as u32;
        // The number is taken and the frame written under the lock, so
        // entries land in the order their numbers say.
        let mut ix = self.lock();
        if ix.next == u64::MAX {
            return Err(StoreError::Io("journal entry numbers exhausted".into()));
        }
        let (segment, offset, file) = self.write_frame(&mut ix, &frame)?;
        let n = ix.next;
        ix.next += 1;
        if matches!(how, Append::Sent | Append::SentLazily) {
            ix.sent.insert(n, Meta::of(entry, segment, offset, len));
            *ix.live.entry(segment).or_default() += 1;
        } else {
            ix.insert(n, entry, segment, offset, len);
        }
        if !durable {
            ix.unsynced.insert(segment, Arc::clone(&file));
            ix.lazy_appends += 1;
        }
        // Lazy appends waiting only in this segment: this `fdatasync`
        // makes them durable too. Waiting in others too (the segment
        // changed since): they are synced as well, so that a durable
        // entry is never on disk without the ones before it.
        let covers =
            (durable && ix.unsynced.keys().all(|&s| s == segment)).then_some(ix.lazy_appends);
        let created = ix.created;
        drop(ix);
        if durable {
            let path = self.segment_path(segment);
            file.sync_data()
                .map_err(|e| io_err("fdatasync", &path, e))?;
            self.sync_dir_upto(created)?;
            let mut ix = self.lock();
            if covers.is_some_and(|c| c == ix.lazy_appends) {
                ix.unsynced.remove(&segment);
            } else if covers.is_none() {
                drop(ix);
                self.sync()?;
            }
        }
        Ok(n)
    }

    /// Writes `frame` at the end of the current segment (starting one if
    /// needed); returns the segment, the frame's offset and the file.
    fn write_frame(
        &self,
        ix: &mut Index,
        frame: &[u8],
    ) -> Result<(u64, u64, Arc<File>), StoreError> {
        let w = self.writer(ix)?;
        let (first, offset, file) = (w.first, w.len, Arc::clone(&w.file));
        let end = offset + frame.len() as u64;
        w.size = zeros_ahead(&file, w.size, end, SEGMENT_MAX);
        match file.write_all_at(frame, offset) {
            Ok(()) => {
                w.len = end;
                w.size = w.size.max(end);
                Ok((first, offset, file))
            }
            Err(e) => {
                let path = self.segment_path(first);
                // A partial frame is cut off, so the next one follows a
                // whole one; if that fails, the segment is left (a reopen
                // takes the partial frame for damage).
                match file.set_len(offset) {
                    Ok(()) => w.size = offset,
                    Err(e) => {
                        log::warn!("journal segment {}: {e}; left", path.display());
                        self.retire_current(ix);
                    }
                }
                Err(io_err("write", &path, e))
            }
        }
    }

    /// The segment to append to: the current one while it is below
    /// [`SEGMENT_MAX`], else a new one numbered from the next entry.
    fn writer<'a>(&self, ix: &'a mut Index) -> Result<&'a mut Writer, StoreError> {
        if ix.current.as_ref().is_some_and(|w| w.len >= SEGMENT_MAX) {
            self.retire_current(ix);
        }
        if let Some(w) = ix.current.take() {
            return Ok(ix.current.insert(w));
        }
        let first = ix.next;
        let path = self.segment_path(first);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("create", &path, e))?;
        ix.created += 1;
        ix.live.insert(first, 0);
        Ok(ix.current.insert(Writer {
            first,
            file: Arc::new(file),
            len: 0,
            size: 0,
        }))
    }

    /// Stops appending to the current segment (deleting it if no entry of
    /// it is left).
    fn retire_current(&self, ix: &mut Index) {
        if let Some(w) = ix.current.take()
            && ix.is_dead(w.first)
        {
            self.delete_segment(ix, w.first);
        }
    }

    /// Deletes segment `first`, which holds no live entry. A file that
    /// cannot be deleted is only logged: its entries come back at the next
    /// open, to be replayed again.
    fn delete_segment(&self, ix: &mut Index, first: u64) {
        ix.live.remove(&first);
        ix.unsynced.remove(&first);
        let path = self.segment_path(first);
        if let Err(e) = remove_file(&path) {
            log::warn!("journal: {e}");
        }
    }

    /// Makes every entry appended so far durable: one `fdatasync` per
    /// segment written lazily since the last sync, and a directory fsync if
    /// a segment was created since the last one.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (files, created) = {
            let mut ix = self.lock();
            (std::mem::take(&mut ix.unsynced), ix.created)
        };
        for (first, file) in &files {
            if let Err(e) = file.sync_data() {
                // Tried again by the next sync.
                self.lock().unsynced.extend(files.clone());
                return Err(io_err("fdatasync", &self.segment_path(*first), e));
            }
        }
        self.sync_dir_upto(created)
    }

    /// Whether [`sync`](Self::sync) has nothing to do: no entry appended
    /// lazily since the last sync, no segment created since the last
    /// directory fsync, and no sync under way (one that took the files may
    /// not have made them durable yet). No I/O.
    pub fn is_synced(&self) -> bool {
        let Ok(_one) = self.syncing.try_lock() else {
            return false;
        };
        let (empty, created) = {
            let ix = self.lock();
            (ix.unsynced.is_empty(), ix.created)
        };
        empty && *self.dir_synced.lock().unwrap_or_else(|p| p.into_inner()) >= created
    }

    /// Fsyncs the directory unless it was since the `created`th segment
    /// was created.
    fn sync_dir_upto(&self, created: u64) -> Result<(), StoreError> {
        let mut synced = self.dir_synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= created {
            return Ok(());
        }
        let now = self.lock().created;
        sync_dir(&self.dir)?;
        *synced = now;
        Ok(())
    }

    /// The newest journaled version of record `key`.
    pub fn record(&self, key: Id) -> Option<Record> {
        self.lock().records.get(&key).map(|(_, r)| r.clone())
    }

    /// Whether entry `n` holds the newest journaled version of its record
    /// (older ones need not be replayed: the newest builds on them).
    pub fn is_newest(&self, n: u64, key: Id) -> bool {
        self.lock().records.get(&key).is_none_or(|(m, _)| *m == n)
    }

    /// Whether block `key` is journaled (no I/O).
    pub fn has_block(&self, key: Id) -> bool {
        self.lock().blocks.contains_key(&key)
    }

    /// Journaled block `key`, read back from its entry (checked against
    /// its hash).
    pub fn block(&self, key: Id) -> Option<Vec<u8>> {
        let n = *self.lock().blocks.get(&key)?;
        match self.read(n) {
            Ok(Entry::Block { data, .. }) if key.names(&data) => Some(data),
            _ => None,
        }
    }

    /// Entry `n`'s frame, as on disk (one positioned read).
    fn frame(&self, n: u64) -> Result<Frame, StoreError> {
        let m =
            self.lock().entries.get(&n).copied().ok_or_else(|| {
                StoreError::Io(format!("journal entry {n} is not in the journal"))
            })?;
        self.frame_at(&m)
    }

    /// The frame `m` places (one positioned read).
    fn frame_at(&self, m: &Meta) -> Result<Frame, StoreError> {
        let path = self.segment_path(m.segment);
        let file = File::open(&path).map_err(|e| io_err("open", &path, e))?;
        let mut bytes = vec![0; m.len as usize];
        file.read_exact_at(&mut bytes, m.offset)
            .map_err(|e| io_err("read", &path, e))?;
        Ok(Frame(bytes))
    }

    /// Entry `n`, read back from its segment (checked against its CRC).
    pub fn read(&self, n: u64) -> Result<Entry, StoreError> {
        decode_frame(n, &self.frame(n)?)
    }

    /// Takes sent entry `n` for any other entry from now on: in lookups,
    /// in the size and in the replay (the ring did not take all its
    /// copies after all). Nothing if it is not a sent entry (any more).
    pub fn resend(&self, n: u64) -> Result<(), StoreError> {
        let Some(m) = self.lock().sent.get(&n).copied() else {
            return Ok(());
        };
        let entry = decode_frame(n, &self.frame_at(&m)?)?;
        let mut ix = self.lock();
        if ix.sent.remove(&n).is_none() {
            return Ok(());
        }
        // Counted among its segment's live entries once, as before.
        if let Some(live) = ix.live.get_mut(&m.segment) {
            *live = live.saturating_sub(1);
        }
        ix.insert(n, &entry, m.segment, m.offset, m.len);
        Ok(())
    }

    /// The numbers of the oldest `max` entries.
    pub fn oldest(&self, max: usize) -> Vec<u64> {
        self.lock().entries.keys().take(max).copied().collect()
    }

    /// Removes entry `n` (it reached the ring, or a newer one replaces it);
    /// its segment file goes once none of its entries is left (the next
    /// append starts a new one if it was the current one).
    pub fn remove(&self, n: u64) -> Result<(), StoreError> {
        let mut ix = self.lock();
        let segment = match ix.forget(n) {
            Some(m) => Some(m.segment),
            None => ix.forget_sent(n),
        };
        if let Some(segment) = segment
            && ix.is_dead(segment)
        {
            if ix.current.as_ref().is_some_and(|w| w.first == segment) {
                ix.current = None;
            }
            self.delete_segment(&mut ix, segment);
        }
        Ok(())
    }

    /// Moves entry `n` aside to `DIR/failed/<n>` (its postcard bytes, as
    /// on disk even if damaged; the ring refused it for good): kept for the
    /// user, out of the replay.
    pub fn set_aside(&self, n: u64) -> Result<(), StoreError> {
        let frame = self.frame(n)?;
        let failed = self.dir.join("failed");
        ensure_dir(&failed)?;
        stage_with(&self.tmp, frame.payload(), true)?.commit(&failed.join(entry_name(n)))?;
        sync_dir(&failed)?;
        self.remove(n)
    }

    /// How much the journal holds.
    pub fn size(&self) -> JournalSize {
        let ix = self.lock();
        JournalSize {
            entries: ix.entries.len() as u64,
            bytes: ix.bytes,
        }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fsutil::ZERO_AHEAD;
    use std::collections::BTreeMap;

    fn claim(key: Id) -> Claim {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        Claim::sign(&sk, key, 7)
    }

    fn block(data: Vec<u8>) -> Entry {
        let key = Id::hash(&data);
        Entry::Block {
            key,
            claim: claim(key),
            data,
        }
    }

    fn record(name: &str, seq: u64) -> Entry {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let record = Record::sign(&sk, name.as_bytes(), seq, Some(seq.to_le_bytes().to_vec()));
        Entry::Record { record }
    }

    /// The first numbers of the segment files in `dir`, in order.
    fn segment_files(dir: &Path) -> Vec<u64> {
        list(dir).unwrap().0
    }

    /// Each frame's offset in segment file `path`, up to the zeros ahead.
    fn frame_offsets(path: &Path) -> Vec<u64> {
        let bytes = fs::read(path).unwrap();
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < bytes.len() && bytes[at..].first_chunk() != Some(&[0; HEADER]) {
            offsets.push(at as u64);
            let (len, _) = header(bytes[at..].first_chunk().unwrap());
            at += HEADER + len as usize;
        }
        offsets
    }

    /// Where the frames of segment file `path` end (the zeros ahead start).
    fn data_end(path: &Path) -> u64 {
        let bytes = fs::read(path).unwrap();
        match frame_offsets(path).last() {
            Some(at) => {
                let (len, _) = header(bytes[*at as usize..].first_chunk().unwrap());
                at + (HEADER as u64) + u64::from(len)
            }
            None => 0,
        }
    }

    /// Every entry, oldest first, read back.
    fn all(j: &Journal) -> Vec<(u64, Entry)> {
        j.oldest(usize::MAX)
            .into_iter()
            .map(|n| (n, j.read(n).unwrap()))
            .collect()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_the_newest_record_wins() {
        let d = tempfile::tempdir().unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let r1 = Record::sign(&sk, b"dir", 1, Some(b"one".to_vec()));
        let r2 = Record::sign(&sk, b"dir", 2, Some(b"two".to_vec()));
        let data = b"block bytes".to_vec();
        let key = Id::hash(&data);
        let release = Release::sign(&sk, vec![key], 9);
        {
            let j = Journal::open(d.path()).unwrap();
            j.append(&block(data.clone())).unwrap();
            j.append(&Entry::Record { record: r1.clone() }).unwrap();
            j.append_durable(&Entry::Record { record: r2.clone() })
                .unwrap();
            j.append(&Entry::Release {
                release: release.clone(),
            })
            .unwrap();
            j.sync().unwrap();
            assert_eq!(j.size().entries, 4);
        }
        // A write a crash cut short, left in tmp/: not an entry.
        fs::write(d.path().join("tmp").join("1-2-x.tmp"), b"half").unwrap();
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 4);
        assert_eq!(j.record(r1.key()), Some(r2.clone()));
        assert_eq!(j.block(key), Some(data));
        let order = j.oldest(10);
        assert_eq!(order.len(), 4);
        assert!(matches!(j.read(order[0]).unwrap(), Entry::Block { .. }));
        assert!(!j.is_newest(order[1], r1.key()));
        assert!(j.is_newest(order[2], r1.key()));
        // A release is neither a block nor a record.
        let rel = j.read(order[3]).unwrap();
        assert_eq!(rel.key(), Id::hash(&release.sig));
        assert_eq!(rel, Entry::Release { release });
        assert!(!j.has_block(rel.key()) && j.record(rel.key()).is_none());
        // Removing the older version keeps the newer one readable.
        j.remove(order[1]).unwrap();
        assert_eq!(j.record(r1.key()), Some(r2));
        j.remove(order[2]).unwrap();
        assert_eq!(j.record(r1.key()), None);
        // New entries number after the old ones, even after a reopen.
        let n = j.append(&Entry::Record { record: r1.clone() }).unwrap();
        assert!(n > order[3]);
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn a_damaged_old_entry_is_moved_aside_not_lost() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        j.append_durable(&record("f", 1)).unwrap();
        fs::write(d.path().join(entry_name(5)), b"\xff\xff garbage").unwrap();
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 1);
        assert!(d.path().join("damaged").join(entry_name(5)).exists());
        // The next number is past the damaged one: it is never reused.
        assert!(j.append(&record("g", 1)).unwrap() > 5);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_later_appends_stay_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut expected: Vec<Entry> = (0..3).map(|i| record(&format!("t{i}"), 1)).collect();
        {
            let j = Journal::open(d.path()).unwrap();
            for e in &expected {
                j.append(e).unwrap();
            }
            j.sync().unwrap();
        }
        let seg = d.path().join(segment_name(0));
        let whole = data_end(&seg);
        // A crash mid-append where no zeros were ahead (a full disk): a
        // header and part of its payload, then the file's end.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&100u32.to_le_bytes(), whole).unwrap();
        f.write_all_at(&[1; 4 + 10], whole + 4).unwrap();
        f.set_len(whole + 18).unwrap();
        drop(f);
        {
            let j = Journal::open(d.path()).unwrap();
            assert_eq!(j.size().entries, 3);
            assert_eq!(fs::metadata(&seg).unwrap().len(), whole);
            for i in 3..5 {
                let e = record(&format!("t{i}"), 1);
                assert_eq!(j.append(&e).unwrap(), i);
                expected.push(e);
            }
            j.sync().unwrap();
            // Not appended to the segment read at open.
            assert_eq!(segment_files(d.path()), vec![0, 3]);
        }
        let j = Journal::open(d.path()).unwrap();
        let got: Vec<Entry> = all(&j).into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, expected);
        assert!(!d.path().join("damaged").exists());
    }

    #[test]
    fn crc_damage_moves_the_rest_of_its_segment_aside_and_later_segments_load() {
        let d = tempfile::tempdir().unwrap();
        let a: Vec<Entry> = (0..5).map(|i| record(&format!("a{i}"), 1)).collect();
        let b: Vec<Entry> = (0..3).map(|i| record(&format!("b{i}"), 1)).collect();
        for part in [&a, &b] {
            let j = Journal::open(d.path()).unwrap();
            for e in part {
                j.append(e).unwrap();
            }
            j.sync().unwrap();
        }
        assert_eq!(segment_files(d.path()), vec![0, 5]);
        let seg = d.path().join(segment_name(0));
        let at = frame_offsets(&seg)[2];
        let mut bytes = fs::read(&seg).unwrap();
        bytes[at as usize + HEADER + 3] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();

        let j = Journal::open(d.path()).unwrap();
        let got = all(&j);
        let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![0, 1, 5, 6, 7]);
        let entries: Vec<Entry> = got.into_iter().map(|(_, e)| e).collect();
        let want: Vec<Entry> = a[..2].iter().chain(&b).cloned().collect();
        assert_eq!(entries, want);
        let kept = d
            .path()
            .join("damaged")
            .join(format!("{}.{at}", segment_name(0)));
        assert_eq!(fs::read(&kept).unwrap(), bytes[at as usize..]);
        assert_eq!(fs::metadata(&seg).unwrap().len(), at);
        assert_eq!(j.append(&record("c", 1)).unwrap(), 8);
        drop(j);
        // Once cut, the segment loads cleanly; the damaged part stays.
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 6);
        assert_eq!(files_in(&d.path().join("damaged")).len(), 1);
    }

    #[test]
    fn an_oversized_length_is_damage_not_an_allocation() {
        let d = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(d.path()).unwrap();
            j.append(&record("x", 1)).unwrap();
            j.sync().unwrap();
        }
        let seg = d.path().join(segment_name(0));
        let whole = data_end(&seg);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), whole).unwrap();
        f.write_all_at(&[7; 4 + 16], whole + 4).unwrap();
        drop(f);
        let size = fs::metadata(&seg).unwrap().len();
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 1);
        let kept = d
            .path()
            .join("damaged")
            .join(format!("{}.{whole}", segment_name(0)));
        let kept = fs::read(kept).unwrap();
        assert_eq!(kept.len() as u64, size - whole);
        assert_eq!(kept[..4], u32::MAX.to_le_bytes());
        assert_eq!(fs::metadata(&seg).unwrap().len(), whole);
        // The damaged frame's number is not reused.
        assert_eq!(j.append(&record("y", 1)).unwrap(), 2);
    }

    #[test]
    fn segments_roll_over_and_go_once_nothing_in_them_is_left() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let big = |i: u64| {
            let mut data = vec![0x5a; 64 << 10];
            data[..8].copy_from_slice(&i.to_le_bytes());
            block(data)
        };
        for i in 0..300 {
            assert_eq!(j.append(&big(i)).unwrap(), i);
        }
        j.sync().unwrap();
        let segs = segment_files(d.path());
        assert_eq!(segs.len(), 3, "{segs:?}");
        assert_eq!(segs[0], 0);
        let sizes: Vec<u64> = segs
            .iter()
            .map(|s| data_end(&d.path().join(segment_name(*s))))
            .collect();
        assert!(
            sizes[..2]
                .iter()
                .all(|s| *s >= SEGMENT_MAX && *s < SEGMENT_MAX + (1 << 17))
        );
        assert_eq!(j.size().bytes, sizes.iter().sum::<u64>());
        // The first segment, emptied, is deleted.
        for n in segs[0]..segs[1] {
            j.remove(n).unwrap();
        }
        assert_eq!(segment_files(d.path()), segs[1..]);
        // One entry of the second removed: it stays.
        j.remove(segs[1]).unwrap();
        assert_eq!(segment_files(d.path()), segs[1..]);
        // The current one, emptied, is deleted too; the next append starts
        // a new one.
        for n in segs[2]..300 {
            j.remove(n).unwrap();
        }
        assert_eq!(segment_files(d.path()), vec![segs[1]]);
        assert_eq!(j.append(&big(300)).unwrap(), 300);
        assert_eq!(segment_files(d.path()), vec![segs[1], 300]);
        let live: Vec<u64> = (segs[1] + 1..segs[2]).chain([300]).collect();
        assert_eq!(j.oldest(usize::MAX), live);
        let bytes = j.size().bytes;
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        // The second segment comes back whole: its removed entry too.
        let back: Vec<u64> = (segs[1]..segs[2]).chain([300]).collect();
        assert_eq!(j.oldest(usize::MAX), back);
        for n in back {
            assert_eq!(j.read(n).unwrap(), big(n));
        }
        assert!(j.size().bytes > bytes);
    }

    #[test]
    fn concurrent_appends_come_back_once_each_in_number_order() {
        let d = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(d.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = Arc::clone(&j);
                std::thread::spawn(move || {
                    (0..250)
                        .map(|i| {
                            let e = if i % 2 == 0 {
                                block(format!("block {t} {i}").into_bytes())
                            } else {
                                record(&format!("r{t}-{i}"), 1)
                            };
                            let n = if i % 50 == 0 {
                                j.append_durable(&e).unwrap()
                            } else {
                                j.append(&e).unwrap()
                            };
                            (n, e)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut expected = BTreeMap::new();
        for t in threads {
            for (n, e) in t.join().unwrap() {
                assert!(expected.insert(n, e).is_none(), "number {n} twice");
            }
        }
        assert_eq!(expected.len(), 2000);
        j.sync().unwrap();
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        let got: Vec<(u64, Entry)> = all(&j);
        assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn is_synced_until_a_lazy_append() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        j.sync().unwrap();
        assert!(j.is_synced());
        j.append(&record("a", 1)).unwrap();
        assert!(!j.is_synced(), "a lazy append waits for a sync");
        j.sync().unwrap();
        assert!(j.is_synced());
        j.append_durable(&record("b", 1)).unwrap();
        assert!(j.is_synced(), "a durable append synced itself");
        // A sync under way (holding the turn) is not skipped.
        let _turn = j.syncing.lock().unwrap();
        assert!(!j.is_synced());
    }

    #[test]
    fn appends_overwrite_zeros_written_ahead_and_a_frame_torn_among_them_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let e: Vec<Entry> = (0..3).map(|i| record(&format!("z{i}"), 1)).collect();
        {
            let j = Journal::open(d.path()).unwrap();
            for x in &e {
                j.append_durable(x).unwrap();
            }
        }
        let seg = d.path().join(segment_name(0));
        // The file holds zeros ahead of its frames.
        assert_eq!(fs::metadata(&seg).unwrap().len(), ZERO_AHEAD);
        let end = data_end(&seg);
        assert!(end < ZERO_AHEAD);
        {
            // Reopened: the zeros are the end, not damage, and stay.
            let j = Journal::open(d.path()).unwrap();
            let got: Vec<Entry> = all(&j).into_iter().map(|(_, x)| x).collect();
            assert_eq!(got, e);
            assert!(!d.path().join("damaged").exists());
            assert_eq!(fs::metadata(&seg).unwrap().len(), ZERO_AHEAD);
        }
        // A crash mid-append: a header and part of its payload over the
        // zeros. It was never acknowledged, and is told from damage only
        // by guessing: its bytes are set aside, the rest loads.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&100u32.to_le_bytes(), end).unwrap();
        f.write_all_at(&[9; 4 + 10], end + 4).unwrap();
        drop(f);
        let j = Journal::open(d.path()).unwrap();
        let got: Vec<Entry> = all(&j).into_iter().map(|(_, x)| x).collect();
        assert_eq!(got, e);
        assert_eq!(files_in(&d.path().join("damaged")).len(), 1);
        assert_eq!(fs::metadata(&seg).unwrap().len(), end);
        let n = j.append(&record("after", 1)).unwrap();
        j.sync().unwrap();
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.read(n).unwrap(), record("after", 1));
    }

    #[test]
    fn a_sent_entry_is_out_of_sight_until_removed_or_a_reopen_brings_it_back() {
        let d = tempfile::tempdir().unwrap();
        let sent = record("s", 2);
        let kept = record("k", 1);
        let (s, k) = {
            let j = Journal::open(d.path()).unwrap();
            let s = j.append_sent(&sent).unwrap();
            // Durable, and in no lookup, size or replay.
            assert!(j.is_synced());
            assert!(j.is_empty());
            assert_eq!(j.size(), JournalSize::default());
            assert_eq!(j.record(sent.key()), None);
            assert!(j.oldest(10).is_empty());
            assert_eq!(j.sent(), 1);
            let k = j.append(&kept).unwrap();
            j.sync().unwrap();
            assert_eq!(j.oldest(10), vec![k]);
            (s, k)
        };
        // A crash before the ring synced it: the reopen replays it.
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.oldest(10), vec![s, k]);
        assert_eq!(j.read(s).unwrap(), sent);
        assert_eq!(j.sent(), 0);
        // Removed once synced; a segment of nothing but sent entries goes.
        let t = j.append_sent(&record("t", 1)).unwrap();
        let segs = segment_files(d.path());
        assert_eq!(segs.len(), 2);
        j.remove(t).unwrap();
        assert_eq!(j.sent(), 0);
        assert_eq!(segment_files(d.path()), segs[..1]);
        j.remove(s).unwrap();
        j.remove(k).unwrap();
        assert!(segment_files(d.path()).is_empty());
    }

    #[test]
    fn a_sent_entry_resent_is_looked_up_replayed_and_freed_like_any_other() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let old = record("f", 1);
        let newer = record("f", 2);
        let s = j.append_sent(&old).unwrap();
        let n = j.append(&newer).unwrap();
        let t = j.append_sent(&record("t", 1)).unwrap();
        j.resend(s).unwrap();
        // In sight now, but a lookup still finds the newer version.
        assert_eq!(j.sent(), 1);
        assert_eq!(j.oldest(10), vec![s, n]);
        assert_eq!(j.read(s).unwrap(), old);
        let Entry::Record { record: newest } = newer else {
            unreachable!()
        };
        assert_eq!(j.record(old.key()), Some(newest));
        assert!(!j.is_newest(s, old.key()));
        assert_eq!(j.size().entries, 2);
        // Twice, or for an entry no longer sent: nothing.
        j.resend(s).unwrap();
        j.resend(n).unwrap();
        assert_eq!(j.size().entries, 2);
        // Its segment goes once every entry in it is removed, no sooner.
        for e in [s, n] {
            j.remove(e).unwrap();
            assert_eq!(segment_files(d.path()).len(), 1);
        }
        j.remove(t).unwrap();
        assert!(segment_files(d.path()).is_empty());
    }

    #[test]
    fn a_durable_append_makes_the_lazy_ones_before_it_durable_in_any_segment() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let block = Entry::Block {
            key: Id::of_block(b"b"),
            data: b"b".to_vec(),
            claim: Claim::sign(
                &ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
                Id::of_block(b"b"),
                1,
            ),
        };
        let b = j.append_sent_lazily(&block).unwrap();
        assert!(!j.is_synced(), "on disk only after a sync");
        assert_eq!(j.sent(), 1);
        assert!(j.is_empty(), "out of sight like any sent entry");
        j.append_sent(&record("r", 1)).unwrap();
        assert!(j.is_synced(), "the record's fdatasync covered the block");
        // A lazy append in a segment the durable one does not write to.
        j.append_sent_lazily(&block).unwrap();
        j.lock().current = None;
        j.append_sent(&record("r", 2)).unwrap();
        assert!(j.is_synced(), "the other segment was synced too");
        assert_eq!(segment_files(d.path()).len(), 2);
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.read(b).unwrap(), block);
        assert_eq!(j.size().entries, 4);
    }

    #[test]
    fn a_durable_append_survives_a_reopen_without_a_sync() {
        let d = tempfile::tempdir().unwrap();
        let e = record("d", 1);
        let n = {
            let j = Journal::open(d.path()).unwrap();
            let n = j.append_durable(&e).unwrap();
            // Synced already: nothing left for sync(), the new segment's
            // directory entry included.
            assert!(j.lock().unsynced.is_empty());
            assert_eq!(*j.dir_synced.lock().unwrap(), j.lock().created);
            n
        };
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.read(n).unwrap(), e);
    }

    #[test]
    fn set_aside_keeps_the_entry_bytes_in_failed_even_when_damaged() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let e = record("s", 1);
        let n = j.append(&e).unwrap();
        let m = j.append(&record("t", 1)).unwrap();
        j.set_aside(n).unwrap();
        let kept = fs::read(d.path().join("failed").join(entry_name(n))).unwrap();
        assert_eq!(postcard::from_bytes::<Entry>(&kept).unwrap(), e);
        assert_eq!(j.oldest(10), vec![m]);
        // Damaged on disk after it was written: read refuses it, set_aside
        // keeps its bytes.
        let seg = d.path().join(segment_name(0));
        let at = frame_offsets(&seg)[1] as usize;
        let mut bytes = fs::read(&seg).unwrap();
        bytes[at + HEADER] ^= 1;
        fs::write(&seg, &bytes).unwrap();
        assert!(j.read(m).is_err());
        let end = data_end(&seg) as usize;
        j.set_aside(m).unwrap();
        assert!(j.is_empty());
        assert_eq!(
            fs::read(d.path().join("failed").join(entry_name(m))).unwrap(),
            bytes[at + HEADER..end]
        );
        drop(j);
        // Numbers after a reopen do not overwrite what failed/ keeps.
        let j = Journal::open(d.path()).unwrap();
        assert!(j.append(&record("u", 1)).unwrap() > m);
    }

    /// The entry as the per-entry format wrote it.
    #[derive(Serialize)]
    enum OldEntry {
        Block {
            key: Id,
            data: Vec<u8>,
            claim: Claim,
        },
        Record {
            record: Record,
        },
    }

    #[test]
    fn a_journal_of_entry_files_is_migrated_in_order() {
        let d = tempfile::tempdir().unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let r1 = Record::sign(&sk, b"dir", 1, Some(b"one".to_vec()));
        let r2 = Record::sign(&sk, b"dir", 2, Some(b"two".to_vec()));
        let data = b"old block".to_vec();
        let key = Id::hash(&data);
        let old = [
            (
                3,
                OldEntry::Block {
                    key,
                    data: data.clone(),
                    claim: claim(key),
                },
            ),
            (7, OldEntry::Record { record: r1.clone() }),
            (9, OldEntry::Record { record: r2.clone() }),
        ];
        for (n, e) in &old {
            let bytes = postcard::to_stdvec(e).unwrap();
            fs::write(d.path().join(entry_name(*n)), bytes).unwrap();
        }
        fs::write(d.path().join(entry_name(8)), b"\xff\xff garbage").unwrap();
        fs::create_dir(d.path().join("tmp")).unwrap();
        fs::write(d.path().join("tmp").join("1-2-x.tmp"), b"half").unwrap();

        let want = vec![
            Entry::Block {
                key,
                data: data.clone(),
                claim: claim(key),
            },
            Entry::Record { record: r1.clone() },
            Entry::Record { record: r2.clone() },
        ];
        let j = Journal::open(d.path()).unwrap();
        let got = all(&j);
        assert_eq!(got.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), want);
        assert_eq!(j.record(r1.key()), Some(r2.clone()));
        assert!(j.is_newest(got[2].0, r1.key()));
        assert_eq!(j.block(key), Some(data));
        for n in [3, 7, 9] {
            assert!(!d.path().join(entry_name(n)).exists());
        }
        assert!(d.path().join("damaged").join(entry_name(8)).exists());
        assert!(files_in(&d.path().join("tmp")).is_empty());
        assert_eq!(segment_files(d.path()).len(), 1);
        let n = j.append(&record("new", 1)).unwrap();
        assert!(n > 9);
        j.sync().unwrap();
        drop(j);
        // Migrated once: a reopen reads the segments only.
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 4);
        assert_eq!(
            j.oldest(10)[..3],
            got.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        );
    }

    /// Prints how long 10,000 lazy appends of a 4 KiB block (and their
    /// sync) and 1,000 durable ones take.
    #[test]
    #[ignore]
    fn timings() {
        let d = tempfile::tempdir().unwrap();
        let c = claim(Id::hash(b"x"));
        let entry = |i: u64| {
            let mut data = vec![0xa5; 4096];
            data[..8].copy_from_slice(&i.to_le_bytes());
            Entry::Block {
                key: Id::hash(&data),
                data,
                claim: c.clone(),
            }
        };
        let lazy: Vec<Entry> = (0..10_000).map(entry).collect();
        let durable: Vec<Entry> = (10_000..11_000).map(entry).collect();
        let t = std::time::Instant::now();
        for e in &lazy {
            encode(e).unwrap();
        }
        let encoded = t.elapsed();
        let j = Journal::open(d.path()).unwrap();
        let t = std::time::Instant::now();
        for e in &lazy {
            j.append(e).unwrap();
        }
        let appended = t.elapsed();
        j.sync().unwrap();
        let synced = t.elapsed();
        let t = std::time::Instant::now();
        for e in &durable {
            j.append_durable(e).unwrap();
        }
        let durably = t.elapsed();
        println!(
            "10000 appends of a 4 KiB block: {appended:?} (framing alone: {encoded:?}; \
             with the sync: {synced:?}); 1000 append_durable: {durably:?} ({:?} each); \
             {} segments",
            durably / 1000,
            segment_files(d.path()).len()
        );
    }
}
