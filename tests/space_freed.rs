//! Space on the ring, through real processes and mounts: `df` on the
//! mount shows the members' stores divided by r and this owner's bytes;
//! `rm` moves files to the trash, and `trash empty` frees their blocks on
//! every replica within a minute;
//! the owner's orphan check frees a block nothing refers to.

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, tool, wait_until};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BLOCK_RM: u8 = 125;
const BLOCK_ORPHAN: u8 = 126;
const MIB: u64 = 1 << 20;

/// `statvfs` of `dir`: (size, used, available) in bytes, as `df` shows them.
fn df(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path; `s` is written by statvfs.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(r, 0, "statvfs {}", dir.display());
    let f = s.f_frsize;
    (s.f_blocks * f, (s.f_blocks - s.f_bfree) * f, s.f_bavail * f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_shows_the_ring_and_rm_frees_the_blocks() {
    let idir = tempfile::tempdir().unwrap();
    // Each member's store on a 256 MiB file system of its own.
    let store = 256 * MIB;
    let first = NodeOpts {
        store_size: Some(store),
        ..NodeOpts::mounted(&addr(BLOCK_RM, 1), None, &idir.path().join("identity"))
    };
    let via = first.listen.clone();
    let mut nodes = vec![NodeGuard::start(first).await];
    for i in 2..=3 {
        nodes.push(
            NodeGuard::start(NodeOpts {
                store_size: Some(store),
                ..NodeOpts::new(&addr(BLOCK_RM, i), Some(&via))
            })
            .await,
        );
    }
    let addrs: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
    wait_until("3-node ring", Duration::from_secs(30), || {
        common::ring_consistent(&addrs, &addrs)
    })
    .await;
    let mnt = nodes[0].mount_dir().to_path_buf();

    // Size: three 256 MiB stores holding every block three times.
    let m = mnt.clone();
    let (size, used, avail) = blocking("df", Duration::from_secs(30), move || df(&m)).await;
    eprintln!("df before: size {size}, used {used}, avail {avail}");
    assert!(
        size > store * 95 / 100 && size <= store,
        "size {size} is not the 256 MiB each copy can use"
    );
    assert!(avail <= size && avail > store / 2, "avail {avail}");
    assert!(used < 4 * MIB, "an empty tree uses {used} bytes");

    // 24 MiB in six files.
    let written = 24 * MIB;
    let dir = mnt.join("data");
    let d = dir.clone();
    blocking("write files", Duration::from_secs(120), move || {
        fs::create_dir(&d).unwrap();
        let mut rng = StdRng::seed_from_u64(125);
        for i in 0..6 {
            let body = common::random_bytes(&mut rng, (written / 6) as usize);
            common::write_closed(&d.join(format!("f{i}")), &body).unwrap();
        }
    })
    .await;
    let held: u64 = nodes
        .iter()
        .map(|n| common::block_bytes(n.data_dir()))
        .sum();
    eprintln!("blocks on the ring after writing {written} bytes: {held}");
    // Each file's last 16 KiB (4 MiB is 4 blocks of 1 MiB - 4 KiB, and
    // 16 KiB more) is in its record's journal, not in a block.
    let tails = 6 * 16 * 1024;
    assert!(held >= 3 * (written - tails), "every block on 3 members");
    // `df` counts this owner's bytes once.
    let m = mnt.clone();
    let (used_full, _) = wait_until("df shows the files", Duration::from_secs(20), || {
        let m = m.clone();
        async move {
            let (_, used, _) = df(&m);
            (used >= written)
                .then_some(used)
                .ok_or(format!("used {used}"))
        }
    })
    .await;
    eprintln!("df used with the files: {used_full}");
    assert!(used_full < written + 4 * MIB, "used {used_full}");

    // rm moves the files to the trash: nothing is freed yet.
    let out = tool(
        Command::new("rm").arg("-rf").arg(&dir),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "rm -rf failed");
    let data_dirs: Vec<std::path::PathBuf> =
        nodes.iter().map(|n| n.data_dir().to_path_buf()).collect();
    let in_trash: u64 = data_dirs.iter().map(|d| common::block_bytes(d)).sum();
    assert!(
        in_trash >= held,
        "{in_trash} of {held} bytes left in the trash"
    );
    // The removals are written behind: the trash lists the six files
    // once they are stored.
    let id = idir.path().join("identity");
    let peer = nodes[0].addr.clone();
    wait_until("six files in the trash", Duration::from_secs(20), || {
        let (id, peer) = (id.clone(), peer.clone());
        async move {
            let o = common::cli(&[
                "trash",
                "ls",
                "--peer",
                &peer,
                "--identity",
                id.to_str().unwrap(),
            ])
            .await;
            let n = common::stdout(&o).lines().count();
            (n == 6).then_some(()).ok_or(format!("{n} listed"))
        }
    })
    .await;
    // `trash empty`: the blocks go from every member within 60 s.
    let t = Instant::now();
    let out = common::cli(&[
        "trash",
        "empty",
        "--peer",
        &nodes[0].addr,
        "--identity",
        id.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "trash empty: {}",
        common::stderr(&out)
    );
    let said = common::stderr(&out);
    assert!(said.contains("deleted 6 files"), "{said}");
    let left =
        common::blocks_freed("blocks freed", &data_dirs, held, Duration::from_secs(60)).await;
    eprintln!(
        "rm and trash empty of {written} bytes: {} of {held} block bytes freed on the ring in {:.2} s",
        held - left,
        t.elapsed().as_secs_f64()
    );
    let m = mnt.clone();
    wait_until("df shows them gone", Duration::from_secs(20), || {
        let m = m.clone();
        async move {
            let (_, used, _) = df(&m);
            (used < 2 * MIB).then_some(()).ok_or(format!("used {used}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_check_frees_what_no_version_refers_to() {
    let idir = tempfile::tempdir().unwrap();
    let identity = idir.path().join("identity");
    let node = NodeGuard::start(NodeOpts {
        replicas: 1,
        extra: [
            common::FAST,
            &["--orphan-check-secs", "1", "--orphan-grace-secs", "3"],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..NodeOpts::mounted(&addr(BLOCK_ORPHAN, 1), None, &identity)
    })
    .await;
    let file = node.mount_dir().join("kept");
    let body = common::random_bytes(&mut StdRng::seed_from_u64(126), 3 * MIB as usize);
    let (f, b) = (file.clone(), body.clone());
    blocking("write", Duration::from_secs(60), move || {
        common::write_closed(&f, &b).unwrap()
    })
    .await;
    // A block of this owner that nothing refers to, as a crash between a
    // block put and the save that would refer to it leaves.
    let stray = idir.path().join("stray");
    fs::write(&stray, b"a block no version refers to").unwrap();
    let id = identity.to_str().unwrap();
    let out = common::cli_with(
        &[
            "block",
            "put",
            "--peer",
            &node.addr,
            "--identity",
            id,
            stray.to_str().unwrap(),
        ],
        &[("PEERSTORE_TICKET", &common::test_ticket("127.0.0.1:1"))],
    )
    .await;
    assert!(out.status.success(), "block put: {}", common::stderr(&out));
    let key = common::stdout(&out).trim().to_string();
    let data = node.data_dir().to_path_buf();
    assert!(
        common::holds_block(&data, &key),
        "the stray block is stored"
    );
    let (_, took) = wait_until("stray block released", Duration::from_secs(30), || {
        let (d, k) = (data.clone(), key.clone());
        async move {
            (!common::holds_block(&d, &k))
                .then_some(())
                .ok_or("still stored".to_string())
        }
    })
    .await;
    eprintln!(
        "orphan released {:.1} s after it was put",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_secs(3),
        "released within its grace period"
    );
    // The file's own blocks are all still there.
    let f = file.clone();
    let back = blocking("read", Duration::from_secs(60), move || {
        fs::read(&f).unwrap()
    })
    .await;
    assert!(back == body, "the file reads back intact");
    assert!(
        node.log().contains("orphan check: released 1 blocks"),
        "log: {}",
        node.log_tail(20)
    );
}
