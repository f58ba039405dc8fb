//! Staging large files past the page cache (`O_DIRECT`).
//!
//! A block file is written once and then read rarely (a replica serves it
//! to a reader whose own cache missed), so copying it into the page cache
//! buys nothing. On a virtual machine that copy is also slow: pages the
//! guest gave back to its host fault in again on first touch. Measured
//! here: 1 MiB files written through the page cache at ~300 MB/s, with
//! `O_DIRECT` at ~1500 MB/s; during a 256 MiB copy into a 5-node ring
//! that copy was a third of all CPU samples (each byte lands on r
//! replicas).
//!
//! The bytes are gathered into a reused buffer aligned to
//! [`ALIGN`] (`O_DIRECT` needs the buffer, offset and length aligned);
//! the aligned prefix is written direct, the unaligned tail (< 4 KiB)
//! through the page cache after `O_DIRECT` is turned off on the
//! descriptor. Where the file system refuses `O_DIRECT` (tmpfs: `EINVAL`
//! on open or write), the file is written through the page cache as
//! before. Durability is unchanged: the store fsyncs the file before it
//! counts as durable, as for any staged file.

use super::StoreError;
use super::fsutil::{START_WRITEBACK, Staged, io_err, start_writeback, temp_path};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Alignment of buffer, offset and length for `O_DIRECT` (covers every
/// logical block size Linux uses).
const ALIGN: usize = 4096;
/// Files smaller than this are written through the page cache.
pub const DIRECT_MIN: usize = 256 << 10;
/// Bytes of a pooled buffer's usable (aligned) area: a whole block file
/// of the largest block with a generous claims header fits.
const POOLED: usize = (1 << 20) + (64 << 10);
/// Buffers kept for reuse, at most (one per concurrent writer).
const POOL_MAX: usize = 4;

/// Aligned buffers, reused so that their pages stay resident.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer whose aligned area holds at least `len` bytes rounded up.
fn take(len: usize) -> Vec<u8> {
    let area = len.next_multiple_of(ALIGN);
    if area <= POOLED {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = pool.pop() {
            return b;
        }
        return vec![0; POOLED + ALIGN];
    }
    vec![0; area + ALIGN]
}

/// Returns a pooled-size buffer for reuse.
fn give_back(buf: Vec<u8>) {
    if buf.len() != POOLED + ALIGN {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(buf);
    }
}

/// Whether `e` is the file system refusing `O_DIRECT` (or its alignment).
fn refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Where a test makes the file system refuse `O_DIRECT`: no file system
/// here does (tmpfs accepts it since Linux 6.6), so the fallbacks are
/// exercised by pretending, on the test's own thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Refusal {
    Open,
    Write,
}

#[cfg(test)]
thread_local! {
    static REFUSE: std::cell::Cell<Option<Refusal>> = const { std::cell::Cell::new(None) };
}

