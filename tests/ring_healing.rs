//! Process tests of a mounted folder while the ring heals, fills up or
//! loses sight of a node:
//!
//! - a writer copying 1 MiB and 3 KB files in a loop sees no failed write,
//!   and none slower than 10 s, while 1 of 3 nodes (and, separately, 2 of
//!   5 at once) are killed with SIGKILL; every file reads back exactly;
//! - a ring whose disks are full answers ENOSPC (and the CLI "no space
//!   left on the ring"), the full nodes log it naming their data
//!   directories, and once space is back writes work without restarts;
//! - a directory whose only copy is on a node that stopped answering reads
//!   as EIO, never as absent; once the node is back it reads again.

mod common;

use common::write_closed;

use common::{NodeGuard, NodeOpts, addr, blocking, run_tool};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BLOCK_CRASH_3: u8 = 116;
const BLOCK_CRASH_5: u8 = 117;
const BLOCK_FULL: u8 = 118;
const BLOCK_UNREACHABLE: u8 = 119;

/// Longest one file write may take while the ring heals.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// One file the writer wrote.
struct Written {
    path: PathBuf,
    data: Vec<u8>,
    took: Duration,
}

/// Writes files into `dir`, alternating 1 MiB and 3 KB, until `stop` is
/// set, `max` files are written or `budget` has passed. Every write that
/// fails is an `Err` naming the file.
fn write_loop(
    dir: PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    max: usize,
    budget: Duration,
) -> Vec<Result<Written, String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut out = Vec::new();
    for i in 0..max {
        if stop.load(Ordering::SeqCst) || start.elapsed() > budget {
            break;
        }
        let len = if i % 2 == 0 { 1 << 20 } else { 3000 };
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let path = dir.join(format!("f{i:04}.bin"));
        let t = Instant::now();
        match write_closed(&path, &data) {
            Ok(()) => out.push(Ok(Written {
                path,
                data,
                took: t.elapsed(),
            })),
            Err(e) => out.push(Err(format!(
                "{} after {:?}: {e}",
                path.display(),
                t.elapsed()
            ))),
        }
        count.fetch_add(1, Ordering::SeqCst);
    }
    out
}

/// Starts a ring of `n` nodes on `block`; node 1 mounts a fresh tree.
async fn mounted_ring(block: u8, n: u8, identity: &Path) -> Vec<NodeGuard> {
    let first = addr(block, 1);
    common::start_ring(block, n, NodeOpts::mounted(&first, None, identity)).await
}

