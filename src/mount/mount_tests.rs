//! A real FUSE mount of an in-memory vault, driven with `std::fs`.
//!
//! Needs /dev/fuse and the right to mount (root here); skipped with a
//! notice otherwise. Every step runs in a helper thread joined with a
//! timeout, and a guard unmounts (lazily as a fallback) whatever happens.

use super::session::{Mount, is_fuse_mounted, mount};
use crate::fs::mem_store::MemStore;
use crate::fs::{Identity, OpenFile, Vault};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest any test step may take.
const STEP_LIMIT: Duration = Duration::from_secs(120);

fn can_mount() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("notice: /dev/fuse missing; skipping the FUSE mount test");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && which("fusermount3").is_none() {
        eprintln!("notice: not root and no fusermount3; skipping the FUSE mount test");
        return false;
    }
    true
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// Unmounts on drop, even after a failed assertion.
struct Guard {
    mount: Option<Mount>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take()
            && let Err(e) = m.unmount()
        {
            eprintln!("guard: unmount failed: {e}");
        }
        if is_fuse_mounted(&self.dir) {
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&self.dir)
                .status();
        }
    }
}

/// Runs `f` in a thread; fails if it panics or outlasts `STEP_LIMIT`.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(STEP_LIMIT) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: timed out after {STEP_LIMIT:?}"),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The std::fs session against mount point `m`.
fn exercise(m: &Path) {
    // A 5 MB file with a pattern, written in one go and read back.
    let big = pattern(5_000_000);
    fs::write(m.join("big"), &big).unwrap();
    assert_eq!(fs::metadata(m.join("big")).unwrap().len(), big.len() as u64);
    assert!(fs::read(m.join("big")).unwrap() == big, "5 MB read back");

    // mkdir -p and a rename across directories.
    fs::create_dir_all(m.join("a/b/c")).unwrap();
    fs::rename(m.join("big"), m.join("a/b/c/big")).unwrap();
    assert!(!m.join("big").exists());
    assert!(fs::read(m.join("a/b/c/big")).unwrap() == big);

    // Append.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.join("a/b/c/big"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let mut f = fs::File::open(m.join("a/b/c/big")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), big.len() as u64 + 4);
    f.seek(SeekFrom::End(-4)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"tail");
    drop(f);

    // Truncate (shrink by handle, grow by path).
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.join("a/b/c/big"))
        .unwrap();
    f.set_len(1_500_000).unwrap();
    drop(f);
    let got = fs::read(m.join("a/b/c/big")).unwrap();
    assert!(got == big[..1_500_000], "truncated content");
    let c = CString::new(m.join("a/b/c/big").as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 1_500_010) }, 0);
    let got = fs::read(m.join("a/b/c/big")).unwrap();
    assert_eq!(got.len(), 1_500_010);
    assert_eq!(&got[1_500_000..], &[0u8; 10]);

    // Overwrite in place with a second handle reading before close.
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(m.join("a/b/c/big"))
        .unwrap();
    w.seek(SeekFrom::Start(10)).unwrap();
    w.write_all(b"HELLO").unwrap();
    w.sync_all().unwrap();
    let mut r = fs::File::open(m.join("a/b/c/big")).unwrap();
    let mut head = [0u8; 20];
    r.read_exact(&mut head).unwrap();
    assert_eq!(&head[10..15], b"HELLO");
    drop((w, r));

    // Symlink and readlink; reading through the link.
    std::os::unix::fs::symlink("b/c/big", m.join("a/link")).unwrap();
    assert_eq!(
        fs::read_link(m.join("a/link")).unwrap(),
        PathBuf::from("b/c/big")
    );
    assert!(
        fs::symlink_metadata(m.join("a/link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::metadata(m.join("a/link")).unwrap().len(), 1_500_010);

    // Listing.
    fs::write(m.join("a/b/c/small"), b"s").unwrap();
    let mut names: Vec<String> = fs::read_dir(m.join("a/b/c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "small"]);
    let mut names: Vec<String> = fs::read_dir(m.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "link"]);

    // chmod.
    fs::set_permissions(m.join("a/b/c/small"), fs::Permissions::from_mode(0o600)).unwrap();
    let mode = fs::metadata(m.join("a/b/c/small"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);

    // Errors.
    let long = "n".repeat(256);
    let e = fs::write(m.join(&long), b"x").unwrap_err();
    assert_eq!(errno_of(&e), libc::ENAMETOOLONG);
    fs::write(m.join("n".repeat(255)), b"x").unwrap();
    let e = fs::remove_dir(m.join("a/b")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOTEMPTY);
    let e = fs::rename(m.join("a/b"), m.join("a/b/c/inside")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    fs::hard_link(m.join("a/b/c/small"), m.join("hard")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&fs::metadata(m.join("hard")).unwrap()),
        2
    );
    let e = fs::hard_link(m.join("a/b"), m.join("dir-link")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EPERM);
    let path = CString::new(m.join("a/b/c/small").as_os_str().as_bytes()).unwrap();
    let name = CString::new("user.test").unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        // SAFETY: valid C strings and a buffer of the stated length.
        let r = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTSUP)
        );
    }
    // SAFETY: as above.
    let r = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTSUP)
    );

    // Remove.
    fs::remove_file(m.join("a/b/c/small")).unwrap();
    assert!(!m.join("a/b/c/small").exists());

    let st = CString::new(m.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-parameter.
    assert_eq!(unsafe { libc::statvfs(st.as_ptr(), &mut vfs) }, 0);
    assert_eq!(vfs.f_namemax, 255);
    assert!(vfs.f_blocks > 0 && vfs.f_bavail > 0);
}

