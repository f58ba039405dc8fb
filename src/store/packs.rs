//! The store's pack log: small items live in a few append-only segment
//! files instead of one file each.
//!
//! A record (any size) and a block whose data is at most [`BLOCK_MAX`]
//! bytes are appended to the current segment; an in-memory map says where
//! each item's newest entry is. A put costs one `write`, and a durable put
//! one `fdatasync` of the segment, shared by every put before it
//! ([`Packs::sync_all`]): no inode is created, renamed, fsynced or freed
//! per item. An item replaced or removed leaves its old entry behind as
//! garbage; [`Packs::compaction_due`] says when the oldest segment should
//! be copied forward (its live entries appended again, under the store's
//! item locks: [`super::Store::compact`]) and deleted.
//!
//! # Format
//!
//! `DIR/packs/<n>.pack`, `<n>` 16 lower-case hex digits, growing. A
//! segment is a sequence of entries:
//!
//! ```text
//! len    u32 little-endian   n, the body's length (33 ≤ n ≤ 33 + ENTRY_MAX)
//! crc    u32 little-endian   CRC-32 (IEEE) of the body
//! body   n bytes:
//!   kind 1 byte              1 record, 2 block: the item's file follows;
//!                            3 record gone, 4 block gone: nothing follows
//!   key  32 bytes            the item's key
//!   file n - 33 bytes        the item's file, exactly as it would be in
//!                            records/ or blocks/ (see the store's docs)
//! ```
//!
//! # Invariants
//!
//! - Segments are read oldest first and entries in order; the last entry
//!   of a key says where it is, or that it is gone. Entries of one key
//!   are appended under the store's lock of that key, so the order on
//!   disk is the order of its changes.
//! - An entry that is short (a write torn by a crash) ends its segment;
//!   one whose check fails is skipped (a damaged item is lost from this
//!   replica, and repair brings it back). A failed append truncates the
//!   segment back, so a later entry never sits behind a partial one.
//! - A "gone" entry is only dropped with the oldest segment: no older
//!   entry of its key is left for it to hide.
//! - A segment is deleted only after its live entries were appended again
//!   and synced.
//! - A segment's file is written with zeros ahead of its entries
//!   ([`ZERO_AHEAD`](super::fsutil::ZERO_AHEAD) at a time), so an append overwrites bytes the file
//!   already has and its `fdatasync` flushes data only: no change of the
//!   file's size or extents to commit to the file system's journal per
//!   sync (a third cheaper here, more with several nodes on one disk). A
//!   length of zero ends a segment's entries; an entry whose check fails
//!   with only zeros after it is a torn tail.

use super::Kind;
use super::StoreError;
use super::fsutil::{ensure_dir, io_err, number_of, numbered_path, sync_dir, zeros_ahead};
use crate::id::Id;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Blocks whose data is at most this big are packed; bigger ones keep a
/// file each (their data dominates the cost of a put, and a compaction
/// would copy them again).
pub const BLOCK_MAX: usize = 64 << 10;
/// A segment takes no more entries once it is this big.
const SEGMENT_MAX: u64 = 16 << 20;
/// Largest item file an entry may hold (a record's versions, or a block
/// with its claims).
const ENTRY_MAX: usize = 8 << 20;
/// Bytes before an entry's body: length and check.
const HEAD: usize = 8;
/// Zeros written ahead of a segment's entries at a time.
/// Bytes of a body before the item's file: kind and key.
const BODY_HEAD: usize = 33;
/// Compaction starts when garbage is more than this share of all segment
/// bytes (in percent) ...
const GARBAGE_PCT: u64 = 50;
/// ... and there are at least this many bytes of garbage.
const GARBAGE_MIN: u64 = 2 * SEGMENT_MAX;

