//! The data model at scale, through real mounts: many files in one
//! directory (sharded), listed cold with their sizes; small random writes
//! with `fsync` into a large file, read back byte-exact after a restart.
//! CI runs smaller counts; the `#[ignore]`d versions run the sizes of
//! issue 10 (`cargo test --test large_files_and_dirs -- --ignored`).

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, tool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BLOCK_DIR: u8 = 121;
const BLOCK_DIR_BIG: u8 = 122;
const BLOCK_PWRITE: u8 = 123;

/// Deadline of one bulk step.
const BULK: Duration = Duration::from_secs(600);

/// A one-node ring (as the README's first command) mounting a fresh tree.
async fn one_node(block: u8) -> (NodeGuard, tempfile::TempDir) {
    let idir = tempfile::Builder::new()
        .prefix("peerstore-id-")
        .tempdir()
        .unwrap();
    let node = NodeGuard::start(NodeOpts {
        replicas: 1,
        ..NodeOpts::mounted(&addr(block, 1), None, &idir.path().join("identity"))
    })
    .await;
    (node, idir)
}

/// `ls -l` of `dir`: (rows, seconds).
async fn ls_l(dir: &Path) -> (Vec<String>, f64) {
    let t = Instant::now();
    let out = tool(Command::new("ls").arg("-l").arg(dir), BULK).await;
    assert!(out.status.success(), "ls -l {} failed", dir.display());
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1) // "total …"
        .map(str::to_string)
        .collect();
    (rows, t.elapsed().as_secs_f64())
}

async fn many_files_in_one_directory(block: u8, n: usize) {
    let (node, _id) = one_node(block).await;
    let dir = node.mount_dir().join("many");
    let d = dir.clone();
    let took = blocking("create files", BULK, move || {
        fs::create_dir(&d).unwrap();
        let t = Instant::now();
        for i in 0..n {
            // Sizes differ, so the listing shows each file's own size.
            let body = vec![b'x'; i % 97];
            common::write_closed(&d.join(format!("file-{i:06}")), &body)
                .unwrap_or_else(|e| panic!("create file-{i:06}: {e}"));
        }
        t.elapsed().as_secs_f64()
    })
    .await;
    eprintln!(
        "{n} creates in one directory: {took:.2} s ({:.0}/s)",
        n as f64 / took
    );
    // Cold: a fresh mount of the same tree.
    let mut node = node;
    node.terminate().await;
    let node = node.restart(None).await;
    let dir = node.mount_dir().join("many");
    let (rows, secs) = ls_l(&dir).await;
    eprintln!("cold ls -l of {n} files: {secs:.2} s");
    assert_eq!(rows.len(), n, "files listed");
    for (i, row) in rows.iter().enumerate() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.last().copied(), Some(format!("file-{i:06}").as_str()));
        assert_eq!(cols[4], (i % 97).to_string(), "size of file-{i:06}: {row}");
    }
    // Removing them all empties the directory; then it goes too.
    let d = dir.clone();
    // Removing is not yet written behind (~30 ms a file): a long deadline.
    blocking("remove files", BULK * 3, move || {
        for i in (0..n).step_by(3) {
            fs::remove_file(d.join(format!("file-{i:06}"))).unwrap();
        }
        let left = fs::read_dir(&d).unwrap().count();
        assert_eq!(left, n - n.div_ceil(3));
        fs::remove_dir_all(&d).unwrap();
        assert!(!d.exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_1500_files() {
    many_files_in_one_directory(BLOCK_DIR, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue 10's size: 20,000 files (about a minute)"]
async fn a_directory_of_20000_files() {
    many_files_in_one_directory(BLOCK_DIR_BIG, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_synced_writes_into_a_large_file() {
    let (node, _id) = one_node(BLOCK_PWRITE).await;
    let path = node.mount_dir().join("db.bin");
    let p = path.clone();
    let (model, took) = blocking("pwrite + fsync", BULK, move || {
        let mut rng = StdRng::seed_from_u64(common::seed("small_synced_writes"));
        let size = 16usize << 20;
        let mut model: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &model).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        let t = Instant::now();
        for _ in 0..200 {
            let off = rng.gen_range(0..size - 4096);
            let piece: Vec<u8> = (0..4096).map(|_| rng.r#gen()).collect();
            f.write_all_at(&piece, off as u64).unwrap();
            f.sync_all().unwrap();
            model[off..off + 4096].copy_from_slice(&piece);
        }
        let took = t.elapsed().as_secs_f64();
        common::close(f).unwrap();
        (model, took)
    })
    .await;
    eprintln!("200 random 4 KiB pwrite + fsync into 16 MiB: {took:.2} s");
    let mut node = node;
    node.terminate().await;
    let node = node.restart(None).await;
    let p = node.mount_dir().join("db.bin");
    let (got, meta) = blocking("read back", BULK, move || {
        (fs::read(&p).unwrap(), fs::metadata(&p).unwrap())
    })
    .await;
    assert_eq!(meta.size(), model.len() as u64);
    assert!(got == model, "content differs after restart");
}
