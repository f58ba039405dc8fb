//! Vault attributes → the kernel's `FileAttr`, and `setattr` changes →
//! vault attributes.

use super::inodes::ROOT_INO;
use crate::fs::object::Time;
use crate::fs::{Attrs, Kind, Link};
use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

/// `st_blksize`: large, so tools (cp, cat, rsync) use big buffers that
/// match the 1 MiB chunks.
pub const BLKSIZE: u32 = 1 << 20;

/// The kernel's file type for an object kind.
pub fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

/// The user and group shown as the owner of the folder's top: the
/// mounting process's. The tree is that user's wherever it was made (its
/// root may have been created by root, or by another uid on another
/// machine), and a user must be able to create files in their own folder.
fn mount_owner() -> (u32, u32) {
    static OWNER: std::sync::LazyLock<(u32, u32)> = std::sync::LazyLock::new(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    *OWNER
}

/// A directory entry's attribute copy, if the kernel may be given it in
/// place of the object's own (a lookup's or a listing's answer): not for
/// a directory (its link count and times change with its entries, which
/// its entry's copy does not follow) nor a file with more than one link
/// (only the entry its last save went through is brought up to date). A
/// copy left stale by a crash between a file's save and its entry's
/// update is caught at `open` (`Core::check_hinted`).
pub fn trusted_hint<'a>(link: &Link, hint: Option<&'a Attrs>) -> Option<&'a Attrs> {
    hint.filter(|a| link.kind != Kind::Dir && a.nlink <= 1)
}

/// The `stat` of object `ino` of `kind` with `attrs`.
pub fn file_attr(ino: u64, kind: Kind, attrs: &Attrs) -> FileAttr {
    let (uid, gid) = match ino {
        ROOT_INO => mount_owner(),
        _ => (attrs.uid, attrs.gid),
    };
    FileAttr {
        ino: INodeNo(ino),
        size: attrs.size,
        blocks: attrs.size.div_ceil(512),
        atime: attrs.atime.to_system(),
        mtime: attrs.mtime.to_system(),
        ctime: attrs.ctime.to_system(),
        crtime: attrs.ctime.to_system(),
        kind: file_type(kind),
        perm: (attrs.mode & 0o7777) as u16,
        nlink: if kind == Kind::Dir {
            attrs.nlink.max(2)
        } else {
            attrs.nlink.max(1)
        },
        uid,
        gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The attribute part of a `setattr` (size is handled separately).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

impl AttrChange {
    /// Whether nothing is to change.
    pub fn is_empty(&self) -> bool {
        *self == AttrChange::default()
    }

    /// Applies the change to `attrs` (ctime becomes now).
    pub fn apply(&self, attrs: &mut Attrs) {
        if self.is_empty() {
            return;
        }
        let now = Time::now();
        let at = |t: &TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => Time::from_system(*t),
            TimeOrNow::Now => now,
        };
        if let Some(m) = self.mode {
            attrs.mode = m & 0o7777;
        }
        if let Some(u) = self.uid {
            attrs.uid = u;
        }
        if let Some(g) = self.gid {
            attrs.gid = g;
        }
        if let Some(t) = &self.atime {
            attrs.atime = at(t);
        }
        if let Some(t) = &self.mtime {
            attrs.mtime = at(t);
        }
        attrs.ctime = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn attrs_map_to_stat() {
        let mut a = Attrs::new(0o644, 7, 8);
        a.size = 1025;
        let f = file_attr(5, Kind::File, &a);
        assert_eq!(f.ino, INodeNo(5));
        assert_eq!(
            (f.blocks, f.perm, f.nlink, f.uid, f.gid),
            (3, 0o644, 1, 7, 8)
        );
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(file_attr(1, Kind::Dir, &a).nlink, 2);
        // The folder's top is the mounting user's, whoever stored it.
        let top = file_attr(ROOT_INO, Kind::Dir, &a);
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        assert_eq!((top.uid, top.gid), me);
        assert_eq!(file_attr(1, Kind::Symlink, &a).kind, FileType::Symlink);
    }

    #[test]
    fn changes_apply() {
        let mut a = Attrs::new(0o644, 0, 0);
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        AttrChange {
            mode: Some(0o100600),
            uid: Some(3),
            mtime: Some(TimeOrNow::SpecificTime(t)),
            ..Default::default()
        }
        .apply(&mut a);
        assert_eq!((a.mode, a.uid, a.gid), (0o600, 3, 0));
        assert_eq!(a.mtime.to_system(), t);
    }
}
