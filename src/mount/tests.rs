//! The async core over the in-memory store, without mounting.

use super::attr::AttrChange;
use super::core::{ATTR_TTL, Core};
use super::inodes::ROOT_INO;
use crate::fs::gated::{Gate, GatedStore};
use crate::fs::mem_store::MemStore;
use crate::fs::object::CHUNK_SIZE;
use crate::fs::{Durability, FsError, Identity, OpenFile, Vault};
use crate::id::Id;
use fuser::{FileType, RenameFlags, TimeOrNow};
use std::sync::Arc;

const SECRET: [u8; 32] = [7; 32];

fn core() -> Arc<Core<MemStore>> {
    Arc::new(Core::new(Vault::new(
        Arc::new(MemStore::default()),
        Identity::generate(),
    )))
}

/// Two "machines" of one user over one store.
fn two_cores() -> (Arc<Core<MemStore>>, Arc<Core<MemStore>>) {
    let store = Arc::new(MemStore::default());
    (
        Arc::new(Core::new(Vault::new(
            Arc::clone(&store),
            Identity::from_secret(SECRET),
        ))),
        Arc::new(Core::new(Vault::new(store, Identity::from_secret(SECRET)))),
    )
}

#[tokio::test]
async fn fsync_stores_durably_and_close_does_not() {
    let c = core();
    let store = Arc::clone(&c.vault.store);
    let big = pattern(2 * CHUNK_SIZE + 100, 3);
    let (_, fh) = c.create(ROOT_INO, b"f", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, &big).await.unwrap();
    c.flush(fh).await.unwrap();
    let closed = store.take_durabilities();
    assert!(closed.len() >= 3, "chunks and record: {closed:?}");
    assert!(closed.iter().all(|(_, d)| *d == Durability::Later));
    // The file's own puts (its blocks and record; not the parent's entry
    // copy, updated behind) are durable at once: no round of `Sync` after.
    let own = |puts: Vec<(Id, Durability)>| -> Vec<Durability> {
        let dir = c.vault.identity().record_key(&c.vault.root().name);
        puts.into_iter()
            .filter(|(k, _)| *k != dir)
            .map(|(_, d)| d)
            .collect()
    };
    c.write(fh, 10, b"small").await.unwrap();
    c.fsync(fh).await.unwrap();
    assert_eq!(own(store.take_durabilities()), vec![Durability::Now]);
    // More than the journal takes, less than a chunk (so nothing was
    // uploaded while writing).
    let mid = pattern(100 << 10, 9);
    c.write(fh, 5, &mid).await.unwrap();
    c.fsync(fh).await.unwrap();
    let synced = own(store.take_durabilities());
    assert!(synced.len() >= 2, "{synced:?}");
    assert!(synced.iter().all(|d| *d == Durability::Now), "{synced:?}");
    assert_eq!(c.read(fh, 5, 16).await.unwrap(), mid[..16]);
}

#[tokio::test]
async fn a_file_replaced_on_another_machine_opens_stale_then_anew() {
    let (a, b) = two_cores();
    put_shared(&a, ROOT_INO, b"f", b"old").await;
    let old = b.lookup(ROOT_INO, b"f").await.unwrap().ino.0;
    // `sed -i` on machine a: a new file renamed over the name.
    put(&a, ROOT_INO, b"f.tmp", b"new").await;
    a.rename(ROOT_INO, b"f.tmp", ROOT_INO, b"f", RenameFlags::empty())
        .await
        .unwrap();
    // b still maps the name to the replaced object: ESTALE, so the kernel
    // looks the name up again, and finds the new file.
    assert_eq!(errno(b.open(old, libc::O_RDONLY).await), libc::ESTALE);
    let new = b.lookup(ROOT_INO, b"f").await.unwrap().ino.0;
    assert_ne!(new, old);
    let fh = b.open(new, libc::O_RDONLY).await.unwrap();
    assert_eq!(b.read(fh, 0, 10).await.unwrap(), b"new");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.unwrap_err().errno()
}

/// Creates `name` in `parent` with `data`, closed.
async fn put(c: &Arc<Core<MemStore>>, parent: u64, name: &[u8], data: &[u8]) -> u64 {
    let (attr, fh) = c.create(parent, name, 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, data).await.unwrap();
    c.flush(fh).await.unwrap();
    c.release(fh).await.unwrap();
    attr.ino.0
}

/// [`put`], and its entry stored (`fsyncdir`), where other machines see
/// it (a close does not wait for a new file's entry).
async fn put_shared(c: &Arc<Core<MemStore>>, parent: u64, name: &[u8], data: &[u8]) -> u64 {
    let ino = put(c, parent, name, data).await;
    c.fsyncdir().await.unwrap();
    ino
}

async fn get(c: &Arc<Core<MemStore>>, ino: u64) -> Vec<u8> {
    let fh = c.open(ino, libc::O_RDONLY).await.unwrap();
    let size = c.getattr(ino).await.unwrap().size;
    let data = c.read(fh, 0, size as u32 + 10).await.unwrap();
    c.release(fh).await.unwrap();
    data
}

