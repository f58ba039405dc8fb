//! A tree written by the release before the v2 file format still mounts,
//! reads byte-exact, and takes writes (each object written is converted to
//! v2) — tested on a real node process over the data directory that
//! release wrote (`tests/fixtures/tree-v1.tar.gz`, see its README).

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, tool, write_closed};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BLOCK: u8 = 120;
const IO: Duration = Duration::from_secs(60);

/// The fixture unpacked into a fresh directory: `data/`, `identity`,
/// `sums.txt`.
fn unpack() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("peerstore-v1-")
        .tempdir()
        .expect("temp dir");
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tree-v1.tar.gz");
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(st.success(), "unpacking {}", tar.display());
    // Key files must not be readable by others (the node refuses them).
    for f in ["identity", "data/node.key", "data/network.secret"] {
        fs::set_permissions(dir.path().join(f), fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// `sha256sum` lines of the fixture: path → hash.
fn expected_sums(dir: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(dir.join("sums.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.trim_start_matches("./").to_string(), h.to_string()))
        .collect()
}

/// SHA-256 of every file under `mnt`, by path.
async fn sums(mnt: &Path) -> BTreeMap<String, String> {
    let out = tool(
        Command::new("sh")
            .arg("-c")
            .arg("find . -type f -exec sha256sum {} + | sort -k2")
            .current_dir(mnt),
        IO,
    )
    .await;
    assert!(out.status.success(), "sha256sum over the mount failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.trim_start_matches("./").to_string(), h.to_string()))
        .collect()
}

async fn start(fixture: &Path) -> NodeGuard {
    NodeGuard::start(NodeOpts {
        replicas: 1,
        own_network: true,
        data_from: Some(fixture.join("data")),
        ..NodeOpts::mounted(&addr(BLOCK, 1), None, &fixture.join("identity"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_tree_mounts_reads_and_takes_writes() {
    let fixture = unpack();
    let want = expected_sums(fixture.path());
    assert!(want.len() >= 20, "fixture lists {} files", want.len());
    let mut node = start(fixture.path()).await;
    let mnt = node.mount_dir().to_path_buf();

    // Everything reads back as the old release wrote it.
    assert_eq!(sums(&mnt).await, want);
    let m = mnt.clone();
    let (meta, target) = blocking("stat", IO, move || {
        (
            fs::metadata(m.join("hello.txt")).unwrap(),
            fs::read_link(m.join("link-to-note")).unwrap(),
        )
    })
    .await;
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 1_600_000_000);
    assert_eq!(target, Path::new("docs/deep/er/note.md"));

    // Writes into old objects: a 4 KiB write inside the two-chunk file, an
    // append to the sparse file, a new file in an old directory.
    let m = mnt.clone();
    let (multi, sparse) = blocking("write", IO, move || {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.join("multi.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(1_000_000)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        common::close(f).unwrap();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("sparse.bin"))
            .unwrap();
        f.write_all(b" and more").unwrap();
        common::close(f).unwrap();
        write_closed(&m.join("docs/new.txt"), b"written by v2").unwrap();
        let mut multi = fs::read(m.join("multi.bin")).unwrap();
        let sparse = fs::read(m.join("sparse.bin")).unwrap();
        multi[1_000_000..1_004_096].fill(0); // compared below
        (multi, sparse)
    })
    .await;
    let orig: Vec<u8> = (0..1044480 + 5000)
        .map(|i: usize| ((i * 7 + 3) % 251) as u8)
        .collect();
    let mut expect = orig.clone();
    expect[1_000_000..1_004_096].fill(0);
    assert_eq!(multi, expect, "multi.bin after a 4 KiB write");
    assert_eq!(sparse.len(), 3 * 1044480 + 9);
    let tail = 2 * 1044480;
    assert!(sparse[..tail].iter().all(|b| *b == 0));
    assert_eq!(&sparse[tail..tail + 21], b"tail of a sparse file");
    assert!(sparse[tail + 21..3 * 1044480].iter().all(|b| *b == 0));
    assert!(sparse.ends_with(b" and more"));

    // After a restart on the same data, old and new objects read back.
    node.terminate().await;
    let node = node.restart(None).await;
    let m = node.mount_dir().to_path_buf();
    let after = sums(&m).await;
    assert_eq!(
        after.get("docs/deep/er/note.md"),
        want.get("docs/deep/er/note.md")
    );
    assert_eq!(after.get("docs/f07.txt"), want.get("docs/f07.txt"));
    let (new, multi2) = blocking("read", IO, move || {
        (
            fs::read(m.join("docs/new.txt")).unwrap(),
            fs::read(m.join("multi.bin")).unwrap(),
        )
    })
    .await;
    assert_eq!(new, b"written by v2");
    assert_eq!(&multi2[1_000_000..1_004_096], &[7u8; 4096][..]);
    assert_eq!(&multi2[..1_000_000], &orig[..1_000_000]);
    assert_eq!(&multi2[1_004_096..], &orig[1_004_096..]);
}
