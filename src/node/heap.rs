//! The node's heap: fewer malloc arenas, freed memory given back, and
//! small allocations kept apart from block buffers.
//!
//! With glibc's defaults (8 arenas per core) each worker thread kept its
//! own freed 1 MiB block buffers, which held the mounting node's peak RSS
//! ~30 MiB higher during a large copy, with no gain in speed; and after a
//! copy the freed buffers stayed resident (~90 MiB idle instead of ~20).
//! Trimmed every 2 s, freed buffers still made up about 30 MiB of the
//! mounting node's peak during a copy; every 0.5 s, the peak fell from
//! 103 to 81 MiB (with 4 uploads in flight instead of 8) at no measured
//! cost in speed.
//!
//! Between trims, block-sized buffers (1 MiB: a block, a sealed block, a
//! frame) are kept in the heap rather than mapped and unmapped one by one
//! (glibc's default maps anything past 128 KiB until its first free, and
//! gives freed top memory back past 128 KiB): on a virtual machine whose
//! host takes freed pages back, every fresh page faults and is zeroed. A
//! 256 MiB copy into a 5-node ring used 1.9 s of CPU with the defaults,
//! 1.6-1.75 s with these thresholds, at the same peak RSS.
//!
//! Allocations below [`SPLIT_AT`] go to jemalloc instead ([`SplitHeap`],
//! the `peerstore` binary's allocator). glibc serves them from bins that
//! an `rm -rf` of 10,000 files left fragmented (17,552 free chunks in a
//! heap of 114 MiB, some 20 MiB of them live): every later allocation of
//! a few KiB searched them, `_int_malloc` took 15% of the mounting node's
//! CPU, and 1000 `pwrite` + `fsync` took 2.6-3.6 s against 1.9-2.2 s with
//! this split (its CPU 177-242 ticks against 127-139). jemalloc's size
//! classes do not fragment that way. Block-sized buffers stay with glibc
//! and its trims: jemalloc for everything held the data nodes' peak RSS
//! at ~95 MiB each during a large copy, against ~30-45 MiB. The split
//! still costs the data nodes, which gain nothing from it: in one
//! `peers.sh` run the busiest peaked at 86 MiB against glibc's 59. So
//! the binary's allocator is a [`NodeHeap`], which takes the split only
//! in a process that mounts (`--mount` on its command line) and glibc
//! alone in every other: data nodes and client commands.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tikv_jemallocator::Jemalloc;
use tokio::sync::watch;

/// Allocations smaller than this go to jemalloc, larger ones to glibc.
pub const SPLIT_AT: usize = 64 << 10;

/// jemalloc's options for [`SplitHeap`] (export them as
/// `_rjem_malloc_conf` from the binary): one arena, thread caches for
/// blocks up to 4 KiB only, and freed pages returned within ~250 ms. Its
/// defaults (an arena per thread up to 4 per core, 32 KiB thread caches,
/// 10 s decay) raised the data nodes' peak RSS; these kept the mounting
/// node's gain.
pub const JEMALLOC_CONF: &[u8; 62] =
    b"narenas:1,tcache_max:4096,dirty_decay_ms:250,muzzy_decay_ms:0\0";
const _: () = assert!(JEMALLOC_CONF[JEMALLOC_CONF.len() - 1] == 0, "a C string");

/// The process's allocator: jemalloc below [`SPLIT_AT`], glibc above.
/// A block of either kind is freed by the one that allocated it: both
/// follow the size in its layout, and a reallocation across the split
/// moves the block.
pub struct SplitHeap;

fn small(size: usize) -> bool {
    size < SPLIT_AT
}

