//! Process tests of kept versions and the trash: one machine overwrites and
//! deletes files in its mounted folder; a second machine of the same user
//! lists the versions, copies old ones out, lists the trash and restores
//! from it, and both folders show the restored files. A ring with a short
//! retention period frees the space of versions and deleted files once
//! the period has passed.
//!
//! Needs /dev/fuse and the right to mount (root). File operations run on
//! helper threads with deadlines ([`common::blocking`]); node guards
//! detach their mounts when dropped, also when a test fails.

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, cli, stderr, stdout, wait_until};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BLOCK: u8 = 131;
const BLOCK_RETENTION: u8 = 132;
/// Deadline of a batch of file operations.
const IO: Duration = Duration::from_secs(60);
/// How long a change may take to show on the other mount (attributes
/// and listings are cached for 1 s).
const SHOWS: Duration = Duration::from_secs(15);
const MIB: usize = 1 << 20;

/// Nodes 1 and 2 of a 2-node ring (r = 2), both mounting `identity`'s
/// tree, each with `extra` options.
async fn two_machines(block: u8, identity: &Path, extra: &[&str]) -> Vec<NodeGuard> {
    let first = addr(block, 1);
    let mut nodes = Vec::new();
    for i in 1..=2u8 {
        let join = (i > 1).then_some(first.as_str());
        let mut opts = NodeOpts::mounted(&addr(block, i), join, identity);
        opts.replicas = 2;
        opts.extra.extend(extra.iter().map(|s| s.to_string()));
        nodes.push(NodeGuard::start(opts).await);
    }
    let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
    wait_until("a 2-node ring", Duration::from_secs(30), || {
        common::ring_consistent(&all, &all)
    })
    .await;
    nodes
}