#[test]
fn std_fs_through_a_real_mount() {
    if !can_mount() {
        return;
    }
    let rt = runtime();
    let vault = Vault::new(Arc::new(MemStore::default()), Identity::generate());
    let dir = tempfile::tempdir().unwrap();
    let m = mount(
        Arc::clone(&vault),
        rt.handle().clone(),
        dir.path(),
        Default::default(),
    )
    .unwrap();
    let mut guard = Guard {
        mount: Some(m),
        dir: dir.path().to_path_buf(),
    };
    assert!(is_fuse_mounted(dir.path()));
    let path = dir.path().to_path_buf();
    bounded("std::fs session", move || exercise(&path));
    // Unmount; what was written is in the store.
    let m = guard.mount.take().unwrap();
    bounded("unmount", move || m.unmount()).unwrap();
    assert!(!is_fuse_mounted(dir.path()));
    let v = Arc::clone(&vault);
    let (size, head) = rt.block_on(async move {
        let (link, state) = v.resolve("/a/b/c/big").await.unwrap();
        let mut f = OpenFile::from_state(link, state);
        (f.size(), f.read(&v, 0, 20).await.unwrap())
    });
    assert_eq!(size, 1_500_010);
    assert_eq!(&head[10..15], b"HELLO");
    assert_eq!(&head[..10], &pattern(10)[..]);
}

#[test]
fn an_unmount_from_outside_is_noticed() {
    if !can_mount() || which("fusermount3").is_none() {
        eprintln!("notice: skipping the external unmount test");
        return;
    }
    let rt = runtime();
    let vault = Vault::new(Arc::new(MemStore::default()), Identity::generate());
    let dir = tempfile::tempdir().unwrap();
    let m = mount(vault, rt.handle().clone(), dir.path(), Default::default()).unwrap();
    let guard = Guard {
        mount: Some(m),
        dir: dir.path().to_path_buf(),
    };
    let path = dir.path().to_path_buf();
    bounded("write", move || fs::write(path.join("f"), b"x").unwrap());
    let ended = guard.mount.as_ref().unwrap().unmounted();
    assert!(guard.mount.as_ref().unwrap().is_mounted());
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), ended)
            .await
            .expect("the session end is noticed");
    });
    assert!(!guard.mount.as_ref().unwrap().is_mounted());
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(guard); // unmounting again is harmless
    assert!(!is_fuse_mounted(dir.path()));
}

/// Set to a directory: `dies_while_mounted` mounts there and kills itself.
const HELPER_ENV: &str = "PEERSTORE_TEST_DIE_MOUNTED_AT";

/// Helper run as a child process by `a_dead_mount_is_cleared`.
#[test]
#[ignore = "helper: run by a_dead_mount_is_cleared in a child process"]
fn dies_while_mounted() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let rt = runtime();
    let vault = Vault::new(Arc::new(MemStore::default()), Identity::generate());
    let m = mount(
        vault,
        rt.handle().clone(),
        Path::new(&dir),
        Default::default(),
    )
    .unwrap();
    fs::write(Path::new(&dir).join("f"), b"x").unwrap();
    std::mem::forget(m);
    // SAFETY: kill has no memory preconditions; the process ends here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[test]
fn a_dead_mount_is_cleared() {
    if !can_mount() || which("fusermount3").is_none() {
        eprintln!("notice: skipping the stale mount test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "mount::mount_tests::dies_while_mounted",
            "--ignored",
        ])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = dir.path().to_path_buf();
    let status = bounded("helper", move || child.wait().unwrap());
    assert!(!status.success(), "the helper kills itself");
    // Left behind: listed, and "Transport endpoint is not connected".
    assert!(is_fuse_mounted(&path));
    let e = fs::metadata(&path).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    assert!(super::clear_stale_mount(&path).unwrap());
    assert!(!is_fuse_mounted(&path));
    assert!(fs::metadata(&path).unwrap().is_dir());
    assert!(!super::clear_stale_mount(&path).unwrap());
}