#[tokio::test]
async fn create_lookup_getattr() {
    let c = core();
    let (attr, fh) = c.create(ROOT_INO, b"f", 0o640, 5, 6).await.unwrap();
    assert_eq!(attr.kind, FileType::RegularFile);
    assert_eq!((attr.perm, attr.uid, attr.gid, attr.size), (0o640, 5, 6, 0));
    c.release(fh).await.unwrap();
    let found = c.lookup(ROOT_INO, b"f").await.unwrap();
    assert_eq!(found.ino, attr.ino);
    assert_eq!(c.getattr(attr.ino.0).await.unwrap().perm, 0o640);
    assert_eq!(errno(c.lookup(ROOT_INO, b"nope").await), libc::ENOENT);
    let root = c.getattr(ROOT_INO).await.unwrap();
    assert_eq!((root.kind, root.nlink), (FileType::Directory, 2));
    // Lookups are counted: the inode goes after as many forgets.
    c.forget(attr.ino.0, 2);
    assert_eq!(errno(c.getattr(attr.ino.0).await), libc::ENOENT);
    let again = c.lookup(ROOT_INO, b"f").await.unwrap();
    assert_eq!(again.ino, attr.ino, "same object, same number");
}

#[tokio::test]
async fn names_are_checked() {
    let c = core();
    let long = [b'n'; 256];
    assert_eq!(errno(c.lookup(ROOT_INO, &long).await), libc::ENAMETOOLONG);
    assert_eq!(
        errno(c.create(ROOT_INO, &long, 0o644, 0, 0).await),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(c.mkdir(ROOT_INO, &long, 0o755, 0, 0).await),
        libc::ENAMETOOLONG
    );
    c.mkdir(ROOT_INO, &[b'n'; 255], 0o755, 0, 0).await.unwrap();
    // Non-UTF-8 names are fine.
    let odd = [0xff, 0xfe, b'x'];
    let ino = put(&c, ROOT_INO, &odd, b"odd").await;
    assert_eq!(c.lookup(ROOT_INO, &odd).await.unwrap().ino.0, ino);
    assert_eq!(
        errno(c.mknod(ROOT_INO, b"tty", libc::S_IFCHR | 0o644, 0, 0).await),
        libc::ENOTSUP
    );
    let fifo = c
        .mknod(ROOT_INO, b"fifo", libc::S_IFIFO | 0o640, 0, 0)
        .await
        .unwrap();
    assert_eq!((fifo.kind, fifo.perm), (FileType::NamedPipe, 0o640));
    let reg = c
        .mknod(ROOT_INO, b"reg", libc::S_IFREG | 0o600, 0, 0)
        .await
        .unwrap();
    assert_eq!((reg.kind, reg.perm), (FileType::RegularFile, 0o600));
}

#[tokio::test]
async fn write_read_through_handles() {
    let c = core();
    let data = pattern(2 * CHUNK_SIZE + 77, 3);
    let ino = put(&c, ROOT_INO, b"big", &data).await;
    assert_eq!(c.getattr(ino).await.unwrap().size, data.len() as u64);
    assert_eq!(get(&c, ino).await, data);
    // Overwrite in the middle through a new handle.
    let fh = c.open(ino, libc::O_RDWR).await.unwrap();
    c.write(fh, CHUNK_SIZE as u64 - 2, b"XXXX").await.unwrap();
    assert_eq!(
        c.read(fh, CHUNK_SIZE as u64 - 3, 6).await.unwrap(),
        [
            &data[CHUNK_SIZE - 3..CHUNK_SIZE - 2],
            b"XXXX",
            &data[CHUNK_SIZE + 2..CHUNK_SIZE + 3]
        ]
        .concat()
    );
    c.release(fh).await.unwrap(); // release stores unsaved changes
    let (_, v) = c.vault.resolve("/big").await.unwrap();
    let mut f = OpenFile::from_state(c.vault.resolve("/big").await.unwrap().0, v);
    assert_eq!(
        f.read(&c.vault, CHUNK_SIZE as u64 - 2, 4).await.unwrap(),
        b"XXXX"
    );
    // O_TRUNC empties.
    let fh = c.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    assert_eq!(c.getattr(ino).await.unwrap().size, 0);
    c.release(fh).await.unwrap();
    assert!(get(&c, ino).await.is_empty());
}

#[tokio::test]
async fn handles_of_one_file_share_its_state() {
    let c = core();
    let ino = put(&c, ROOT_INO, b"f", b"").await;
    let w = c.open(ino, libc::O_WRONLY).await.unwrap();
    let r = c.open(ino, libc::O_RDONLY).await.unwrap();
    {
        let h = c.handles();
        let (_, a) = h.file(w).unwrap();
        let (_, b) = h.file(r).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
    c.write(w, 0, b"unsaved").await.unwrap();
    // Not flushed, yet visible to the other handle and in getattr.
    assert_eq!(c.read(r, 0, 100).await.unwrap(), b"unsaved");
    assert_eq!(c.getattr(ino).await.unwrap().size, 7);
    assert_eq!(c.lookup(ROOT_INO, b"f").await.unwrap().size, 7);
    c.release(w).await.unwrap();
    // One handle left: still open, state kept.
    assert!(c.handles().is_open(ino));
    c.release(r).await.unwrap();
    assert!(!c.handles().is_open(ino));
    assert_eq!(get(&c, ino).await, b"unsaved");
}

#[tokio::test]
async fn readdir_lists_dot_dotdot_and_sorted_entries_with_stable_offsets() {
    let c = core();
    let d = c.mkdir(ROOT_INO, b"d", 0o755, 0, 0).await.unwrap().ino.0;
    for n in [&b"c"[..], b"a", b"b"] {
        put(&c, d, n, b"x").await;
    }
    c.symlink(d, b"s", b"a", 0, 0).await.unwrap();
    c.mkdir(d, b"sub", 0o755, 0, 0).await.unwrap();
    let fh = c.opendir(d).unwrap();
    let all = c.readdir(d, fh, 0).await.unwrap();
    let names: Vec<&[u8]> = all.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, [&b"."[..], b"..", b"a", b"b", b"c", b"s", b"sub"]);
    assert_eq!((all[0].ino, all[1].ino), (d, ROOT_INO));
    assert_eq!(all[5].kind, FileType::Symlink);
    assert_eq!(all[6].kind, FileType::Directory);
    // The number readdir reports is the one lookup gives.
    assert_eq!(c.lookup(d, b"b").await.unwrap().ino.0, all[3].ino);
    // A change between calls does not shift later offsets of this handle.
    put(&c, d, b"0first", b"x").await;
    let rest = c.readdir(d, fh, 4).await.unwrap();
    assert_eq!(rest[4].name, b"c");
    c.releasedir(fh);
    let fh = c.opendir(d).unwrap();
    assert_eq!(c.readdir(d, fh, 0).await.unwrap()[2].name, b"0first");
    c.releasedir(fh);
    assert_eq!(errno(c.opendir(all[3].ino)), libc::ENOTDIR);
}

