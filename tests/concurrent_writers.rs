//! Process tests of two machines writing the same files at once: two nodes
//! of one ring mount the same user's tree, and processes on both append
//! to one file, overwrite one file and create one new name, all at the
//! same moment. Every write whose `close` returned 0 must be found
//! afterwards, on both mounts: in the file, or in a conflict copy
//! (`NAME.conflict-<machine>-<time>.EXT`) next to it.
//!
//! Needs /dev/fuse and the right to mount (root). Every file operation
//! runs on a helper thread with a deadline ([`common::blocking`]); node
//! guards detach their mounts when dropped, also when a test fails.

mod common;

use common::{NodeGuard, NodeOpts, addr, blocking, close, wait_until, with_timeout};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Address blocks (`127.0.BLOCK.x`) of the two tests, which run at once.
const BLOCK: u8 = 116;
const BLOCK_SYNCED: u8 = 140;
/// Deadline of one round of writes from both mounts.
const IO: Duration = Duration::from_secs(60);
/// How long the two mounts may take to show the same files (listings are
/// cached for up to 1 s, an entry's size copy is stored up to 250 ms late).
const AGREE: Duration = Duration::from_secs(15);

/// Node 2's clock runs this far ahead of node 1's: conflicts are found
/// by comparing versions, never times.
const SKEW: &str = "3600";

/// A 3-node ring on addresses `127.0.block.x` whose nodes 1 and 2 mount
/// the tree of one identity (kept in the returned directory); node 2's
/// clock is [`SKEW`] seconds ahead. The nodes, and the two mount paths.
async fn two_mounts(block: u8) -> (tempfile::TempDir, Vec<NodeGuard>, [PathBuf; 2]) {
    let keys = tempfile::tempdir().expect("temp dir");
    let identity = keys.path().join("identity");
    let first = addr(block, 1);
    let mut nodes = Vec::new();
    for i in 1..=3u8 {
        let me = addr(block, i);
        let join = (i > 1).then_some(first.as_str());
        let mut opts = if i <= 2 {
            NodeOpts::mounted(&me, join, &identity)
        } else {
            NodeOpts::new(&me, join)
        };
        if i == 2 {
            opts.extra
                .extend(["--clock-skew-secs".to_string(), SKEW.to_string()]);
        }
        nodes.push(NodeGuard::start(opts).await);
    }
    let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
    wait_until("a consistent ring", Duration::from_secs(30), || {
        common::ring_consistent(&all, &all)
    })
    .await;
    let mounts = [
        nodes[0].mount_dir().to_path_buf(),
        nodes[1].mount_dir().to_path_buf(),
    ];
    (keys, nodes, mounts)
}

/// Every file in `dir` whose name starts with `prefix`, with its content.
fn files_like(dir: &Path, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).map_err(|e| format!("list {}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            let data = fs::read(e.path()).map_err(|e| format!("read {name}: {e}"))?;
            out.insert(name, data);
        }
    }
    Ok(out)
}

/// Waits until both mounts list the same files starting with `prefix`,
/// with the same contents, and `found` holds for them; returns them.
async fn agreed(
    mounts: &[PathBuf; 2],
    prefix: &str,
    found: impl Fn(&BTreeMap<String, Vec<u8>>) -> Result<(), String>,
) -> BTreeMap<String, Vec<u8>> {
    let (files, took) = wait_until(&format!("both mounts to agree on {prefix}*"), AGREE, || {
        let m = mounts.clone();
        let p = prefix.to_string();
        let check = blocking("list both mounts", IO, move || {
            let a = files_like(&m[0], &p)?;
            let b = files_like(&m[1], &p)?;
            if a != b {
                return Err(format!(
                    "mount 1 has {:?}, mount 2 {:?}",
                    a.keys().collect::<Vec<_>>(),
                    b.keys().collect::<Vec<_>>()
                ));
            }
            Ok(a)
        });
        let found = &found;
        async move {
            let files = check.await?;
            found(&files)?;
            Ok(files)
        }
    })
    .await;
    eprintln!(
        "{prefix}*: {} files on both mounts after {took:?}: {:?}",
        files.len(),
        files.keys().collect::<Vec<_>>()
    );
    files
}

