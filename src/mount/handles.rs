//! Open files and open directories.
//!
//! Invariants:
//! - One [`OpenFile`] per inode, shared by every handle of that inode
//!   (behind an async mutex: its methods await while holding it), with a
//!   count of the handles; it goes away when the last handle is released.
//! - Each handle number maps to the inode it was opened on; numbers are
//!   never reused within a mount.
//! - `attrs` mirrors the open file's attributes after every change, so
//!   `getattr` can answer without waiting for the file's mutex (which a
//!   long write may hold).
//! - A directory handle keeps the listing it read at offset 0, so later
//!   offsets index the same list however the directory changes meanwhile.

use crate::fs::{Attrs, Link, OpenFile};
use fuser::FileType;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

/// An open file, shared between the handles of one inode.
pub type SharedFile = Arc<AsyncMutex<OpenFile>>;

/// The open state of one inode.
pub struct OpenEntry {
    /// The file state all handles share.
    pub file: SharedFile,
    /// Handles open on it.
    count: usize,
    /// The file's attributes as of its last change (size included).
    pub attrs: Attrs,
    /// The object was unlinked (or replaced by a rename) while open: its
    /// record is gone, so nothing is saved any more; reads still work.
    pub unlinked: bool,
    /// A `close` returned without storing this new file: its release
    /// stores it (see `Core::flush_as`).
    behind: bool,
}

/// New files closed and not stored yet (their releases store them), at
/// most: past this, a `close` stores its file before it returns.
pub const BEHIND_MAX: usize = 64;

/// One row of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
    /// The child (`None` for `.` and `..`).
    pub link: Option<Link>,
    /// The child's attributes as its entry carries them.
    pub hint: Option<Attrs>,
}

/// An open directory.
struct DirHandle {
    /// The listing read at offset 0.
    listing: Option<Arc<Vec<DirEntry>>>,
}

/// Handles of one mount.
#[derive(Default)]
pub struct Handles {
    /// Open state by inode.
    open: HashMap<u64, OpenEntry>,
    /// File handle → inode.
    files: HashMap<u64, u64>,
    /// Directory handles.
    dirs: HashMap<u64, DirHandle>,
    /// The last handle number given out.
    last_fh: u64,
    /// Open entries marked `behind`.
    behind: usize,
}

impl Handles {
    fn next_fh(&mut self) -> u64 {
        self.last_fh += 1;
        self.last_fh
    }

    /// A new handle on the already open `ino`, if it is open.
    pub fn attach(&mut self, ino: u64) -> Option<(u64, SharedFile)> {
        let entry = self.open.get_mut(&ino)?;
        entry.count += 1;
        let file = Arc::clone(&entry.file);
        let fh = self.next_fh();
        self.files.insert(fh, ino);
        Some((fh, file))
    }

    /// A new handle on `ino`: on `file` if the inode is not open yet (a
    /// racing open may have opened it meanwhile; then `file` is dropped).
    /// Returns the handle, the shared file, and whether `file` was used.
    pub fn attach_or_insert(&mut self, ino: u64, file: OpenFile) -> (u64, SharedFile, bool) {
        if let Some((fh, shared)) = self.attach(ino) {
            return (fh, shared, false);
        }
        let attrs = file.state.obj.attrs.clone();
        let shared = Arc::new(AsyncMutex::new(file));
        self.open.insert(
            ino,
            OpenEntry {
                file: Arc::clone(&shared),
                count: 1,
                attrs,
                unlinked: false,
                behind: false,
            },
        );
        let fh = self.next_fh();
        self.files.insert(fh, ino);
        (fh, shared, true)
    }

    /// The inode and file of handle `fh`.
    pub fn file(&self, fh: u64) -> Option<(u64, SharedFile)> {
        let ino = *self.files.get(&fh)?;
        let entry = self.open.get(&ino)?;
        Some((ino, Arc::clone(&entry.file)))
    }