/// Where an item's newest entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    seg: u64,
    off: u64,
    /// The whole entry: head and body.
    len: u32,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    /// Bytes written (the next entry's offset).
    len: u64,
    /// Bytes known durable.
    synced: u64,
    /// Bytes of the entries the map points to.
    live: u64,
    /// The file's size: entries, then zeros.
    size: u64,
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<(Kind, Id), Loc>,
    segs: BTreeMap<u64, Segment>,
    /// Legacy item files (from before packs) shadowed by a packed entry,
    /// deleted once a sync has made the entries durable.
    shadowed: Vec<PathBuf>,
}

/// The pack log of one store.
#[derive(Debug)]
pub struct Packs {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held across `fdatasync`s, so concurrent syncs wait for one another
    /// and find their entries covered rather than each syncing again.
    syncing: Mutex<()>,
}

/// One entry read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// A put (the item's file follows), or "gone".
    pub put: bool,
    pub key: Id,
    pub off: u64,
    pub len: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    numbered_path(dir, n, "pack")
}

/// The number of a segment file name, if it is one.
fn seg_of(name: &str) -> Option<u64> {
    number_of(name, "pack")
}

/// Whether an item is packed: every record, and small blocks.
pub fn packs(kind: Kind, data_len: usize) -> bool {
    kind == Kind::Record || data_len <= BLOCK_MAX
}

fn kind_byte(kind: Kind, gone: bool) -> u8 {
    match (kind, gone) {
        (Kind::Record, false) => 1,
        (Kind::Block, false) => 2,
        (Kind::Record, true) => 3,
        (Kind::Block, true) => 4,
    }
}

/// Encodes a put (`Some(file)`) or a "gone" entry.
fn entry_bytes(kind: Kind, key: Id, file: Option<&[u8]>) -> Vec<u8> {
    let data = file.unwrap_or_default();
    let n = BODY_HEAD + data.len();
    let mut out = Vec::with_capacity(HEAD + n);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind_byte(kind, file.is_none()));
    out.extend_from_slice(&key.0);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[HEAD..]);
    out[4..HEAD].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The entries of a segment's bytes: stops at a torn tail, skips an entry
/// whose check fails. Returns them and how many bytes they span.
pub fn decode_entries(bytes: &[u8]) -> (Vec<Entry>, u64, usize) {
    let mut out = Vec::new();
    let (mut at, mut skipped) = (0usize, 0usize);
    while bytes.len() - at >= HEAD {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        if !(BODY_HEAD..=BODY_HEAD + ENTRY_MAX).contains(&n) || bytes.len() - at < HEAD + n {
            break;
        }
        let body = &bytes[at + HEAD..at + HEAD + n];
        let crc = u32::from_le_bytes(bytes[at + 4..at + HEAD].try_into().unwrap_or_default());
        let kind = match body[0] {
            1 | 3 => Some(Kind::Record),
            2 | 4 => Some(Kind::Block),
            _ => None,
        };
        let good = crc32fast::hash(body) == crc;
        match kind {
            // A torn last entry, its missing bytes still zeros.
            _ if !good && all_zero(&bytes[at + HEAD + n..]) => break,
            Some(kind) if good => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&body[1..BODY_HEAD]);
                out.push(Entry {
                    kind,
                    put: body[0] <= 2,
                    key: Id(key),
                    off: at as u64,
                    len: (HEAD + n) as u32,
                });
            }
            _ => skipped += 1,
        }
        at += HEAD + n;
    }
    (out, at as u64, skipped)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// The segment numbers in `dir`, oldest first.