#[tokio::test]
async fn rename_moves_replaces_and_refuses() {
    let c = core();
    let a = c.mkdir(ROOT_INO, b"a", 0o755, 0, 0).await.unwrap().ino.0;
    let b = c.mkdir(a, b"b", 0o755, 0, 0).await.unwrap().ino.0;
    let x = c.mkdir(ROOT_INO, b"x", 0o755, 0, 0).await.unwrap().ino.0;
    let f = put(&c, a, b"f", b"one").await;
    put(&c, x, b"g", b"two").await;
    // Into its own subtree (and onto itself as a child).
    assert_eq!(
        errno(
            c.rename(ROOT_INO, b"a", b, b"a2", RenameFlags::empty())
                .await
        ),
        libc::EINVAL
    );
    assert_eq!(
        errno(
            c.rename(ROOT_INO, b"a", a, b"a2", RenameFlags::empty())
                .await
        ),
        libc::EINVAL
    );
    // NOREPLACE, EXCHANGE.
    assert_eq!(
        errno(
            c.rename(a, b"f", x, b"g", RenameFlags::RENAME_NOREPLACE)
                .await
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno(
            c.rename(a, b"f", x, b"g", RenameFlags::RENAME_EXCHANGE)
                .await
        ),
        libc::ENOTSUP
    );
    // Across directories, replacing the target; the inode moves along.
    c.rename(a, b"f", x, b"g", RenameFlags::empty())
        .await
        .unwrap();
    assert_eq!(errno(c.lookup(a, b"f").await), libc::ENOENT);
    assert_eq!(c.lookup(x, b"g").await.unwrap().ino.0, f);
    assert_eq!(get(&c, f).await, b"one");
    // A directory moves, and then may go under its old sibling.
    c.rename(ROOT_INO, b"x", b, b"x", RenameFlags::empty())
        .await
        .unwrap();
    assert_eq!(c.lookup(b, b"x").await.unwrap().ino.0, x);
    assert_eq!(
        errno(c.rename(a, b"b", x, b"bb", RenameFlags::empty()).await),
        libc::EINVAL
    );
    assert_eq!(
        errno(c.rename(a, b"nope", x, b"n", RenameFlags::empty()).await),
        libc::ENOENT
    );
    // Over a non-empty directory.
    assert_eq!(
        errno(
            c.rename(b, b"x", ROOT_INO, b"a", RenameFlags::empty())
                .await
        ),
        libc::ENOTEMPTY
    );
}

#[tokio::test]
async fn unlink_and_rmdir() {
    let c = core();
    let d = c.mkdir(ROOT_INO, b"d", 0o755, 0, 0).await.unwrap().ino.0;
    put(&c, d, b"f", b"x").await;
    assert_eq!(errno(c.rmdir(ROOT_INO, b"d").await), libc::ENOTEMPTY);
    assert_eq!(errno(c.unlink(ROOT_INO, b"d").await), libc::EISDIR);
    assert_eq!(errno(c.rmdir(d, b"f").await), libc::ENOTDIR);
    c.unlink(d, b"f").await.unwrap();
    assert_eq!(errno(c.lookup(d, b"f").await), libc::ENOENT);
    c.rmdir(ROOT_INO, b"d").await.unwrap();
    assert_eq!(errno(c.lookup(ROOT_INO, b"d").await), libc::ENOENT);
    assert_eq!(errno(c.unlink(ROOT_INO, b"d").await), libc::ENOENT);
}

#[tokio::test]
async fn unlinked_while_open_stays_readable() {
    let c = core();
    let (attr, fh) = c.create(ROOT_INO, b"tmp", 0o600, 0, 0).await.unwrap();
    c.write(fh, 0, b"scratch").await.unwrap();
    c.unlink(ROOT_INO, b"tmp").await.unwrap();
    c.write(fh, 7, b" more").await.unwrap();
    assert_eq!(c.read(fh, 0, 100).await.unwrap(), b"scratch more");
    assert_eq!(c.getattr(attr.ino.0).await.unwrap().size, 12);
    c.flush(fh).await.unwrap();
    c.release(fh).await.unwrap();
    assert_eq!(errno(c.vault.resolve("/tmp").await), libc::ENOENT);
}

#[tokio::test]
async fn symlink_and_readlink() {
    let c = core();
    let s = c
        .symlink(ROOT_INO, b"s", b"../some/where", 1, 2)
        .await
        .unwrap();
    assert_eq!((s.kind, s.size, s.perm), (FileType::Symlink, 13, 0o777));
    assert_eq!(c.readlink(s.ino.0).await.unwrap(), b"../some/where");
    let f = put(&c, ROOT_INO, b"f", b"x").await;
    assert_eq!(errno(c.readlink(f).await), libc::EINVAL);
    assert_eq!(errno(c.open(s.ino.0, libc::O_RDONLY).await), libc::EINVAL);
}

#[tokio::test]
async fn setattr_truncates_and_changes_attributes() {
    let c = core();
    let data = pattern(CHUNK_SIZE + 500, 9);
    let ino = put(&c, ROOT_INO, b"f", &data).await;
    // Not open: a temporary open file truncates and stores at once.
    let a = c
        .setattr(ino, Some(100), &AttrChange::default())
        .await
        .unwrap();
    assert_eq!(a.size, 100);
    assert_eq!(get(&c, ino).await, data[..100]);
    let (_, v) = c.vault.resolve("/f").await.unwrap();
    assert_eq!(v.obj.attrs.size, 100);
    // chmod, chown, utimens (now and a given time).
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567);
    let change = AttrChange {
        mode: Some(0o600),
        uid: Some(42),
        gid: Some(43),
        atime: Some(TimeOrNow::Now),
        mtime: Some(TimeOrNow::SpecificTime(t)),
    };
    let a = c.setattr(ino, None, &change).await.unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.mtime), (0o600, 42, 43, t));
    let (_, v) = c.vault.resolve("/f").await.unwrap();
    assert_eq!((v.obj.attrs.mode, v.obj.attrs.uid), (0o600, 42));
    // Open and clean: changes are stored at once too.
    let fh = c.open(ino, libc::O_RDWR).await.unwrap();
    let a = c
        .setattr(ino, Some(3), &AttrChange::default())
        .await
        .unwrap();
    assert_eq!(a.size, 3);
    assert_eq!(c.vault.resolve("/f").await.unwrap().1.obj.attrs.size, 3);
    // Open with unsaved writes: growing zero-fills; saved on close.
    c.write(fh, 3, b"abc").await.unwrap();
    c.setattr(ino, Some(10), &AttrChange::default())
        .await
        .unwrap();
    assert_eq!(c.getattr(ino).await.unwrap().size, 10);
    c.release(fh).await.unwrap();
    assert_eq!(get(&c, ino).await, [&data[..3], b"abc", &[0; 4]].concat());
    // Directories: chmod yes, truncate no; the root too.
    let d = c.mkdir(ROOT_INO, b"d", 0o755, 0, 0).await.unwrap().ino.0;
    assert_eq!(
        errno(c.setattr(d, Some(0), &AttrChange::default()).await),
        libc::EISDIR
    );
    let chmod = AttrChange {
        mode: Some(0o700),
        ..Default::default()
    };
    assert_eq!(c.setattr(d, None, &chmod).await.unwrap().perm, 0o700);
    assert_eq!(c.setattr(ROOT_INO, None, &chmod).await.unwrap().perm, 0o700);
    assert_eq!(c.getattr(ROOT_INO).await.unwrap().perm, 0o700);
}