    /// The open state of `ino`.
    pub fn entry(&self, ino: u64) -> Option<&OpenEntry> {
        self.open.get(&ino)
    }

    /// Whether `ino` has open handles.
    pub fn is_open(&self, ino: u64) -> bool {
        self.open.contains_key(&ino)
    }

    /// How many handles are open on `ino`.
    pub fn open_count(&self, ino: u64) -> usize {
        self.open.get(&ino).map_or(0, |e| e.count)
    }

    /// Every open file (to flush them all).
    pub fn all_files(&self) -> Vec<(u64, SharedFile)> {
        self.open
            .iter()
            .map(|(ino, e)| (*ino, Arc::clone(&e.file)))
            .collect()
    }

    /// Records the attributes of open `ino` after a change.
    pub fn set_attrs(&mut self, ino: u64, attrs: &Attrs) {
        if let Some(e) = self.open.get_mut(&ino) {
            e.attrs = attrs.clone();
        }
    }

    /// Changes the link count shown for open `ino` (a name was added or
    /// removed elsewhere in the tree).
    pub fn add_nlink(&mut self, ino: u64, by: i32) {
        if let Some(e) = self.open.get_mut(&ino) {
            e.attrs.nlink = e.attrs.nlink.saturating_add_signed(by).max(1);
        }
    }

    /// Marks open file `ino` as unlinked (its record is gone).
    pub fn mark_unlinked(&mut self, ino: u64) {
        if let Some(e) = self.open.get_mut(&ino) {
            e.unlinked = true;
        }
    }

    /// Whether open `ino` was unlinked.
    pub fn is_unlinked(&self, ino: u64) -> bool {
        self.open.get(&ino).is_some_and(|e| e.unlinked)
    }

    /// Marks open `ino` as closed without being stored (its release
    /// stores it), unless [`BEHIND_MAX`] are already; whether it is.
    pub fn mark_behind(&mut self, ino: u64) -> bool {
        let full = self.behind >= BEHIND_MAX;
        match self.open.get_mut(&ino) {
            Some(e) if e.behind => true,
            Some(e) if !full => {
                e.behind = true;
                self.behind += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether open `ino` was closed without being stored.
    pub fn is_behind(&self, ino: u64) -> bool {
        self.open.get(&ino).is_some_and(|e| e.behind)
    }

    /// The open files closed without being stored.
    pub fn behind_files(&self) -> Vec<(u64, SharedFile)> {
        self.open
            .iter()
            .filter(|(_, e)| e.behind)
            .map(|(ino, e)| (*ino, Arc::clone(&e.file)))
            .collect()
    }

    /// Closes handle `fh`; returns its inode and whether that was the
    /// inode's last handle (its open state is then gone).
    pub fn detach(&mut self, fh: u64) -> Option<(u64, bool)> {
        let ino = self.files.remove(&fh)?;
        let Some(entry) = self.open.get_mut(&ino) else {
            return Some((ino, true));
        };
        entry.count = entry.count.saturating_sub(1);
        if entry.count == 0 {
            if entry.behind {
                self.behind -= 1;
            }
            self.open.remove(&ino);
            return Some((ino, true));
        }
        Some((ino, false))
    }

    /// A new directory handle.
    pub fn open_dir(&mut self) -> u64 {
        let fh = self.next_fh();
        self.dirs.insert(fh, DirHandle { listing: None });
        fh
    }

    /// The listing kept by directory handle `fh`.
    pub fn listing(&self, fh: u64) -> Option<Arc<Vec<DirEntry>>> {
        self.dirs.get(&fh)?.listing.clone()
    }

    /// Keeps `listing` in directory handle `fh` (if it is open).
    pub fn set_listing(&mut self, fh: u64, listing: Arc<Vec<DirEntry>>) {
        if let Some(d) = self.dirs.get_mut(&fh) {
            d.listing = Some(listing);
        }
    }

    /// Closes directory handle `fh`.
    pub fn close_dir(&mut self, fh: u64) {
        self.dirs.remove(&fh);
    }
}