fn numbers(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let e = e.map_err(|e| io_err("list", dir, e))?;
        match e.file_name().to_str().and_then(seg_of) {
            Some(n) => numbers.push(n),
            None => log::warn!("ignoring {} in the pack directory", e.path().display()),
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The items the segments in `dir` hold, with the length of each one's
/// file, read without changing anything (to look into the store of a node
/// that may be running).
pub fn held_in(dir: &Path) -> Result<HashMap<(Kind, Id), u64>, StoreError> {
    let mut held = HashMap::new();
    if !dir.exists() {
        return Ok(held);
    }
    for n in numbers(dir)? {
        let path = seg_path(dir, n);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Compacted away meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &path, e)),
        };
        for e in decode_entries(&bytes).0 {
            if e.put {
                held.insert((e.kind, e.key), (e.len as usize - HEAD - BODY_HEAD) as u64);
            } else {
                held.remove(&(e.kind, e.key));
            }
        }
    }
    Ok(held)
}

/// Creates segment `n` in `dir` (the directory synced, so the file exists
/// after a crash).
fn create(dir: &Path, n: u64) -> Result<Segment, StoreError> {
    let path = seg_path(dir, n);
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("create", &path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        file: Arc::new(f),
        len: 0,
        synced: 0,
        live: 0,
        size: 0,
    })
}

impl State {
    /// Points `(kind, key)` at `loc` (or at nothing), keeping the live
    /// byte counts.
    fn point(&mut self, kind: Kind, key: Id, loc: Option<Loc>) -> Option<Loc> {
        let old = match loc {
            Some(l) => self.map.insert((kind, key), l),
            None => self.map.remove(&(kind, key)),
        };
        if let Some(o) = old
            && let Some(s) = self.segs.get_mut(&o.seg)
        {
            s.live -= o.len as u64;
        }
        if let Some(l) = loc
            && let Some(s) = self.segs.get_mut(&l.seg)
        {
            s.live += l.len as u64;
        }
        old
    }

    /// The segment to append `need` bytes to, starting a new one if the
    /// newest is full.
    fn current(&mut self, dir: &Path, need: u64) -> Result<u64, StoreError> {
        let last = self.segs.last_key_value().map(|(n, s)| (*n, s.len));
        match last {
            Some((n, len)) if len == 0 || len + need <= SEGMENT_MAX => Ok(n),
            _ => {
                let n = last.map_or(0, |(n, _)| n + 1);
                self.segs.insert(n, create(dir, n)?);
                Ok(n)
            }
        }
    }

    /// Appends an entry; returns where it went.
    fn append(&mut self, dir: &Path, bytes: &[u8]) -> Result<Loc, StoreError> {
        let n = self.current(dir, bytes.len() as u64)?;
        let Some(seg) = self.segs.get_mut(&n) else {
            return Err(StoreError::Io("pack segment vanished".into()));
        };
        let off = seg.len;
        let end = off + bytes.len() as u64;
        seg.size = zeros_ahead(&seg.file, seg.size, end, SEGMENT_MAX);
        if let Err(e) = seg.file.write_all_at(bytes, off) {
            // Nothing may sit behind a partial entry: cut it off, or, if
            // even that fails, take no more entries here.
            if seg.file.set_len(off).is_err() {
                seg.len = SEGMENT_MAX;
            }
            seg.size = off;
            return Err(io_err("append to", &seg_path(dir, n), e));
        }
        seg.len = end;
        seg.size = seg.size.max(end);
        Ok(Loc {
            seg: n,
            off,
            len: bytes.len() as u32,
        })
    }
}