/// Creates each of `names` (all starting with `prefix`) on mount 1 with
/// `content`, and waits until both mounts list exactly them.
async fn seed(mounts: &[PathBuf; 2], prefix: &str, names: &[String], content: &'static [u8]) {
    for name in names {
        let path = mounts[0].join(name);
        blocking(&format!("create {name}"), IO, move || {
            common::write_closed(&path, content).unwrap()
        })
        .await;
    }
    let want = names.len();
    agreed(mounts, prefix, |f| {
        (f.len() == want)
            .then_some(())
            .ok_or(format!("{} of {want} listed", f.len()))
    })
    .await;
}

/// Runs `work(mount index, mount, gate)` on one thread per mount, started
/// together; `gate` is a barrier both threads pass once per round, so
/// each round's writes overlap. Returns what each returned.
async fn at_once<T: Send + 'static>(
    mounts: &[PathBuf; 2],
    work: impl Fn(usize, &Path, &Barrier) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let gate = Arc::new(Barrier::new(2));
    let mut threads = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let (work, gate, m) = (Arc::clone(&work), Arc::clone(&gate), m.clone());
        let what = format!("writes on mount {}", i + 1);
        threads.push(async move {
            blocking(&what, IO, move || {
                gate.wait();
                work(i, &m, &gate)
            })
            .await
        });
    }
    futures::future::join_all(threads).await
}

/// Opens `path` as `how` says, writes `line`, waits at `gate` (the other
/// mount's writer has written too, and not closed yet), closes; whether
/// every step returned success. Passes the gate once, whatever fails.
fn write_then_meet(path: &Path, how: &fs::OpenOptions, line: &str, gate: &Barrier) -> bool {
    let written = how
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()).map(|_| f));
    gate.wait();
    written.and_then(close).is_ok()
}

/// [`write_then_meet`] with an `fsync` after the gate: both mounts' durable
/// saves of the file race. Whether the write, the `fsync` and the close
/// all returned success.
fn write_meet_then_sync(path: &Path, how: &fs::OpenOptions, line: &str, gate: &Barrier) -> bool {
    let written = how
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()).map(|_| f));
    gate.wait();
    written
        .and_then(|f| f.sync_all().map(|_| f))
        .and_then(close)
        .is_ok()
}

/// 20 appends from each mount to `PREFIX.txt`, each pair at once, each
/// by `write` (whether all its steps returned success): once every
/// acknowledged line is in the file or in one of its conflict copies
/// (named as such), on both mounts, the files they agree on.
async fn race_appends(
    mounts: &[PathBuf; 2],
    prefix: &'static str,
    write: fn(&Path, &fs::OpenOptions, &str, &Barrier) -> bool,
) -> BTreeMap<String, Vec<u8>> {
    let file = format!("{prefix}.txt");
    seed(mounts, prefix, std::slice::from_ref(&file), b"start\n").await;
    let name = file.clone();
    let acked: Vec<String> = at_once(mounts, move |i, m, gate| {
        let mut how = fs::OpenOptions::new();
        how.append(true);
        (0..20)
            .map(|k| format!("mount {} {prefix} line {k}\n", i + 1))
            .filter(|line| write(&m.join(&name), &how, line, gate))
            .collect::<Vec<_>>()
    })
    .await
    .concat();
    eprintln!("{} of 40 {prefix} appends acknowledged", acked.len());
    assert!(acked.len() >= 20, "most appends succeed: {acked:?}");
    let files = agreed(mounts, prefix, |f| all_lines_in(f, &acked)).await;
    assert!(files.contains_key(&file));
    for name in files.keys().filter(|n| **n != file) {
        assert!(
            name.starts_with(&format!("{prefix}.conflict-")) && name.ends_with(".txt"),
            "{name}"
        );
    }
    files
}

/// Whether `files` together hold every one of `lines`; the missing ones
/// otherwise.
fn all_lines_in(files: &BTreeMap<String, Vec<u8>>, lines: &[String]) -> Result<(), String> {
    let text: Vec<String> = files
        .values()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !text.iter().any(|t| t.lines().any(|x| x == l.trim_end())))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} acknowledged lines missing: {missing:?}",
            missing.len()
        ))
    }
}