/// Runs a client command for `identity` through node `peer`; its stdout,
/// or a panic with its error output.
async fn client(peer: &str, identity: &Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let id = identity.to_str().unwrap();
    all.extend(["--peer", peer, "--identity", id]);
    let o = cli(&all).await;
    assert!(
        o.status.success(),
        "peerstore {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Like [`client`], for a command that must fail; its error output.
async fn client_fails(peer: &str, identity: &Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let id = identity.to_str().unwrap();
    all.extend(["--peer", peer, "--identity", id]);
    let o = cli(&all).await;
    assert!(!o.status.success(), "peerstore {args:?} succeeded");
    stderr(&o)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Waits until `path` reads as `want`.
async fn shows(path: PathBuf, want: Vec<u8>) {
    wait_until(
        &format!("{} to read as expected", path.display()),
        SHOWS,
        || {
            let (p, w) = (path.clone(), want.clone());
            async move {
                match fs::read(&p) {
                    Ok(d) if d == w => Ok(()),
                    Ok(d) => Err(format!("{} bytes, not {}", d.len(), w.len())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_trash_restore_from_a_second_machine() {
    let idir = tempfile::tempdir().unwrap();
    let identity = idir.path().join("identity");
    let nodes = two_machines(BLOCK, &identity, &[]).await;
    let (one, two) = (
        nodes[0].mount_dir().to_path_buf(),
        nodes[1].mount_dir().to_path_buf(),
    );
    let peer2 = nodes[1].addr.clone();
    let mut rng = StdRng::seed_from_u64(131);
    let big = common::random_bytes(&mut rng, 3 * MIB);

    // Machine 1: overwrites, an append, a partial rewrite of a large
    // file, deletes, and an editor's save (a new file renamed over).
    let m = one.clone();
    let b = big.clone();
    blocking("writes on machine 1", IO, move || {
        common::write_closed(&m.join("notes.txt"), b"v1").unwrap();
        common::write_closed(&m.join("notes.txt"), b"v2 longer").unwrap();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("notes.txt"))
            .unwrap();
        f.write_all(b" v3").unwrap();
        common::close(f).unwrap();
        common::write_closed(&m.join("data.bin"), &b).unwrap();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.join("data.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(&[0xee; 100]).unwrap();
        common::close(f).unwrap();
        fs::create_dir(m.join("docs")).unwrap();
        common::write_closed(&m.join("docs/a.txt"), b"alpha").unwrap();
        common::write_closed(&m.join("docs/b.txt"), b"beta").unwrap();
        common::write_closed(&m.join("gone.txt"), b"gone").unwrap();
        common::write_closed(&m.join("edit.txt"), b"draft").unwrap();
        common::write_closed(&m.join(".edit.txt.swp"), b"final").unwrap();
        fs::rename(m.join(".edit.txt.swp"), m.join("edit.txt")).unwrap();
        fs::remove_dir_all(m.join("docs")).unwrap();
        fs::remove_file(m.join("gone.txt")).unwrap();
        // The moves to the trash are written behind (batched for up to
        // 250 ms): an fsync of the folder waits for them.
        fs::File::open(&m).unwrap().sync_all().unwrap();
    })
    .await;

    // Machine 2: the versions, as lines and as JSON.
    let text = client(&peer2, &identity, &["versions", "/notes.txt"]).await;
    eprintln!("versions /notes.txt:\n{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().last().unwrap().contains("(current)"), "{text}");
    let list = json(&client(&peer2, &identity, &["versions", "/notes.txt", "--json"]).await);
    let list = list.as_array().expect("a JSON list");
    let numbers: Vec<u64> = list
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    let sizes: Vec<u64> = list.iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(sizes, [2, 9, 12]);
    let machine = list[0]["machine"].as_str().unwrap().to_string();
    assert!(!machine.is_empty());
    assert!(list.iter().all(|v| v["machine"] == machine.as_str()));
    assert!(list[2]["current"].as_bool().unwrap());
    let times: Vec<String> = list
        .iter()
        .map(|v| v["time"].as_str().unwrap().to_string())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for t in &times {
        t.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{t}: {e}"));
    }

    // Old versions copied out, whole.
    let out = idir.path().join("out");
    for (n, want) in [
        ("1", &b"v1"[..]),
        ("2", b"v2 longer"),
        ("3", b"v2 longer v3"),
    ] {
        let o = out.to_str().unwrap();
        client(&peer2, &identity, &["get", "/notes.txt", o, "--version", n]).await;
        assert_eq!(fs::read(&out).unwrap(), want, "version {n}");
    }
    let o = out.to_str().unwrap();
    client(
        &peer2,
        &identity,
        &["get", "/data.bin", o, "--version", "1"],
    )
    .await;
    assert!(fs::read(&out).unwrap() == big, "the 3 MiB version 1");
    client(&peer2, &identity, &["get", "/data.bin", o]).await;
    let now = fs::read(&out).unwrap();
    assert_eq!(&now[1000..1100], &[0xee; 100][..]);
    let e = client_fails(
        &peer2,
        &identity,
        &["get", "/data.bin", o, "--version", "7"],
    )
    .await;
    assert!(e.contains("no version 7"), "{e}");

    // The trash, from machine 2.
    let items = json(&client(&peer2, &identity, &["trash", "ls", "--json"]).await);
    let mut paths: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/docs/a.txt", "/docs/b.txt", "/edit.txt", "/gone.txt"]
    );
    let text = client(&peer2, &identity, &["trash", "ls"]).await;
    assert!(
        text.contains("/docs/a.txt") && text.contains(&machine),
        "{text}"
    );

    // Restored: the directory comes back, on both machines.
    client(&peer2, &identity, &["trash", "restore", "/docs/a.txt"]).await;
    shows(two.join("docs/a.txt"), b"alpha".to_vec()).await;
    shows(one.join("docs/a.txt"), b"alpha".to_vec()).await;
    // A name taken since is not overwritten; --to puts it elsewhere.
    let e = client_fails(&peer2, &identity, &["trash", "restore", "/edit.txt"]).await;
    assert!(e.to_lowercase().contains("exists"), "{e}");
    client(
        &peer2,
        &identity,
        &["trash", "restore", "/edit.txt", "--to", "/edit-draft.txt"],
    )
    .await;
    shows(one.join("edit-draft.txt"), b"draft".to_vec()).await;
    shows(one.join("edit.txt"), b"final".to_vec()).await;
    let e = client_fails(&peer2, &identity, &["trash", "restore", "/nothing.txt"]).await;
    assert!(e.contains("nothing deleted from /nothing.txt"), "{e}");

    // A restored file keeps being written and versioned as before.
    let m = two.clone();
    blocking("overwrite the restored file", IO, move || {
        common::write_closed(&m.join("docs/a.txt"), b"alpha 2").unwrap();
    })
    .await;
    let list = json(&client(&peer2, &identity, &["versions", "/docs/a.txt", "--json"]).await);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // Emptied for good: what is left goes.
    let e = {
        let o = cli(&[
            "trash",
            "empty",
            "--peer",
            &peer2,
            "--identity",
            identity.to_str().unwrap(),
        ])
        .await;
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    assert!(e.contains("deleted 2 files"), "{e}");
    let items = json(&client(&peer2, &identity, &["trash", "ls", "--json"]).await);
    assert_eq!(items, serde_json::json!([]));
    assert!(!one.join("gone.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_is_freed_when_the_retention_period_lets_go() {
    let idir = tempfile::tempdir().unwrap();
    let identity = idir.path().join("identity");
    let retention = 12;
    let nodes = two_machines(
        BLOCK_RETENTION,
        &identity,
        &[
            "--retention",
            &format!("{retention}s"),
            "--orphan-check-secs",
            "2",
            "--orphan-grace-secs",
            "1",
        ],
    )
    .await;
    let one = nodes[0].mount_dir().to_path_buf();
    let mut rng = StdRng::seed_from_u64(132);
    let (a, b) = (
        common::random_bytes(&mut rng, 4 * MIB),
        common::random_bytes(&mut rng, 4 * MIB),
    );
    let m = one.clone();
    blocking("write, overwrite, delete", IO, move || {
        common::write_closed(&m.join("big.bin"), &a).unwrap();
        common::write_closed(&m.join("big.bin"), b"small now").unwrap();
        common::write_closed(&m.join("doomed.bin"), &b).unwrap();
        fs::remove_file(m.join("doomed.bin")).unwrap();
    })
    .await;
    let start = std::time::Instant::now();
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.data_dir().to_path_buf()).collect();
    let held: u64 = dirs.iter().map(|d| common::block_bytes(d)).sum();
    eprintln!("block bytes held with a kept version and a file in the trash: {held}");
    // Two copies of 8 MiB: nothing was freed yet.
    assert!(held >= 2 * 8 * MIB as u64 - 256 * 1024, "{held}");
    let peer = nodes[0].addr.clone();
    let versions = json(&client(&peer, &identity, &["versions", "/big.bin", "--json"]).await);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    // Still kept a while later (well within the period)...
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mid: u64 = dirs.iter().map(|d| common::block_bytes(d)).sum();
    if start.elapsed() < Duration::from_secs(retention - 2) {
        assert!(mid >= held * 9 / 10, "freed early: {mid} of {held}");
    }
    // ...and freed once the period has passed.
    let left = common::blocks_freed(
        "the version and the deleted file freed",
        &dirs,
        held,
        Duration::from_secs(retention + 30),
    )
    .await;
    eprintln!(
        "{} of {held} block bytes freed {:.1} s after the writes (retention {retention} s)",
        held - left,
        start.elapsed().as_secs_f64()
    );
    let versions = json(&client(&peer, &identity, &["versions", "/big.bin", "--json"]).await);
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    let items = json(&client(&peer, &identity, &["trash", "ls", "--json"]).await);
    assert_eq!(items, serde_json::json!([]));
    assert_eq!(fs::read(one.join("big.bin")).unwrap(), b"small now");
}