/// Runs the write loop on node 1's mount, kills `victims` (SIGKILL, all at
/// once) after a few files, and checks every write and every file.
async fn crashes_cost_no_write(block: u8, n: u8, victims: &[usize]) {
    let seed = common::seed(&format!("crashes_cost_no_write_{n}"));
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("identity");
    let mut nodes = mounted_ring(block, n, &identity).await;
    let dir = nodes[0].mount_dir().join("loop");
    fs::create_dir(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (dir, stop, count) = (dir.clone(), stop.clone(), count.clone());
        std::thread::spawn(move || write_loop(dir, seed, stop, count, 400, Duration::from_secs(90)))
    };
    // Kill once the loop is going, then let it write on while the ring
    // heals.
    common::wait_until("the writer's first files", Duration::from_secs(30), || {
        let c = count.load(Ordering::SeqCst);
        async move {
            if c >= 6 {
                Ok(())
            } else {
                Err(format!("{c} files"))
            }
        }
    })
    .await;
    for &v in victims {
        nodes[v].kill_9();
    }
    let at_kill = count.load(Ordering::SeqCst);
    eprintln!("killed {victims:?} after {at_kill} files");
    common::wait_until(
        "30 more files after the crash",
        Duration::from_secs(90),
        || {
            let c = count.load(Ordering::SeqCst);
            let done = writer.is_finished();
            async move {
                if c >= at_kill + 30 || done {
                    Ok(())
                } else {
                    Err(format!("{c} files"))
                }
            }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let results = blocking("the writer", Duration::from_secs(120), move || {
        writer.join().expect("writer thread")
    })
    .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    let written: Vec<&Written> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(
        written.len() >= at_kill + 30,
        "only {} files written",
        written.len()
    );
    let slowest = written.iter().map(|w| w.took).max().unwrap();
    eprintln!("{} files, slowest write {slowest:?}", written.len());
    assert!(
        slowest <= WRITE_LIMIT,
        "a write took {slowest:?} (limit {WRITE_LIMIT:?})"
    );
    // Every file reads back byte-exact (through a fresh open).
    let files: Vec<(PathBuf, Vec<u8>)> = written
        .iter()
        .map(|w| (w.path.clone(), w.data.clone()))
        .collect();
    blocking("reading back", Duration::from_secs(120), move || {
        for (p, want) in files {
            let got = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            assert!(got == want, "{} differs after the crash", p.display());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_of_one_of_three_costs_no_write() {
    common::with_timeout(
        Duration::from_secs(300),
        crashes_cost_no_write(BLOCK_CRASH_3, 3, &[2]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_crashes_of_five_cost_no_write() {
    common::with_timeout(
        Duration::from_secs(300),
        crashes_cost_no_write(BLOCK_CRASH_5, 5, &[2, 3]),
    )
    .await;
}

/// Size of each node's small store file system, and after it grows.
const SMALL: u64 = 24 << 20;
const LARGER: u64 = 160 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_ring_answers_enospc_and_recovers() {
    common::with_timeout(Duration::from_secs(300), async {
        let keys = tempfile::tempdir().unwrap();
        let identity = keys.path().join("identity");
        let first = addr(BLOCK_FULL, 1);
        let mut opts = NodeOpts::mounted(&first, None, &identity);
        opts.store_size = Some(SMALL);
        let mut nodes = vec![NodeGuard::start(opts).await];
        for i in 2..=3 {
            let mut o = NodeOpts::new(&addr(BLOCK_FULL, i), Some(&first));
            o.store_size = Some(SMALL);
            nodes.push(NodeGuard::start(o).await);
        }
        let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
        common::wait_until("3-node ring", Duration::from_secs(30), || {
            common::ring_consistent(&all, &all)
        })
        .await;
        let mnt = nodes[0].mount_dir().to_path_buf();
        // 40 MiB cannot fit three times in 3 × 24 MiB.
        let mut rng = StdRng::seed_from_u64(common::seed("a_full_ring_answers_enospc"));
        let big = common::random_bytes(&mut rng, 40 << 20);
        let target = mnt.join("big.bin");
        let (b, t) = (big.clone(), target.clone());
        let r = blocking("the big write", Duration::from_secs(120), move || {
            write_closed(&t, &b)
        })
        .await;
        let e = r.expect_err("a write larger than the ring succeeded");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "the big write failed with {e}, not ENOSPC"
        );
        // Each full node says so once, naming its data directory.
        for n in &nodes {
            let store = n.data_dir().join("store");
            let want = format!("data directory {}", store.display());
            common::wait_until("the full store's warning", Duration::from_secs(10), || {
                let log = n.log();
                let want = want.clone();
                async move {
                    if log.contains("store full") && log.contains(&want) {
                        Ok(())
                    } else {
                        Err("not logged".into())
                    }
                }
            })
            .await;
        }
        assert!(
            nodes[0]
                .log()
                .contains("big.bin failed: no space left on the ring"),
            "the mount logged no warning with the path"
        );
        // The CLI says it in words, once what room is left is used up
        // (bounded: 24 MiB holds at most 40 blocks of 600 KB).
        let small = keys.path().join("small.bin");
        let mut refused = None;
        for _ in 0..40 {
            fs::write(&small, common::random_bytes(&mut rng, 600_000)).unwrap();
            let o = common::cli(&["block", "put", "--peer", &first, small.to_str().unwrap()]).await;
            if !o.status.success() {
                refused = Some(common::stderr(&o));
                break;
            }
        }
        let refused = refused.expect("the full ring took 40 more blocks");
        assert!(
            refused.contains("no space left on the ring"),
            "block put on a full ring: {refused}"
        );
        // Space comes back: the same write works, nothing restarted.
        for n in &nodes {
            n.resize_store(LARGER);
        }
        let (b, t) = (big.clone(), target.clone());
        blocking("the big write again", Duration::from_secs(120), move || {
            write_closed(&t, &b).expect("write after space came back")
        })
        .await;
        let t = target.clone();
        let got = blocking("reading it", Duration::from_secs(60), move || {
            fs::read(&t).unwrap()
        })
        .await;
        assert!(got == big, "big.bin differs");
        for n in nodes.iter_mut() {
            assert!(n.is_running());
        }
    })
    .await;
}

/// The keys (hex) of the records a node's store holds (in its packs, or
/// in files from before them).
fn records_held(data: &Path) -> std::collections::HashSet<String> {
    peerstore::store::held_in(&data.join("store"))
        .map(|h| h.records.into_iter().map(|k| k.to_hex()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_directories_read_as_eio_not_absent() {
    common::with_timeout(Duration::from_secs(300), async {
        // One copy of everything (r = 1), so a node that stops answering
        // takes its items out of reach.
        let keys = tempfile::tempdir().unwrap();
        let identity = keys.path().join("identity");
        let first = addr(BLOCK_UNREACHABLE, 1);
        let mut opts = NodeOpts::mounted(&first, None, &identity);
        opts.replicas = 1;
        let mut nodes = vec![NodeGuard::start(opts).await];
        for i in 2..=4 {
            let mut o = NodeOpts::new(&addr(BLOCK_UNREACHABLE, i), Some(&first));
            o.replicas = 1;
            nodes.push(NodeGuard::start(o).await);
        }
        let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
        common::wait_until("4-node ring", Duration::from_secs(30), || {
            common::ring_consistent(&all, &all)
        })
        .await;
        let mnt = nodes[0].mount_dir().to_path_buf();
        // Stop the node (not the mounting one, nor the root's holder)
        // holding the most records.
        let id = peerstore::fs::Identity::load_or_create(&identity).unwrap();
        let root = id.record_key(&id.root_name()).to_hex();
        let holds_root = |d: &Path| records_held(d).contains(&root);
        // Directories are made in batches until that node holds a few
        // records no other node holds: node IDs are random, and one may
        // own a sliver of the ring. A copy left on a second node (a
        // placement moment while the ring settled) keeps that record in
        // reach, so it does not count.
        let mut made = 0;
        let victim = loop {
            let m = mnt.clone();
            blocking(
                "making 24 directories",
                Duration::from_secs(60),
                move || {
                    for i in made..made + 24 {
                        let d = m.join(format!("d{i:03}"));
                        fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                        write_closed(&d.join("file"), format!("file {i}").as_bytes())
                            .unwrap_or_else(|e| panic!("write {}/file: {e}", d.display()));
                    }
                },
            )
            .await;
            made += 24;
            let held: Vec<_> = (0..4).map(|i| records_held(nodes[i].data_dir())).collect();
            let only_on = |i: usize| {
                held[i]
                    .iter()
                    .filter(|r| (0..4).all(|j| j == i || !held[j].contains(*r)))
                    .count()
            };
            let victim = (1..4)
                .filter(|&i| !holds_root(nodes[i].data_dir()))
                .max_by_key(|&i| only_on(i))
                .unwrap();
            eprintln!(
                "{made} directories: node {} holds {} records, {} of them nowhere else",
                nodes[victim].addr,
                held[victim].len(),
                only_on(victim)
            );
            if only_on(victim) >= 4 || made >= 120 {
                assert!(only_on(victim) > 0);
                break victim;
            }
        };
        nodes[victim].pause();
        let paused_at = std::time::Instant::now();
        eprintln!("paused node {}", nodes[victim].addr);
        // The others drop it from the ring (by then the mount's caches
        // have expired too): its keys now fall to nodes that never held
        // them, which answer "not here".
        let live: Vec<String> = (0..4)
            .filter(|&i| i != victim)
            .map(|i| nodes[i].addr.clone())
            .collect();
        common::wait_until("the ring without it", Duration::from_secs(30), || {
            common::ring_consistent(&live, &live)
        })
        .await;
        // The mount keeps attributes for 1 s (its ATTR_TTL) and the vault
        // trusts a directory it read for 5 s (DIR_GUESS_TTL): the listing
        // starts once both have passed since the last access.
        tokio::time::sleep_until((paused_at + Duration::from_secs(6)).into()).await;
        let (names, errors) = {
            let m = mnt.clone();
            blocking("listing", Duration::from_secs(200), move || {
                let mut errors = Vec::new();
                let names: Vec<String> = match fs::read_dir(&m) {
                    Ok(dir) => dir
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect(),
                    // The root itself may be out of reach: never empty.
                    Err(e) => {
                        assert_eq!(
                            e.raw_os_error(),
                            Some(libc::EIO),
                            "listing the unreachable root: {e}"
                        );
                        errors.push("root: Input/output error".to_string());
                        return (None, errors);
                    }
                };
                // Each directory is listed and its file read: the records
                // out of reach may be directories' or files'.
                for n in &names {
                    for tool in ["ls -l", "cat"] {
                        let mut argv = tool.split(' ');
                        let mut cmd = Command::new(argv.next().unwrap_or("ls"));
                        cmd.args(argv);
                        if tool == "cat" {
                            cmd.arg(m.join(n).join("file"));
                        } else {
                            cmd.arg(m.join(n));
                        }
                        let out = run_tool(&mut cmd, Duration::from_secs(60)).expect(tool);
                        if !out.status.success() {
                            errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
                            break;
                        }
                    }
                }
                (Some(names), errors)
            })
            .await
        };
        if let Some(names) = &names {
            eprintln!("{} directories, {} unreadable", names.len(), errors.len());
            assert_eq!(
                names.len(),
                made,
                "the root listing lost entries: {names:?}"
            );
        } else {
            eprintln!("the root is out of reach");
        }
        for e in &errors {
            assert!(
                !e.contains("No such file or directory"),
                "an unreachable directory read as absent: {e}"
            );
            assert!(e.contains("Input/output error"), "unexpected error: {e}");
        }
        assert!(
            !errors.is_empty(),
            "no directory was out of reach: the test proves nothing"
        );
        // The node answers again: every directory reads back.
        nodes[victim].resume();
        let m = mnt.clone();
        common::wait_until("every directory readable", Duration::from_secs(60), || {
            let m = m.clone();
            async move {
                blocking("listing again", Duration::from_secs(60), move || {
                    for i in 0..made {
                        let f = m.join(format!("d{i:03}")).join("file");
                        match fs::read(&f) {
                            Ok(d) if d == format!("file {i}").as_bytes() => {}
                            other => return Err(format!("{}: {other:?}", f.display())),
                        }
                    }
                    Ok(())
                })
                .await
            }
        })
        .await;
    })
    .await;
}