/// 20 appends from each of two mounts (their clocks an hour apart) to one
/// file, each pair at the same time (both written, neither closed, then
/// both closed): every appended
/// line whose close returned 0 is in the file or in one of its conflict
/// copies, on both mounts. Then the same for whole-file overwrites of an
/// existing file and for two new files of one name. (Overwrites that
/// follow each other replace each other: the file's earlier versions are
/// not kept yet.)
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_from_two_mounts_lose_nothing_acknowledged() {
    with_timeout(Duration::from_secs(300), async {
        let (_keys, nodes, mounts) = two_mounts(BLOCK).await;

        // Appends.
        let files = race_appends(&mounts, "log", write_then_meet).await;
        let copies: Vec<&String> = files.keys().filter(|n| *n != "log.txt").collect();
        // `peerstore status` of the two nodes lists every copy as open,
        // each on the node that made it; a deleted one is no longer open.
        let listed = |nodes: &[NodeGuard]| {
            let addrs: Vec<String> = nodes[..2].iter().map(|n| n.addr.clone()).collect();
            async move {
                let mut all = Vec::new();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                for (i, a) in addrs.iter().enumerate() {
                    let out = common::cli(&["status", "--json", "--peer", a]).await;
                    assert!(out.status.success(), "status: {}", common::stderr(&out));
                    let j: serde_json::Value =
                        serde_json::from_str(&common::stdout(&out)).expect("status prints JSON");
                    assert_eq!(j["member"], true);
                    assert_eq!(j["contacts"], 2, "{j}");
                    for c in j["mount"]["conflicts"].as_array().expect("a mount") {
                        assert_eq!(c["path"], "/log.txt");
                        // Each copy carries its own machine's time.
                        let at = c["at"].as_i64().unwrap();
                        let skew: i64 = if i == 1 { SKEW.parse().unwrap() } else { 0 };
                        assert!((at - now - skew).abs() < 600, "copy at {at}, now {now}");
                        all.push(
                            c["copy"]
                                .as_str()
                                .unwrap()
                                .trim_start_matches('/')
                                .to_string(),
                        );
                    }
                }
                all.sort();
                all
            }
        };
        let mut expected: Vec<String> = copies.iter().map(|c| c.to_string()).collect();
        expected.sort();
        assert_eq!(listed(&nodes).await, expected);
        if let Some(first) = expected.first() {
            let gone = mounts[0].join(first);
            blocking("delete a copy", IO, move || fs::remove_file(gone).unwrap()).await;
            let (_, took) = wait_until("status to drop the deleted copy", AGREE, || {
                let want = expected[1..].to_vec();
                let listed = listed(&nodes);
                async move {
                    let now = listed.await;
                    if now == want {
                        Ok(())
                    } else {
                        Err(format!("{now:?}"))
                    }
                }
            })
            .await;
            eprintln!("a deleted copy left the status after {took:?}");
        }

        // Whole-file overwrites of existing files, and new files of one
        // name, from both mounts at once; ten of each.
        let docs: Vec<String> = (0..10).map(|r| format!("doc{r}.txt")).collect();
        seed(&mounts, "doc", &docs, b"first\n").await;
        let acked: Vec<String> = at_once(&mounts, |i, m, gate| {
            let mut how = fs::OpenOptions::new();
            how.write(true).create(true).truncate(true);
            let mut ok = Vec::new();
            for r in 0..10 {
                for what in ["doc", "new"] {
                    let line = format!("{what} {r} from mount {}\n", i + 1);
                    let path = m.join(format!("{what}{r}.txt"));
                    if write_then_meet(&path, &how, &line, gate) {
                        ok.push(line);
                    }
                }
            }
            ok
        })
        .await
        .concat();
        eprintln!("{} of 40 overwrites and creates acknowledged", acked.len());
        assert!(acked.len() >= 20, "most writes succeed: {acked:?}");
        for what in ["doc", "new"] {
            let mine: Vec<String> = acked
                .iter()
                .filter(|l| l.starts_with(what))
                .cloned()
                .collect();
            let files = agreed(&mounts, what, |f| all_lines_in(f, &mine)).await;
            for r in 0..10 {
                assert!(files.contains_key(&format!("{what}{r}.txt")), "{what}{r}");
            }
        }
        drop(nodes);
    })
    .await;
}

/// 20 appends from each of two mounts to one file, each pair written at
/// the same time and then both `fsync`ed at once, so that the two mounts'
/// durable compare-and-swaps of the file's record race: every line whose
/// `fsync` and close returned 0 is in the file or in one of its conflict
/// copies, on both mounts.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_fsynced_appends_from_two_mounts_lose_nothing_acknowledged() {
    with_timeout(Duration::from_secs(300), async {
        let (_keys, nodes, mounts) = two_mounts(BLOCK_SYNCED).await;
        race_appends(&mounts, "synced", write_meet_then_sync).await;
        drop(nodes);
    })
    .await;
}