#[tokio::test]
async fn open_sees_the_last_close_elsewhere() {
    let (a, b) = two_cores();
    let ino_a = put(&a, ROOT_INO, b"f", b"from a").await;
    // B sees the new entry once it is stored (within CREATE_DELAY of the
    // close, nobody waiting for it) and B's view of the directory is
    // reloaded: B's first lookup may cache the directory, empty, for up
    // to ATTR_TTL just before the entry lands.
    let deadline = std::time::Instant::now() + 2 * ATTR_TTL;
    let ino_b = loop {
        match b.lookup(ROOT_INO, b"f").await {
            Ok(e) => break e.ino.0,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e, FsError::NotFound);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("a new name not seen within 2 x {ATTR_TTL:?}: {e}"),
        }
    };
    assert_eq!(get(&b, ino_b).await, b"from a");
    // A rewrites; B's next open reloads the manifest at once.
    let fh = a.open(ino_a, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    a.write(fh, 0, b"second version").await.unwrap();
    a.flush(fh).await.unwrap();
    a.release(fh).await.unwrap();
    let fh = b.open(ino_b, libc::O_RDONLY).await.unwrap();
    assert_eq!(b.read(fh, 0, 100).await.unwrap(), b"second version");
    b.release(fh).await.unwrap();
    // A new entry by A reaches B's lookups within the TTL.
    put(&a, ROOT_INO, b"g", b"").await;
    tokio::time::sleep(ATTR_TTL + std::time::Duration::from_millis(50)).await;
    b.lookup(ROOT_INO, b"g").await.unwrap();
}

#[tokio::test]
async fn flush_all_stores_open_files() {
    let c = core();
    let (attr, fh) = c.create(ROOT_INO, b"f", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"pending").await.unwrap();
    assert!(c.has_unsaved());
    c.flush_all().await.unwrap();
    assert!(!c.has_unsaved());
    let (_, v) = c.vault.resolve("/f").await.unwrap();
    assert_eq!(v.obj.attrs.size, 7);
    c.release(fh).await.unwrap();
    let s = c.statfs().await.unwrap();
    assert_eq!(s.namelen, 255);
    // The one block written is this owner's, so `df` shows it used.
    assert!(s.blocks > 0 && s.bfree < s.blocks && s.bavail <= s.blocks);
    let _ = attr;
}

/// A mount over a store whose puts of one record can be held or failed
/// (`Gate`), and the store underneath, which another vault may share.
fn gated_core() -> (Arc<MemStore>, Arc<Core<GatedStore>>) {
    let mem = Arc::new(MemStore::default());
    let vault = Vault::new(
        Arc::new(GatedStore::new(Arc::clone(&mem))),
        Identity::from_secret(SECRET),
    );
    (mem, Arc::new(Core::new(vault)))
}