/// `EINVAL` if a test asked for a refusal at `at`, once (never outside
/// tests).
fn pretend_refusal(at: Refusal) -> Option<std::io::Error> {
    #[cfg(test)]
    if REFUSE.get() == Some(at) {
        REFUSE.set(None);
        return Some(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let _ = at;
    None
}

/// Turns `O_DIRECT` off on `file`'s descriptor.
fn buffered(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an open descriptor with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `parts`, one after the other, to a new uniquely named file in
/// `tmp_dir`, not synced: past the page cache where the file system allows
/// it, else through it (then starting the write-back of a large one, as
/// [`super::fsutil::stage_with`] does).
pub fn stage_parts(tmp_dir: &Path, parts: &[&[u8]]) -> Result<Staged, StoreError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let path = temp_path(tmp_dir);
    let open = |direct: bool| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(&path)
    };
    let direct = len >= DIRECT_MIN;
    let opened = match direct.then(|| pretend_refusal(Refusal::Open)).flatten() {
        Some(e) => Err(e),
        None => open(direct),
    };
    let (file, direct) = match opened {
        Ok(f) => (f, direct),
        Err(e) if refused(&e) => (open(false).map_err(|e| io_err("create", &path, e))?, false),
        Err(e) => return Err(io_err("create", &path, e)),
    };
    // From here on, dropping `staged` on an error path removes the file.
    let staged = Staged {
        path: Some(path.clone()),
    };
    if direct && write_direct(&file, parts, len).map_err(|e| io_err("write", &path, e))? {
        return Ok(staged);
    }
    let mut at = 0u64;
    for p in parts {
        file.write_all_at(p, at)
            .map_err(|e| io_err("write", &path, e))?;
        at += p.len() as u64;
    }
    if len >= START_WRITEBACK {
        start_writeback(&file);
    }
    Ok(staged)
}

/// Writes `parts` (`len` bytes) to `file`, opened with `O_DIRECT`: the
/// aligned prefix direct, the tail buffered. `Ok(false)` if the file
/// system refused the direct write (`O_DIRECT` is then off, and the caller
/// writes the file through the page cache from the start).
fn write_direct(file: &File, parts: &[&[u8]], len: usize) -> std::io::Result<bool> {
    let mut buf = take(len);
    let off = buf.as_ptr().align_offset(ALIGN);
    let area = &mut buf[off..off + len.next_multiple_of(ALIGN)];
    let mut at = 0;
    for p in parts {
        area[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    let whole = len / ALIGN * ALIGN;
    let written = match pretend_refusal(Refusal::Write) {
        Some(e) => Err(e),
        None => file.write_all_at(&area[..whole], 0),
    };
    let tail = match written {
        Ok(()) => buffered(file).and_then(|()| file.write_all_at(&area[whole..len], whole as u64)),
        Err(e) if refused(&e) => {
            give_back(buf);
            buffered(file)?;
            return Ok(false);
        }
        Err(e) => Err(e),
    };
    give_back(buf);
    tail.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_staged_file_holds_its_parts_in_order_at_every_size() {
        let d = tempfile::tempdir().unwrap();
        for (head, body) in [
            (8, 0),
            (100, 4096),
            (9, DIRECT_MIN - 9),
            (137, (1 << 20) - 4096),
            (ALIGN, 3 * ALIGN),
            (4000, POOLED + 5000),
        ] {
            let (h, b) = (bytes(head, 1), bytes(body, 2));
            let dest = d.path().join(format!("f{head}-{body}"));
            stage_parts(d.path(), &[&h, &b])
                .unwrap()
                .commit(&dest)
                .unwrap();
            let got = std::fs::read(&dest).unwrap();
            assert_eq!(got.len(), head + body);
            assert_eq!(&got[..head], &h[..]);
            assert_eq!(&got[head..], &b[..]);
        }
        let pooled = POOL.lock().unwrap().len();
        assert!((1..=POOL_MAX).contains(&pooled), "{pooled} buffers kept");
    }

    #[test]
    fn a_refused_open_or_direct_write_falls_back_to_the_page_cache() {
        let d = tempfile::tempdir().unwrap();
        let body = bytes(DIRECT_MIN + ALIGN + 77, 4);
        for at in [Refusal::Open, Refusal::Write] {
            REFUSE.set(Some(at));
            let dest = d.path().join(format!("{at:?}"));
            let staged = stage_parts(d.path(), &[b"head", &body]);
            let reached = REFUSE.replace(None).is_none();
            assert!(reached, "the refusal at {at:?} was never met");
            // Written whole through the page cache (an unaligned write to
            // a descriptor still in O_DIRECT mode would fail here).
            staged.unwrap().commit(&dest).unwrap();
            let got = std::fs::read(&dest).unwrap();
            assert_eq!(got.len(), 4 + body.len(), "{at:?}");
            assert_eq!(&got[..4], b"head");
            assert_eq!(&got[4..], &body[..], "{at:?}");
        }
        // Only the refusal is forgiven: nothing is left in the directory
        // but the two files.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_file_on_tmpfs_is_written_whole() {
        // tmpfs refused O_DIRECT on open before Linux 6.6 (the fallback
        // then writes through the page cache) and ignores it since.
        let d = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs)");
        let body = bytes(DIRECT_MIN + 77, 3);
        let dest = d.path().join("f");
        stage_parts(d.path(), &[b"head", &body])
            .unwrap()
            .commit(&dest)
            .unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &body[..]);
    }
}
