//! The FUSE folder: a vault ([`crate::fs::Vault`]) as a `fuser::Filesystem`.
//!
//! Layout (after ouisync's `vfs/src/fuse`):
//! - [`fuse`]: [`PeerFs`], the thin adapter. Each callback moves its reply
//!   into a task on the tokio runtime; [`errno`] maps errors, in one place.
//! - [`core`]: [`Core`], every operation as an `async fn` over inode and
//!   handle numbers, tested without mounting; `dirops` and `io` hold its
//!   namespace and file I/O halves.
//! - [`inodes`]: the inode table (numbers ↔ objects, lookup counts, parent
//!   chain, a ≤ 1 s metadata cache).
//! - [`handles`]: open files (one shared [`crate::fs::OpenFile`] per inode)
//!   and open directories.
//! - [`attr`]: object attributes → `stat`.
//! - [`session`]: [`mount`], [`Mount`] (unmount, learn that the kernel
//!   ended the session) and [`clear_stale_mount`].
//!
//! Consistency is close-to-open: `close` (FUSE `flush`) and `fsync` return
//! only once chunks and manifest are stored on the ring; `open` reloads the
//! manifest; attributes and entries may be up to [`ATTR_TTL`] old.

pub mod attr;
pub mod core;
mod dirops;
pub mod fuse;
pub mod handles;
pub mod inodes;
mod io;
pub mod session;
pub mod shared;

pub use self::core::{ATTR_TTL, Core, StatFs};
pub use attr::AttrChange;
pub use fuse::{PeerFs, errno};
pub use session::{Mount, MountOpts, clear_stale_mount, is_fuse_mounted, mount};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mount_tests;