#[tokio::test]
async fn create_is_written_behind_and_fsync_and_fsyncdir_wait_for_it() {
    let (mem, c) = gated_core();
    let root_key = c.vault.identity().record_key(&c.vault.root().name);
    c.vault.store.gate(root_key, Gate::Hold);
    let (attr, fh) = c.create(ROOT_INO, b"f", 0o644, 0, 0).await.unwrap();
    // This mount sees the entry before it is stored.
    assert_eq!(c.lookup(ROOT_INO, b"f").await.unwrap().ino, attr.ino);
    let names: Vec<Vec<u8>> = c
        .readdir(ROOT_INO, c.opendir(ROOT_INO).unwrap(), 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(names.contains(&b"f".to_vec()));
    assert_eq!(
        errno(c.create(ROOT_INO, b"f", 0o644, 0, 0).await),
        libc::EEXIST
    );
    // Another machine does not, yet.
    let other = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    assert_eq!(other.resolve("/f").await.unwrap_err(), FsError::NotFound);
    c.write(fh, 0, b"content").await.unwrap();
    assert!(c.has_unsaved());
    // close (flush) stores the content and returns; fsync and fsyncdir
    // wait until the entry is stored.
    tokio::time::timeout(std::time::Duration::from_secs(5), c.flush(fh))
        .await
        .expect("close does not wait for the entry")
        .unwrap();
    let c2 = Arc::clone(&c);
    let fsync = tokio::spawn(async move { c2.fsync(fh).await });
    let c3 = Arc::clone(&c);
    let fsyncdir = tokio::spawn(async move { c3.fsyncdir().await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!fsync.is_finished() && !fsyncdir.is_finished());
    c.vault.store.set(Gate::Open);
    fsync.await.unwrap().unwrap();
    fsyncdir.await.unwrap().unwrap();
    c.release(fh).await.unwrap();
    let (l, st) = other.resolve("/f").await.unwrap();
    let mut f = OpenFile::from_state(l, st);
    assert_eq!(f.read(&other, 0, 100).await.unwrap(), b"content");
    // A failed entry update is an EIO at fsync...
    c.vault.store.set(Gate::Fail);
    let (_, fh) = c.create(ROOT_INO, b"g", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"x").await.unwrap();
    assert_eq!(errno(c.fsync(fh).await), libc::EIO);
    let _ = c.release(fh).await;
    assert!(!c.has_unsaved());
    // ...and, after a close that returned before it failed, at the next
    // fsyncdir (and unmount), once.
    let (_, fh) = c.create(ROOT_INO, b"h", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"y").await.unwrap();
    c.flush(fh).await.unwrap();
    c.release(fh).await.unwrap();
    // (The entry's update ends, failed, before the fsyncdir: what reports
    // it is the watcher the release left.)
    c.vault.settle_dir(&c.vault.root()).await;
    assert!(!c.has_unsaved());
    assert_eq!(errno(c.fsyncdir().await), libc::EIO);
    c.vault.store.set(Gate::Open);
    c.fsyncdir().await.unwrap();
}

#[tokio::test]
async fn a_small_new_files_close_leaves_its_store_to_its_release() {
    let (mem, c) = gated_core();
    let other = Vault::new(Arc::clone(&mem), Identity::from_secret(SECRET));
    let key_of = |ino: u64| {
        let link = c.inodes().link(ino).unwrap();
        c.vault.identity().record_key(&link.name)
    };
    let stored = |ino: u64| {
        let key = key_of(ino);
        let mem = Arc::clone(&mem);
        async move {
            use crate::fs::BlockStore;
            !mem.get_versions(key).await.unwrap().is_empty()
        }
    };
    // close returns with the file not stored; an open meanwhile meets the
    // same open file; the release stores it.
    let (attr, fh) = c.create(ROOT_INO, b"f", 0o644, 0, 0).await.unwrap();
    let f = attr.ino.0;
    c.write(fh, 0, b"content").await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(!stored(f).await, "close left the store to the release");
    let again = c.open(f, libc::O_RDONLY).await.unwrap();
    assert_eq!(c.read(again, 0, 100).await.unwrap(), b"content");
    c.release(fh).await.unwrap();
    c.release(again).await.unwrap();
    assert!(stored(f).await);
    c.fsyncdir().await.unwrap();
    let (l, st) = other.resolve("/f").await.unwrap();
    let mut of = OpenFile::from_state(l, st);
    assert_eq!(of.read(&other, 0, 100).await.unwrap(), b"content");
    // An open for writing stores it first: each close is a version.
    let (attr, fh) = c.create(ROOT_INO, b"w", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"one").await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(!stored(attr.ino.0).await);
    let rw = c
        .open(attr.ino.0, libc::O_WRONLY | libc::O_TRUNC)
        .await
        .unwrap();
    assert!(stored(attr.ino.0).await, "stored before the rewrite");
    c.release(fh).await.unwrap();
    c.release(rw).await.unwrap();
    // A rename (as an editor's save) or a link of such a file stores it
    // first: its new name never shows it empty.
    let (attr, fh) = c.create(ROOT_INO, b"tmp", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"saved").await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(!stored(attr.ino.0).await);
    c.rename(ROOT_INO, b"tmp", ROOT_INO, b"f", RenameFlags::empty())
        .await
        .unwrap();
    assert!(stored(attr.ino.0).await, "stored before the rename");
    c.release(fh).await.unwrap();
    // A big file's close stores it.
    let (attr, fh) = c.create(ROOT_INO, b"big", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, &pattern(100 << 10, 1)).await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(stored(attr.ino.0).await);
    c.release(fh).await.unwrap();
    // At most BEHIND_MAX wait: the next close stores its file itself.
    let mut open = Vec::new();
    for i in 0..=super::handles::BEHIND_MAX {
        let name = format!("n{i}");
        let (attr, fh) = c
            .create(ROOT_INO, name.as_bytes(), 0o644, 0, 0)
            .await
            .unwrap();
        c.write(fh, 0, b"x").await.unwrap();
        c.flush(fh).await.unwrap();
        open.push((attr.ino.0, fh));
    }
    let (last, _) = open[super::handles::BEHIND_MAX];
    assert!(!stored(open[0].0).await && stored(last).await);
    // fsyncdir stores those waiting, before their releases.
    c.fsyncdir().await.unwrap();
    assert!(stored(open[0].0).await);
    for (_, fh) in open {
        c.release(fh).await.unwrap();
    }
    // A release that fails to store it is reported by the next fsyncdir,
    // once; until then each close stores its own file and reports.
    let (attr, fh) = c.create(ROOT_INO, b"g", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"lost").await.unwrap();
    c.flush(fh).await.unwrap();
    c.vault.store.gate(key_of(attr.ino.0), Gate::Fail);
    assert_eq!(errno(c.release(fh).await), libc::EIO);
    let (attr, fh) = c.create(ROOT_INO, b"h", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"kept").await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(stored(attr.ino.0).await, "stored by its close");
    c.release(fh).await.unwrap();
    assert_eq!(errno(c.fsyncdir().await), libc::EIO);
    c.fsyncdir().await.unwrap();
    let (attr, fh) = c.create(ROOT_INO, b"i", 0o644, 0, 0).await.unwrap();
    c.write(fh, 0, b"behind again").await.unwrap();
    c.flush(fh).await.unwrap();
    assert!(!stored(attr.ino.0).await);
    c.release(fh).await.unwrap();
    assert!(stored(attr.ino.0).await);
}

#[tokio::test]
async fn answers_on_the_fuse_thread_come_from_memory_or_defer() {
    let c = core();
    let (attr, fh) = c.create(ROOT_INO, b"f", 0o644, 0, 0).await.unwrap();
    let f = attr.ino.0;
    // A write that only adds to the buffer is taken at once...
    assert_eq!(c.write_now(fh, 0, b"hello").unwrap().unwrap(), 5);
    assert_eq!(c.getattr_cached(f).unwrap().size, 5);
    assert_eq!(c.read(fh, 0, 10).await.unwrap(), b"hello");
    // ...not one that fills a block (it uploads), nor while the file is
    // busy (locked by another call).
    assert!(c.write_now(fh, 5, &vec![1u8; CHUNK_SIZE]).is_none());
    let (_, file) = c.file_of(fh).unwrap();
    let busy = file.lock().await;
    assert!(c.write_now(fh, 5, b"x").is_none());
    assert!(!c.close_behind(fh), "busy: the async flush decides");
    drop(busy);
    // The name is in the cached view: found, or absent, without a load.
    assert_eq!(c.lookup_cached(ROOT_INO, b"f").unwrap().unwrap().ino.0, f);
    assert_eq!(
        c.lookup_cached(ROOT_INO, b"nope").unwrap().unwrap_err(),
        FsError::NotFound
    );
    assert!(c.lookup_cached(ROOT_INO, &[b'n'; 300]).unwrap().is_err());
    // A small new file's close is left to its release.
    assert!(c.close_behind(fh));
    c.release(fh).await.unwrap();
    let (_, v) = c.vault.resolve("/f").await.unwrap();
    assert_eq!(v.obj.attrs.size, 5);
    // Nothing cached: the async path answers.
    c.inodes().invalidate(f);
    assert!(c.getattr_cached(f).is_none());
    assert_eq!(c.getattr(f).await.unwrap().size, 5);
    assert!(c.getattr_cached(f).is_some(), "cached by the load");
    // An unlink in a directory held in memory runs from memory.
    assert!(c.removes_in_memory(ROOT_INO));
    c.inodes().invalidate(ROOT_INO);
    assert!(c.lookup_cached(ROOT_INO, b"f").is_none());
    assert!(!c.removes_in_memory(ROOT_INO));
}

/// A machine of the user whose vault is kept in `store`.
fn machine(store: &Arc<MemStore>) -> Arc<Core<MemStore>> {
    Arc::new(Core::new(Vault::new(
        Arc::clone(store),
        Identity::from_secret(SECRET),
    )))
}

/// Stores `files` (name, bytes) in `c`'s root with their entries'
/// attribute copies up to date, stored: what the background update of
/// the copies leaves, here at once (`fsyncdir` waits for queued changes).
async fn put_listed(c: &Arc<Core<MemStore>>, files: &[(&[u8], Vec<u8>)]) {
    let root = c.vault.root();
    for (name, data) in files {
        put(c, ROOT_INO, name, data).await;
        let path = format!("/{}", String::from_utf8_lossy(name));
        let (link, v) = c.vault.resolve(&path).await.unwrap();
        c.vault
            .note_entry_attrs(&root, name, &link, v.obj.attrs.clone(), Durability::Later)
            .await
            .unwrap();
    }
    c.fsyncdir().await.unwrap();
}

/// Another machine saves `data` as file `path` and crashes before its
/// entry's attribute copy is updated (the vault alone does not).
async fn save_unlisted(store: &Arc<MemStore>, path: &str, data: &[u8]) {
    let b = Vault::new(Arc::clone(store), Identity::from_secret(SECRET));
    let (link, _) = b.resolve(path).await.unwrap();
    let mut f = OpenFile::open(&b, link).await.unwrap();
    f.write(&b, 0, data).await.unwrap();
    f.flush(&b, Durability::Later).await.unwrap();
}

#[tokio::test]
async fn open_drops_the_kernels_listed_size_when_the_object_differs() {
    let store = Arc::new(MemStore::default());
    let a = machine(&store);
    put_listed(
        &a,
        &[(b"stale", pattern(100, 1)), (b"fresh", pattern(100, 2))],
    )
    .await;
    let (_, listed_root) = Vault::new(Arc::clone(&store), Identity::from_secret(SECRET))
        .resolve("/")
        .await
        .unwrap();
    let entries = listed_root.obj.entries().unwrap();
    for name in [b"stale".as_slice(), b"fresh"] {
        let size = entries
            .get(name)
            .and_then(|e| e.attrs.as_ref())
            .map(|a| a.size);
        assert_eq!(size, Some(100), "the entry's copy of {name:?}");
    }
    save_unlisted(&store, "/stale", &pattern(5000, 3)).await;
    // A third machine lists the root (sizes from the entries' copies)...
    let c = machine(&store);
    let dropped = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = Arc::clone(&dropped);
    c.set_invalidator(Box::new(move |ino, _| d.lock().unwrap().push(ino)));
    let rows = c
        .readdir(ROOT_INO, c.opendir(ROOT_INO).unwrap(), 0)
        .await
        .unwrap();
    let attrs = c.plus_attrs(ROOT_INO, &rows).await.unwrap();
    let ino_of = |name: &[u8]| {
        let i = rows.iter().position(|r| r.name == name).unwrap();
        c.remember_row(ROOT_INO, &rows[i]);
        (rows[i].ino, attrs[i].0.size)
    };
    let (stale, listed) = ino_of(b"stale");
    let (fresh, _) = ino_of(b"fresh");
    assert_eq!(listed, 100, "the listing answered from the entry's copy");
    // ...then opens both: only the stale one's attributes are dropped, and
    // the whole file reads.
    for ino in [fresh, stale] {
        let fh = c.open(ino, libc::O_RDONLY).await.unwrap();
        c.release(fh).await.unwrap();
    }
    assert_eq!(*dropped.lock().unwrap(), vec![stale]);
    assert_eq!(get(&c, stale).await, pattern(5000, 3));
    // Once checked, a later open does not drop them again.
    let fh = c.open(stale, libc::O_RDONLY).await.unwrap();
    c.release(fh).await.unwrap();
    assert_eq!(dropped.lock().unwrap().len(), 1);
}

/// rsync's sequence: write a temporary file, close it, set its times
/// (while the handle is still open or after), rename it into place. The
/// entry's attribute copy under the final name (what listings show on any
/// machine) carries the times set last, not the time of the write.
#[tokio::test]
async fn times_set_before_a_rename_reach_the_listed_copy() {
    let (c, other) = two_cores();
    let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_086_400, 123_456_789);
    for (tmp, name, while_open) in [
        (b".a.tmp".as_slice(), b"a".as_slice(), true),
        (b".b.tmp", b"b", false),
    ] {
        let (attr, fh) = c.create(ROOT_INO, tmp, 0o600, 0, 0).await.unwrap();
        c.write(fh, 0, b"x").await.unwrap();
        c.flush(fh).await.unwrap();
        if !while_open {
            c.release(fh).await.unwrap();
        }
        let change = AttrChange {
            mtime: Some(TimeOrNow::SpecificTime(old)),
            ..Default::default()
        };
        c.setattr(attr.ino.0, None, &change).await.unwrap();
        if while_open {
            c.release(fh).await.unwrap();
        }
        c.rename(ROOT_INO, tmp, ROOT_INO, name, RenameFlags::empty())
            .await
            .unwrap();
    }
    c.fsyncdir().await.unwrap();
    let rows = other
        .readdir(ROOT_INO, other.opendir(ROOT_INO).unwrap(), 0)
        .await
        .unwrap();
    for name in [b"a".as_slice(), b"b"] {
        let row = rows.iter().find(|r| r.name == name).unwrap();
        let copy = row.hint.as_ref().expect("an attribute copy");
        assert_eq!(
            (copy.mtime.to_system(), copy.size),
            (old, 1),
            "the listed copy of {name:?}"
        );
    }
}

/// After `ln f g` and a write through `g`, a listing on another machine
/// shows both names with the new size and two links: the first name's
/// attribute copy (written before the link) is not trusted any more.
#[tokio::test]
async fn a_hard_link_and_a_write_through_it_list_right_under_both_names() {
    let (c, other) = two_cores();
    let f = put(&c, ROOT_INO, b"f", b"one").await;
    c.link(f, ROOT_INO, b"g").await.unwrap();
    let (_, g) = c
        .lookup(ROOT_INO, b"g")
        .await
        .map(|a| (a, a.ino.0))
        .unwrap();
    let fh = c.open(g, libc::O_WRONLY).await.unwrap();
    c.write(fh, 3, b" and two").await.unwrap();
    c.release(fh).await.unwrap();
    c.fsyncdir().await.unwrap();
    let rows = other
        .readdir(ROOT_INO, other.opendir(ROOT_INO).unwrap(), 0)
        .await
        .unwrap();
    let attrs = other.plus_attrs(ROOT_INO, &rows).await.unwrap();
    for name in [b"f".as_slice(), b"g"] {
        let i = rows.iter().position(|r| r.name == name).unwrap();
        assert_eq!(
            (attrs[i].0.size, attrs[i].0.nlink),
            (11, 2),
            "the listing of {name:?}"
        );
    }
}

/// Two machines append to one file, each from the version it opened:
/// both closes return 0, the second close's content is a conflict copy
/// that the other machine finds by name, and the file itself reads as
/// the first close left it on both machines.
#[tokio::test]
async fn colliding_appends_from_two_machines_keep_both_lines() {
    let (a, b) = two_cores();
    b.vault.conflicts.set_machine("b");
    let ino_a = put_shared(&a, ROOT_INO, b"log.txt", b"start\n").await;
    let ino_b = b.lookup(ROOT_INO, b"log.txt").await.unwrap().ino.0;
    let fa = a
        .open(ino_a, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    let fb = b
        .open(ino_b, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    a.write(fa, 6, b"from a\n").await.unwrap();
    b.write(fb, 6, b"from b\n").await.unwrap();
    a.flush(fa).await.unwrap();
    a.release(fa).await.unwrap();
    b.flush(fb).await.unwrap();
    b.release(fb).await.unwrap();
    b.fsyncdir().await.unwrap();
    assert_eq!(get(&a, ino_a).await, b"start\nfrom a\n");
    assert_eq!(get(&b, ino_b).await, b"start\nfrom a\n");
    let copies = b.vault.conflict_copies().await;
    assert_eq!(copies.len(), 1);
    let (noted, present) = &copies[0];
    assert!(present);
    assert_eq!(noted.path, "/log.txt");
    assert!(noted.copy.starts_with("/log.conflict-b-") && noted.copy.ends_with(".txt"));
    let copy = &noted.copy.as_bytes()[1..];
    // (a's cached listing of the root is at most ATTR_TTL old: b's, and
    // a third machine's, are fresh.)
    let c = Arc::new(Core::new(Vault::new(
        Arc::clone(&a.vault.store),
        Identity::from_secret(SECRET),
    )));
    for m in [&b, &c] {
        let found = m.lookup(ROOT_INO, copy).await.unwrap();
        assert_eq!(found.size, 13, "the listing shows the copy's size");
        assert_eq!(get(m, found.ino.0).await, b"start\nfrom b\n");
    }
    // Once the user deletes the copy, the conflict is no longer open.
    c.unlink(ROOT_INO, copy).await.unwrap();
    c.vault.settle_all().await.unwrap();
    assert!(!b.vault.conflict_copies().await[0].1);
}

/// An append lands at the end of the version `open` loaded, not at the
/// kernel's cached idea of the end (older, after another machine's
/// append): nothing of the other machine's is overwritten.
#[tokio::test]
async fn an_append_goes_to_the_end_the_open_loaded() {
    let (a, b) = two_cores();
    let ino_a = put_shared(&a, ROOT_INO, b"log", b"one\n").await;
    let ino_b = b.lookup(ROOT_INO, b"log").await.unwrap().ino.0;
    let append = libc::O_WRONLY | libc::O_APPEND;
    let fa = a.open(ino_a, append).await.unwrap();
    assert_eq!(a.append(fa, 4, b"two\n").await.unwrap(), (4, false));
    a.release(fa).await.unwrap();
    // b's kernel still has 4 bytes as the size.
    let fb = b.open(ino_b, append).await.unwrap();
    assert_eq!(b.append(fb, 4, b"three\n").await.unwrap(), (6, true));
    b.release(fb).await.unwrap();
    assert_eq!(get(&a, ino_a).await, b"one\ntwo\nthree\n");
}

/// A lookup of a name whose object is not cached answers from the entry's
/// attribute copy, as a listing does, without loading the object (an
/// `rm -rf` or `git status` of a large tree looks up every name again
/// once the kernel's entries expire); a directory is still loaded, and a
/// copy left stale is caught at `open`.
#[tokio::test]
async fn a_lookup_answers_from_the_entrys_copy_without_a_load() {
    let store = Arc::new(MemStore::default());
    let a = machine(&store);
    a.mkdir(ROOT_INO, b"d", 0o755, 0, 0).await.unwrap();
    put_listed(&a, &[(b"f", pattern(100, 1)), (b"g", pattern(200, 2))]).await;
    save_unlisted(&store, "/f", &pattern(5000, 3)).await;

    let c = machine(&store);
    let dropped = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = Arc::clone(&dropped);
    c.set_invalidator(Box::new(move |ino, _| d.lock().unwrap().push(ino)));
    let puts = store.puts.load(std::sync::atomic::Ordering::Relaxed);
    // The async path (the root is not cached yet) and the FUSE thread's
    // (it is now) both answer from the copies: no object is cached after.
    let f_attr = c.lookup(ROOT_INO, b"f").await.unwrap();
    assert_eq!(f_attr.size, 100, "the entry's copy");
    let g_attr = c.lookup_cached(ROOT_INO, b"g").unwrap().unwrap();
    assert_eq!(g_attr.size, 200);
    let (fi, gi) = (f_attr.ino.0, g_attr.ino.0);
    assert!(c.getattr_cached(fi).is_none() && c.getattr_cached(gi).is_none());
    // A directory's copy is not trusted (its link count and times follow
    // its entries): looked up, it is loaded.
    let di = c.lookup(ROOT_INO, b"d").await.unwrap().ino.0;
    assert!(c.getattr_cached(di).is_some());
    assert_eq!(
        store.puts.load(std::sync::atomic::Ordering::Relaxed),
        puts,
        "lookups store nothing"
    );
    // Opening checks the copy the kernel was given: "f"'s was stale.
    for ino in [gi, fi] {
        let fh = c.open(ino, libc::O_RDONLY).await.unwrap();
        c.release(fh).await.unwrap();
    }
    assert_eq!(*dropped.lock().unwrap(), vec![fi]);
    assert_eq!(get(&c, fi).await, pattern(5000, 3));
    assert_eq!(get(&c, gi).await, pattern(200, 2));
}