impl Packs {
    /// Opens the segments in `dir` (created if missing) and reads where
    /// every packed item is. Returns the packs and the items they hold.
    pub fn open(dir: &Path) -> Result<(Packs, Vec<(Kind, Id)>), StoreError> {
        ensure_dir(dir)?;
        let numbers = numbers(dir)?;
        let mut state = State::default();
        for &n in &numbers {
            let path = seg_path(dir, n);
            let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
            let (entries, used, skipped) = decode_entries(&bytes);
            if skipped > 0 {
                log::error!(
                    "{}: {skipped} damaged entries skipped (repair brings those items back)",
                    path.display()
                );
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            let mut size = bytes.len() as u64;
            if used < size && !all_zero(&bytes[used as usize..]) {
                size = used;
                log::warn!(
                    "{}: {} bytes after the last whole entry dropped (a write torn by a crash)",
                    path.display(),
                    bytes.len() as u64 - used
                );
                file.set_len(used)
                    .map_err(|e| io_err("truncate", &path, e))?;
            }
            state.segs.insert(
                n,
                Segment {
                    file: Arc::new(file),
                    len: used,
                    synced: used,
                    live: 0,
                    size,
                },
            );
            for e in entries {
                let loc = e.put.then_some(Loc {
                    seg: n,
                    off: e.off,
                    len: e.len,
                });
                state.point(e.kind, e.key, loc);
            }
        }
        let held = state.map.keys().copied().collect();
        let packs = Packs {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            syncing: Mutex::new(()),
        };
        Ok((packs, held))
    }

    /// Whether `(kind, key)` is packed.
    pub fn holds(&self, kind: Kind, key: Id) -> bool {
        lock(&self.state).map.contains_key(&(kind, key))
    }

    /// Appends `file` as the newest entry of `(kind, key)`; durable after
    /// the next [`sync_all`](Self::sync_all). `legacy` is the item's old
    /// file, if it had one: it is deleted once the entry is durable.
    pub fn put(
        &self,
        kind: Kind,
        key: Id,
        file: &[u8],
        legacy: Option<PathBuf>,
    ) -> Result<(), StoreError> {
        if file.len() > ENTRY_MAX {
            return Err(StoreError::TooLarge(file.len()));
        }
        let bytes = entry_bytes(kind, key, Some(file));
        let mut st = lock(&self.state);
        let loc = st.append(&self.dir, &bytes)?;
        st.point(kind, key, Some(loc));
        st.shadowed.extend(legacy);
        Ok(())
    }

    /// Marks `(kind, key)` gone; `false` if it was not packed.
    pub fn remove(&self, kind: Kind, key: Id) -> Result<bool, StoreError> {
        let mut st = lock(&self.state);
        if !st.map.contains_key(&(kind, key)) {
            return Ok(false);
        }
        st.append(&self.dir, &entry_bytes(kind, key, None))?;
        st.point(kind, key, None);
        Ok(true)
    }

    /// The file of `(kind, key)`: `None` if it is not packed. The entry's
    /// kind, key and CRC are checked (a damaged one reads as empty, which
    /// no caller's check accepts): the file is as it was written, which
    /// the store did only after checking it (hash, signature).
    pub fn get(&self, kind: Kind, key: Id) -> Option<Result<Vec<u8>, StoreError>> {
        let (loc, file) = {
            let st = lock(&self.state);
            let loc = *st.map.get(&(kind, key))?;
            (loc, Arc::clone(&st.segs.get(&loc.seg)?.file))
        };
        Some(self.read_at(&file, kind, key, loc))
    }

    fn read_at(&self, file: &File, kind: Kind, key: Id, loc: Loc) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.off)
            .map_err(|e| io_err("read", &seg_path(&self.dir, loc.seg), e))?;
        let body = &buf[HEAD.min(buf.len())..];
        if body.len() < BODY_HEAD
            || body[0] != kind_byte(kind, false)
            || body[1..BODY_HEAD] != key.0
        {
            // Not what the map says is there: hand back nothing the
            // caller's checks would accept.
            return Ok(Vec::new());
        }
        let crc = u32::from_le_bytes(buf[4..HEAD].try_into().unwrap_or_default());
        if crc32fast::hash(body) != crc {
            // Damaged on disk since it was written.
            log::error!(
                "{}: the entry of {} at {} fails its check",
                seg_path(&self.dir, loc.seg).display(),
                key.short(),
                loc.off
            );
            return Ok(Vec::new());
        }
        buf.drain(..HEAD + BODY_HEAD);
        Ok(buf)
    }

    /// Makes every entry appended so far durable (one `fdatasync` of each
    /// segment written since its last sync), then deletes the legacy
    /// files those entries replaced.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let _one = lock(&self.syncing);
        let (todo, shadowed) = {
            let mut st = lock(&self.state);
            let todo: Vec<(u64, Arc<File>, u64)> = st
                .segs
                .iter()
                .filter(|(_, s)| s.synced < s.len)
                .map(|(n, s)| (*n, Arc::clone(&s.file), s.len))
                .collect();
            (todo, std::mem::take(&mut st.shadowed))
        };
        for (n, file, _) in &todo {
            if let Err(e) = file.sync_data() {
                lock(&self.state).shadowed.extend(shadowed);
                return Err(io_err("fdatasync", &seg_path(&self.dir, *n), e));
            }
        }
        {
            let mut st = lock(&self.state);
            for (n, _, len) in &todo {
                if let Some(s) = st.segs.get_mut(n) {
                    s.synced = s.synced.max(*len);
                }
            }
        }
        for path in shadowed {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot delete {}: {e}", path.display()),
            }
        }
        Ok(())
    }

    /// Makes `(kind, key)`'s entry durable, if it is packed and not yet.
    pub fn sync_for(&self, kind: Kind, key: Id) -> Result<(), StoreError> {
        let durable = {
            let st = lock(&self.state);
            match st.map.get(&(kind, key)) {
                None => true,
                Some(l) => st
                    .segs
                    .get(&l.seg)
                    .is_none_or(|s| s.synced >= l.off + l.len as u64),
            }
        };
        if durable { Ok(()) } else { self.sync_all() }
    }

    /// Deletes the legacy file `path` once the entries appended so far are
    /// durable (it was found beside a packed entry of its item).
    pub fn shadow(&self, path: PathBuf) {
        lock(&self.state).shadowed.push(path);
    }

    /// Takes `path` off the legacy files to delete; `true` if it was on
    /// it (the file may still exist: its caller deletes it now).
    pub fn unshadow(&self, path: &Path) -> bool {
        let mut st = lock(&self.state);
        let before = st.shadowed.len();
        st.shadowed.retain(|p| p != path);
        st.shadowed.len() != before
    }

    /// Whether a put made so far is not yet durable.
    pub fn unsynced(&self) -> bool {
        lock(&self.state).segs.values().any(|s| s.synced < s.len)
    }

    /// The oldest segment, if enough of all segments is garbage that it
    /// should be compacted, with the items it still holds.
    pub fn compaction_due(&self) -> Option<(u64, Vec<(Kind, Id)>)> {
        let st = lock(&self.state);
        if st.segs.len() < 2 {
            return None;
        }
        let (total, live) = st
            .segs
            .values()
            .fold((0, 0), |(t, l), s| (t + s.len, l + s.live));
        let garbage = total - live;
        if garbage < GARBAGE_MIN || garbage * 100 < total * GARBAGE_PCT {
            return None;
        }
        let (&oldest, _) = st.segs.first_key_value()?;
        let items = st
            .map
            .iter()
            .filter(|(_, l)| l.seg == oldest)
            .map(|(k, _)| *k)
            .collect();
        Some((oldest, items))
    }

    /// Appends `(kind, key)` again if its newest entry is in segment
    /// `seg` (the caller holds the item's lock).
    pub fn relocate(&self, seg: u64, kind: Kind, key: Id) -> Result<(), StoreError> {
        let (loc, file) = {
            let st = lock(&self.state);
            let Some(loc) = st.map.get(&(kind, key)).copied() else {
                return Ok(());
            };
            if loc.seg != seg {
                return Ok(());
            }
            let Some(s) = st.segs.get(&seg) else {
                return Ok(());
            };
            (loc, Arc::clone(&s.file))
        };
        let mut bytes = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut bytes, loc.off)
            .map_err(|e| io_err("read", &seg_path(&self.dir, seg), e))?;
        let mut st = lock(&self.state);
        if st.map.get(&(kind, key)) != Some(&loc) {
            return Ok(());
        }
        let new = st.append(&self.dir, &bytes)?;
        st.point(kind, key, Some(new));
        Ok(())
    }

    /// Deletes segment `seg` once nothing points into it and what was
    /// copied out of it is durable; `false` if something still does.
    pub fn retire(&self, seg: u64) -> Result<bool, StoreError> {
        self.sync_all()?;
        {
            let mut st = lock(&self.state);
            let newest = st.segs.last_key_value().map(|(n, _)| *n);
            if newest == Some(seg) || st.segs.get(&seg).is_some_and(|s| s.live > 0) {
                return Ok(false);
            }
            st.segs.remove(&seg);
        }
        let path = seg_path(&self.dir, seg);
        fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Bytes in all segments, and bytes of their live entries (tests).
    #[cfg(test)]
    pub fn sizes(&self) -> (u64, u64) {
        let st = lock(&self.state);
        st.segs
            .values()
            .fold((0, 0), |(t, l), s| (t + s.len, l + s.live))
    }

    /// How many segments exist (tests).
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        lock(&self.state).segs.len()
    }

    /// Flips one byte of `(kind, key)`'s file where it is stored (tests:
    /// a damaged disk).
    #[cfg(test)]
    pub fn damage(&self, kind: Kind, key: Id) {
        let st = lock(&self.state);
        let loc = st.map[&(kind, key)];
        let file = &st.segs[&loc.seg].file;
        let at = loc.off + loc.len as u64 - 1;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fsutil::ZERO_AHEAD;

    fn key(i: u8) -> Id {
        Id([i; 32])
    }

    #[test]
    fn entries_read_back_up_to_a_torn_tail_and_past_a_damaged_one() {
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            bytes.extend(entry_bytes(
                Kind::Record,
                key(i),
                Some(&vec![i; 100 + i as usize]),
            ));
        }
        bytes.extend(entry_bytes(Kind::Block, key(9), None));
        let (whole, used, skipped) = decode_entries(&bytes);
        assert_eq!((whole.len(), used, skipped), (6, bytes.len() as u64, 0));
        assert_eq!(whole[3].key, key(3));
        assert_eq!(whole[3].len as usize, HEAD + BODY_HEAD + 103);
        assert!(whole[3].put);
        assert_eq!((whole[5].kind, whole[5].put), (Kind::Block, false));
        // Every cut inside the last entry loses exactly that entry.
        let last = entry_bytes(Kind::Block, key(7), Some(&[7; 50]));
        let mut torn = bytes.clone();
        torn.extend(&last);
        for cut in 1..last.len() {
            let (e, used, _) = decode_entries(&torn[..torn.len() - cut]);
            assert_eq!((e.len(), used), (6, bytes.len() as u64), "cut {cut}");
        }
        // A damaged byte loses that entry only.
        let mut bad = bytes.clone();
        bad[HEAD + BODY_HEAD + 100 + HEAD + 40] ^= 1;
        let (e, _, skipped) = decode_entries(&bad);
        assert_eq!((e.len(), skipped), (5, 1));
        assert!(e.iter().all(|e| e.key != key(1)));
        // An absurd length does not make it read past the end.
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entries(&huge).0.is_empty());
    }

    #[test]
    fn a_reopened_pack_knows_the_newest_entry_of_each_item_and_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("packs");
        {
            let (p, live) = Packs::open(&d).unwrap();
            assert!(live.is_empty());
            p.put(Kind::Record, key(1), b"one", None).unwrap();
            p.put(Kind::Block, key(1), b"block one", None).unwrap();
            p.put(Kind::Record, key(1), b"one, again", None).unwrap();
            p.put(Kind::Record, key(2), b"two", None).unwrap();
            assert!(p.remove(Kind::Record, key(2)).unwrap());
            assert!(!p.remove(Kind::Record, key(2)).unwrap());
            assert_eq!(p.get(Kind::Record, key(1)).unwrap().unwrap(), b"one, again");
            assert_eq!(p.get(Kind::Block, key(1)).unwrap().unwrap(), b"block one");
            assert!(p.get(Kind::Record, key(2)).is_none());
            assert!(p.unsynced());
            p.sync_all().unwrap();
            assert!(!p.unsynced());
        }
        let (p, mut live) = Packs::open(&d).unwrap();
        live.sort_by_key(|(k, _)| *k == Kind::Record);
        assert_eq!(live, vec![(Kind::Block, key(1)), (Kind::Record, key(1))]);
        assert!(!p.holds(Kind::Record, key(2)));
        assert_eq!(p.get(Kind::Record, key(1)).unwrap().unwrap(), b"one, again");
        assert_eq!(p.get(Kind::Block, key(1)).unwrap().unwrap(), b"block one");
    }

    #[test]
    fn a_torn_tail_is_cut_off_so_later_entries_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("packs");
        {
            let (p, _) = Packs::open(&d).unwrap();
            p.put(Kind::Record, key(1), b"kept", None).unwrap();
            p.sync_all().unwrap();
        }
        let path = seg_path(&d, 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend(&entry_bytes(Kind::Record, key(2), Some(b"torn"))[..20]);
        fs::write(&path, &bytes).unwrap();
        {
            let (p, live) = Packs::open(&d).unwrap();
            assert_eq!(live.len(), 1);
            p.put(Kind::Record, key(3), b"after", None).unwrap();
            p.sync_all().unwrap();
        }
        let (p, live) = Packs::open(&d).unwrap();
        assert_eq!(live.len(), 2);
        assert_eq!(p.get(Kind::Record, key(3)).unwrap().unwrap(), b"after");
    }

    #[test]
    fn appends_overwrite_zeros_written_ahead_and_a_torn_entry_among_them_is_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("packs");
        let path = seg_path(&d, 0);
        {
            let (p, _) = Packs::open(&d).unwrap();
            p.put(Kind::Record, key(1), b"kept", None).unwrap();
            p.sync_all().unwrap();
            // The file holds zeros ahead of the entry.
            assert_eq!(fs::metadata(&path).unwrap().len(), ZERO_AHEAD);
        }
        // Reopened: the zeros are no torn tail, and stay ahead.
        {
            let (p, live) = Packs::open(&d).unwrap();
            assert_eq!(live.len(), 1);
            assert_eq!(fs::metadata(&path).unwrap().len(), ZERO_AHEAD);
            p.put(Kind::Record, key(2), b"second", None).unwrap();
            p.sync_all().unwrap();
            assert_eq!(fs::metadata(&path).unwrap().len(), ZERO_AHEAD);
        }
        // A crash tore a third entry: its head and part of its body
        // reached the disk, the rest is still zeros.
        let mut bytes = fs::read(&path).unwrap();
        let (entries, used, _) = decode_entries(&bytes);
        assert_eq!(entries.len(), 2);
        let torn = entry_bytes(Kind::Record, key(3), Some(&[9u8; 300]));
        bytes[used as usize..used as usize + 100].copy_from_slice(&torn[..100]);
        assert_eq!(decode_entries(&bytes).1, used, "the torn entry ends them");
        fs::write(&path, &bytes).unwrap();
        {
            let (p, live) = Packs::open(&d).unwrap();
            assert_eq!(live.len(), 2);
            p.put(Kind::Record, key(4), b"after", None).unwrap();
            p.sync_all().unwrap();
        }
        let (p, live) = Packs::open(&d).unwrap();
        assert_eq!(live.len(), 3);
        assert_eq!(p.get(Kind::Record, key(4)).unwrap().unwrap(), b"after");
        assert_eq!(p.get(Kind::Record, key(2)).unwrap().unwrap(), b"second");
        assert!(!p.holds(Kind::Record, key(3)));
    }

    #[test]
    fn a_read_checks_the_entrys_crc() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = Packs::open(&dir.path().join("packs")).unwrap();
        p.put(Kind::Record, key(1), b"a record", None).unwrap();
        p.put(Kind::Block, key(2), b"a block", None).unwrap();
        assert_eq!(p.get(Kind::Record, key(1)).unwrap().unwrap(), b"a record");
        p.damage(Kind::Record, key(1));
        p.damage(Kind::Block, key(2));
        // Damaged bytes read as nothing, which no caller's check accepts.
        assert!(p.get(Kind::Record, key(1)).unwrap().unwrap().is_empty());
        assert!(p.get(Kind::Block, key(2)).unwrap().unwrap().is_empty());
    }

    #[test]
    fn compaction_copies_the_oldest_segment_forward_and_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("packs");
        let (p, _) = Packs::open(&d).unwrap();
        let big = vec![5u8; 1 << 20];
        // Key 0 stays; keys 1.. are written over and over: garbage.
        p.put(Kind::Record, key(0), b"cold", None).unwrap();
        p.put(Kind::Record, key(200), b"soon gone", None).unwrap();
        assert!(p.remove(Kind::Record, key(200)).unwrap());
        assert!(p.compaction_due().is_none());
        for round in 0..3u8 {
            for i in 1..=20u8 {
                let mut v = big.clone();
                v[0] = round;
                p.put(Kind::Block, key(i), &v, None).unwrap();
            }
        }
        let (total, live) = p.sizes();
        assert!(
            total > 3 * SEGMENT_MAX && live < total / 2,
            "{total} {live}"
        );
        let (seg, items) = p.compaction_due().expect("due");
        assert_eq!(seg, 0);
        assert!(items.contains(&(Kind::Record, key(0))));
        for (k, id) in items {
            p.relocate(seg, k, id).unwrap();
        }
        assert!(p.retire(seg).unwrap());
        assert!(!seg_path(&d, 0).exists());
        assert_eq!(p.get(Kind::Record, key(0)).unwrap().unwrap(), b"cold");
        drop(p);
        // Reopened without the oldest segment: its "gone" entry went with
        // it, and nothing it hid came back.
        let (p, live) = Packs::open(&d).unwrap();
        assert_eq!(live.len(), 21);
        assert!(!p.holds(Kind::Record, key(200)));
        assert_eq!(p.get(Kind::Block, key(3)).unwrap().unwrap()[0], 2);
        assert_eq!(p.get(Kind::Record, key(0)).unwrap().unwrap(), b"cold");
    }

    #[test]
    fn a_failed_append_is_reported_and_the_next_goes_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("packs");
        let (p, _) = Packs::open(&d).unwrap();
        p.put(Kind::Record, key(1), b"before", None).unwrap();
        {
            // A full disk: every write fails (and so does the truncation).
            let full = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/full")
                .unwrap();
            let mut st = lock(&p.state);
            st.segs.get_mut(&0).unwrap().file = Arc::new(full);
        }
        let err = p.put(Kind::Record, key(2), b"lost", None).unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(!p.holds(Kind::Record, key(2)));
        p.put(Kind::Record, key(3), b"after", None).unwrap();
        assert_eq!(p.segments(), 2);
        assert_eq!(p.get(Kind::Record, key(3)).unwrap().unwrap(), b"after");
    }

    #[test]
    fn legacy_files_go_once_their_replacement_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-record");
        fs::write(&old, b"legacy").unwrap();
        let (p, _) = Packs::open(&dir.path().join("packs")).unwrap();
        p.put(Kind::Record, key(1), b"new", Some(old.clone()))
            .unwrap();
        assert!(old.exists(), "kept until the entry is durable");
        p.sync_all().unwrap();
        assert!(!old.exists());
    }
}