// SAFETY: each call goes to one allocator by the layout's size, and a
// block is always freed or resized with the layout it was allocated
// with (GlobalAlloc's contract), so by the allocator that made it.
unsafe impl GlobalAlloc for SplitHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match small(layout.size()) {
                true => Jemalloc.alloc(layout),
                false => System.alloc(layout),
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match small(layout.size()) {
                true => Jemalloc.alloc_zeroed(layout),
                false => System.alloc_zeroed(layout),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout`, so by this allocator.
        unsafe {
            match small(layout.size()) {
                true => Jemalloc.dealloc(ptr, layout),
                false => System.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated with `layout`; across the split the
        // bytes are copied into a block of the other allocator (the new
        // layout is valid: GlobalAlloc's contract for `new_size`) and the
        // old block freed by its own.
        unsafe {
            match (small(layout.size()), small(new_size)) {
                (true, true) => Jemalloc.realloc(ptr, layout, new_size),
                (false, false) => System.realloc(ptr, layout, new_size),
                _ => {
                    let moved = Layout::from_size_align_unchecked(new_size, layout.align());
                    let to = self.alloc(moved);
                    if !to.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    to
                }
            }
        }
    }
}

/// A [`NodeHeap`] that has not chosen yet.
const UNDECIDED: u8 = 0;
/// A [`NodeHeap`] that uses the [`SplitHeap`].
const SPLIT: u8 = 1;
/// A [`NodeHeap`] that uses glibc alone.
const GLIBC: u8 = 2;

/// Bytes of the command line read to find `--mount`; a node's is far
/// shorter, and a longer one is judged by its start.
const CMDLINE_BYTES: usize = 8 << 10;

/// The `peerstore` binary's allocator: the [`SplitHeap`] in a process
/// that mounts, glibc alone in any other. It chooses at its first
/// allocation, from `/proc/self/cmdline` (the arguments are not parsed
/// yet, and parsing them allocates), and never changes afterwards, so a
/// block is always freed by the allocator that made it.
pub struct NodeHeap {
    role: AtomicU8,
}

impl NodeHeap {
    /// A heap that chooses at its first allocation.
    pub const fn new() -> Self {
        NodeHeap {
            role: AtomicU8::new(UNDECIDED),
        }
    }

    /// Whether small allocations go to jemalloc (this process mounts).
    /// Chooses if no allocation has yet.
    pub fn is_split(&self) -> bool {
        match self.role.load(Ordering::Acquire) {
            SPLIT => true,
            GLIBC => false,
            _ => self.choose(),
        }
    }

    /// Settles the role. Threads that race here compute the same answer
    /// from the same command line, and the first stored one wins anyway.
    #[cold]
    fn choose(&self) -> bool {
        let want = match process_mounts() {
            true => SPLIT,
            false => GLIBC,
        };
        match self
            .role
            .compare_exchange(UNDECIDED, want, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => want == SPLIT,
            Err(stored) => stored == SPLIT,
        }
    }
}

impl Default for NodeHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the role is settled before the first block is handed out and
// never changes, so every call goes to the allocator that made the block.
unsafe impl GlobalAlloc for NodeHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match self.is_split() {
                true => SplitHeap.alloc(layout),
                false => System.alloc(layout),
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match self.is_split() {
                true => SplitHeap.alloc_zeroed(layout),
                false => System.alloc_zeroed(layout),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout`, by the same role.
        unsafe {
            match self.is_split() {
                true => SplitHeap.dealloc(ptr, layout),
                false => System.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated with `layout`, by the same role.
        unsafe {
            match self.is_split() {
                true => SplitHeap.realloc(ptr, layout, new_size),
                false => System.realloc(ptr, layout, new_size),
            }
        }
    }
}

/// Whether this process's command line asks for a mount. Reads
/// `/proc/self/cmdline` with plain system calls into a stack buffer: it
/// runs inside the allocator, so it must not allocate. Without
/// `/proc`, the answer is no (glibc alone, which is correct, only slower
/// after heavy metadata work).
fn process_mounts() -> bool {
    let mut buf = [0u8; CMDLINE_BYTES];
    let mut len = 0;
    // SAFETY: a NUL-terminated path; `read` writes only into the rest of
    // `buf`; the descriptor is closed before return.
    unsafe {
        let fd = libc::open(
            c"/proc/self/cmdline".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            match n {
                n if n > 0 => len += n as usize,
                -1 if *libc::__errno_location() == libc::EINTR => continue,
                _ => break,
            }
        }
        libc::close(fd);
    }
    asks_for_mount(&buf[..len])
}

/// Whether NUL-separated arguments (as in `/proc/PID/cmdline`) hold
/// `--mount DIR` or `--mount=DIR` before a `--` that ends the options.
fn asks_for_mount(cmdline: &[u8]) -> bool {
    for arg in cmdline.split(|&b| b == 0) {
        match arg {
            b"--" => return false,
            b"--mount" => return true,
            a if a.starts_with(b"--mount=") => return true,
            _ => {}
        }
    }
    false
}

/// Malloc arenas, at most.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Allocations at least this big are mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Free memory at the top of a heap past this is given back at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// How often freed heap memory is given back to the system.
const TRIM_EVERY: Duration = Duration::from_millis(500);

/// Limits the malloc arenas and sets when memory is mapped and given back.
/// Call it before any other thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Gives freed heap memory back to the system every [`TRIM_EVERY`] until
/// `stop` (the idle RSS after a burst, not its peak).
pub async fn trim_loop(mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stop.changed() => return,
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount is found in either spelling, and not after `--` or in
    /// another option's name.
    #[test]
    fn only_a_mount_on_the_command_line_takes_the_split() {
        let yes: [&[u8]; 3] = [
            b"peerstore\0node\0--mount\0/home/me/PeerStore\0",
            b"/usr/bin/peerstore\0node\0--data\0/d\0--mount=/m\0",
            b"peerstore\0node\0--mount\0",
        ];
        let no: [&[u8]; 6] = [
            b"peerstore\0node\0--data\0/d\0--listen\x00127.0.0.1:7401\0",
            b"peerstore\0ls\0/\0",
            b"peerstore\0put\0--\0--mount\0",
            b"peerstore\0node\0--mounted\0",
            b"peerstore\0node\0--no-mount\0",
            b"",
        ];
        for c in yes {
            assert!(asks_for_mount(c), "{}", String::from_utf8_lossy(c));
        }
        for c in no {
            assert!(!asks_for_mount(c), "{}", String::from_utf8_lossy(c));
        }
        // This test binary was started without --mount.
        assert!(!process_mounts());
    }

    /// A heap keeps its first choice, and blocks of every size made under
    /// it keep their bytes through reallocation.
    #[test]
    fn a_node_heap_keeps_its_role() {
        for role in [SPLIT, GLIBC] {
            let heap = NodeHeap {
                role: AtomicU8::new(role),
            };
            assert_eq!(heap.is_split(), role == SPLIT);
            let l = Layout::from_size_align(100, 8).unwrap();
            // SAFETY: non-zero layouts; each block is resized and freed
            // with the layout it has.
            unsafe {
                let p = heap.alloc(l);
                assert!(!p.is_null());
                p.write_bytes(7, 100);
                let q = heap.realloc(p, l, 3 * SPLIT_AT);
                assert!(!q.is_null());
                assert!((0..100).all(|i| *q.add(i) == 7));
                heap.dealloc(q, Layout::from_size_align(3 * SPLIT_AT, 8).unwrap());
            }
            assert_eq!(heap.is_split(), role == SPLIT);
        }
        let fresh = NodeHeap::new();
        assert!(!fresh.is_split(), "the test binary does not mount");
        assert_eq!(fresh.role.load(Ordering::Relaxed), GLIBC);
    }

    /// Bytes survive reallocations across the split both ways, and zeroed
    /// blocks of either kind are zero.
    #[test]
    fn a_block_keeps_its_bytes_across_the_split() {
        let heap = SplitHeap;
        let small = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: layouts are non-zero; every block is freed or resized
        // with the layout it has.
        unsafe {
            let p = heap.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let big = SPLIT_AT * 2;
            let q = heap.realloc(p, small, big);
            assert!(!q.is_null());
            assert!((0..1000).all(|i| *q.add(i) == (i % 251) as u8));
            let r = heap.realloc(q, Layout::from_size_align(big, 8).unwrap(), 500);
            assert!(!r.is_null());
            assert!((0..500).all(|i| *r.add(i) == (i % 251) as u8));
            heap.dealloc(r, Layout::from_size_align(500, 8).unwrap());
            for size in [64, SPLIT_AT - 1, SPLIT_AT, 3 * SPLIT_AT] {
                let l = Layout::from_size_align(size, 16).unwrap();
                let z = heap.alloc_zeroed(l);
                assert!(!z.is_null());
                assert!((0..size).all(|i| *z.add(i) == 0), "{size}");
                heap.dealloc(z, l);
            }
        }
    }
}
