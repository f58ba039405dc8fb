//! Process-level ring tests: real `peerstore node` processes on loopback,
//! driven through the command-line client. Blocks survive two simultaneous
//! crashes and a graceful leave, repair restores r copies, a crashed node
//! restarts at its old ring position, and lookups agree from every node.

mod common;

use common::{
    NodeGuard, NodeOpts, addr, cli, get_file, put_file, ring_consistent, ring_members, stderr,
    stdout,
};
use futures::stream::{self, StreamExt};
use peerstore::id::Id;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loopback blocks of the tests in this file.
const BLOCK_SCENARIO: u8 = 101;
const BLOCK_LOOKUP: u8 = 102;

const MIB: usize = 1 << 20;
const BLOCKS: usize = 200;
const R: u64 = 3;
/// CLI commands run at once.
const PARALLEL: usize = 8;

/// Starts `n` nodes in block `block`: the first creates the ring, the others
/// join it one after the other.
async fn start_ring(block: u8, n: u8) -> Vec<NodeGuard> {
    let first = addr(block, 1);
    let mut nodes = vec![NodeGuard::start(NodeOpts::new(&first, None)).await];
    for i in 2..=n {
        nodes.push(NodeGuard::start(NodeOpts::new(&addr(block, i), Some(&first))).await);
    }
    nodes
}

/// Waits until the walk from every node in `live` shows exactly them in one
/// consistent cycle, and `blocks_ok` holds for the per-member block counts.
async fn wait_ring(
    what: &str,
    live: &[&NodeGuard],
    limit: Duration,
    blocks_ok: impl Fn(&[u64]) -> bool,
) -> Vec<common::Member> {
    let addrs: Vec<String> = live.iter().map(|n| n.addr.clone()).collect();
    let (members, took) = common::wait_until(what, limit, || {
        let addrs = addrs.clone();
        let blocks_ok = &blocks_ok;
        async move {
            let ms = ring_consistent(&addrs, &addrs).await?;
            let counts: Vec<u64> = ms.iter().map(|m| m.blocks).collect();
            if blocks_ok(&counts) {
                Ok(ms)
            } else {
                Err(format!("block counts {counts:?}"))
            }
        }
    })
    .await;
    eprintln!("{what}: {took:?}");
    members
}

/// Reads every block through `peers` (round robin) and compares it byte for
/// byte; returns the keys that failed, with why.
async fn read_all(peers: &[String], blocks: &BTreeMap<String, Vec<u8>>, dir: &Path) -> Vec<String> {
    let jobs = blocks.iter().enumerate().map(|(i, (key, data))| {
        let peer = peers[i % peers.len()].clone();
        let out = dir.join(format!("{i}.out"));
        async move {
            let _ = std::fs::remove_file(&out);
            match get_file(&peer, key, &out).await {
                Ok(got) if got == *data => None,
                Ok(got) => Some(format!(
                    "{key} via {peer}: {} bytes differ from the {} put",
                    got.len(),
                    data.len()
                )),
                Err(e) => Some(format!("{key} via {peer}: {e}")),
            }
        }
    });
    stream::iter(jobs)
        .buffer_unordered(PARALLEL)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn assert_all_read(what: &str, failed: Vec<String>) {
    assert!(
        failed.is_empty(),
        "{what}: {} of {BLOCKS} blocks not read back byte-exact:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The true owner of `key` among `ids` (hex): the first ID at or after it
/// clockwise.
fn successor_of(key: &str, ids: &[String]) -> String {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .find(|id| id.as_str() >= key)
        .or(sorted.first())
        .map(|s| s.to_string())
        .expect("empty ring")
}

/// Checks on disk that every block is held by exactly its replica set: the
/// owner (true successor of the key) and the next r − 1 members in ring
/// order, where `members` is the ring in walk order and `nodes` the guards
/// whose data directories to inspect.
fn check_placement(
    members: &[common::Member],
    nodes: &[&NodeGuard],
    blocks: &BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    for key in blocks.keys() {
        let owner = successor_of(key, &ids);
        let at = ids
            .iter()
            .position(|i| *i == owner)
            .expect("owner is a member");
        let want: HashSet<&String> = (0..(R as usize).min(ids.len()))
            .map(|k| &ids[(at + k) % ids.len()])
            .collect();
        let have: HashSet<&String> = nodes
            .iter()
            .filter(|n| common::holds_block(n.data_dir(), key))
            .map(|n| &n.id)
            .collect();
        if have != want {
            return Err(format!(
                "block {key} is on {have:?}, its replica set is {want:?}"
            ));
        }
    }
    Ok(())
}

/// What `lookup` prints: owner ID, owner address, hops.
type Answer = (String, String, u32);

/// `lookup --peer PEER KEY`, parsed.
async fn lookup(peer: &str, key: &str) -> Result<Answer, String> {
    let o = cli(&["lookup", "--peer", peer, key]).await;
    if !o.status.success() {
        return Err(format!(
            "lookup {key} via {peer}: {}: {}",
            o.status,
            stderr(&o).trim()
        ));
    }
    let text = stdout(&o);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .ok_or_else(|| format!("lookup via {peer}: no {name:?} line in {text:?}"))
    };
    let hops = field("hops ")?
        .parse::<u32>()
        .map_err(|e| format!("lookup via {peer}: bad hop count: {e}"))?;
    Ok((field("owner ")?, field("address ")?, hops))
}

/// Sizes of the test blocks: log-uniform over 1 B … 1 MiB, plus the edges
/// (1 B and several of exactly 1 MiB).
fn sizes(rng: &mut StdRng) -> Vec<usize> {
    let mut v = vec![1, MIB, MIB, MIB, MIB, MIB];
    while v.len() < BLOCKS {
        let exp: f64 = rng.gen_range(0.0..=20.0);
        v.push((2f64.powf(exp) as usize).clamp(1, MIB));
    }
    v
}

/// The scenario: 5 nodes, r = 3, 200 blocks; two crash at once, a
/// third leaves gracefully, a crashed one restarts on its old data.
#[tokio::test(flavor = "multi_thread")]
async fn ring_survives_crashes_leave_and_restart() {
    common::with_timeout(Duration::from_secs(180), async {
        let t0 = Instant::now();
        let mut rng =
            StdRng::seed_from_u64(common::seed("ring_survives_crashes_leave_and_restart"));
        let files = tempfile::tempdir().unwrap();

        // 1. Five nodes, one consistent ring seen from each.
        let mut nodes = start_ring(BLOCK_SCENARIO, 5).await;
        let all: Vec<&NodeGuard> = nodes.iter().collect();
        wait_ring("5-node ring", &all, Duration::from_secs(30), |_| true).await;
        let ids: HashSet<&String> = nodes.iter().map(|n| &n.id).collect();
        assert_eq!(ids.len(), 5, "node IDs are not distinct");
        eprintln!("[{:?}] ring of 5 formed", t0.elapsed());

        // 2. 200 blocks through the five nodes; the printed key is BLAKE3.
        let mut blocks: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut puts = Vec::new();
        for (i, size) in sizes(&mut rng).into_iter().enumerate() {
            let data = loop {
                let d = common::random_bytes(&mut rng, size);
                if !blocks.contains_key(&Id::of_block(&d).to_hex()) {
                    break d;
                }
            };
            let key = Id::of_block(&data).to_hex();
            let path = files.path().join(format!("{i}.in"));
            std::fs::write(&path, &data).unwrap();
            puts.push((nodes[i % 5].addr.clone(), path, key.clone()));
            blocks.insert(key, data);
        }
        assert_eq!(blocks.len(), BLOCKS);
        assert_eq!(blocks.values().filter(|d| d.len() == MIB).count(), 5);
        let results: Vec<(String, Result<String, String>)> = stream::iter(puts)
            .map(|(peer, path, key)| async move { (key, put_file(&peer, &path).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (key, r) in results {
            assert_eq!(r, Ok(key.clone()), "block put of {key}");
        }
        let too_big = files.path().join("too-big");
        std::fs::write(&too_big, vec![7u8; MIB + 1]).unwrap();
        let o = cli(&[
            "block",
            "put",
            "--peer",
            &nodes[2].addr,
            too_big.to_str().unwrap(),
        ])
        .await;
        assert!(
            !o.status.success(),
            "a block of 1 MiB + 1 was accepted: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("1048577 bytes is larger than the 1 MiB block limit"),
            "unclear refusal of an oversized block: {}",
            stderr(&o)
        );
        eprintln!("[{:?}] {BLOCKS} blocks stored", t0.elapsed());

        // 3. Three copies of each, exactly.
        let all: Vec<&NodeGuard> = nodes.iter().collect();
        let members = wait_ring(
            "600 copies on 5 nodes",
            &all,
            Duration::from_secs(60),
            |c| c.iter().sum::<u64>() == R * BLOCKS as u64,
        )
        .await;
        // Not just 600 in all: each block on exactly its owner and the
        // owner's two successors.
        check_placement(&members, &all, &blocks).unwrap();
        eprintln!("[{:?}] 600 copies", t0.elapsed());

        // 4. Two nodes crash at once; every block is still readable.
        nodes[0].kill_9();
        nodes[3].kill_9();
        let survivors = [1, 2, 4];
        let peers: Vec<String> = survivors.iter().map(|&i| nodes[i].addr.clone()).collect();
        assert_all_read(
            "after two crashes",
            read_all(&peers, &blocks, files.path()).await,
        );
        eprintln!("[{:?}] all read after two SIGKILLs", t0.elapsed());

        // 5. Repair brings every block back to 3 copies on the 3 survivors.
        let live: Vec<&NodeGuard> = survivors.iter().map(|&i| &nodes[i]).collect();
        wait_ring(
            "3 survivors holding 200 blocks each",
            &live,
            Duration::from_secs(60),
            |c| c.iter().all(|&b| b == BLOCKS as u64),
        )
        .await;
        eprintln!("[{:?}] repaired to 3 copies", t0.elapsed());

        // 6. A graceful leave: exit 0, nothing lost, min(r, N) = 2 copies.
        let status = nodes[1].terminate().await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERMed node exited with {status}"
        );
        let log = nodes[1].log();
        assert!(log.contains("SIGTERM: leaving the ring"), "no leave logged");
        assert!(
            log.contains("left the ring; handed over"),
            "no hand-off logged"
        );
        assert!(
            !log.contains("ring members seen"),
            "the members seen were not saved at the leave"
        );
        let peers: Vec<String> = [2, 4].iter().map(|&i| nodes[i].addr.clone()).collect();
        assert_all_read(
            "after a graceful leave",
            read_all(&peers, &blocks, files.path()).await,
        );
        let live: Vec<&NodeGuard> = [2, 4].iter().map(|&i| &nodes[i]).collect();
        wait_ring(
            "2 members holding 200 blocks each",
            &live,
            Duration::from_secs(60),
            |c| c.iter().all(|&b| b == BLOCKS as u64),
        )
        .await;
        eprintln!("[{:?}] graceful leave done", t0.elapsed());

        // 7. The first crashed node restarts on its data and address.
        let old_id = nodes[0].id.clone();
        let dead = nodes.remove(0);
        let via = nodes[1].addr.clone(); // old index 2
        let restarted = dead.restart(Some(&via)).await;
        assert_eq!(
            restarted.id, old_id,
            "restarted node came back with another ID"
        );
        assert_eq!(restarted.addr, addr(BLOCK_SCENARIO, 1));
        nodes.insert(0, restarted);
        let live: Vec<&NodeGuard> = [0, 2, 4].iter().map(|&i| &nodes[i]).collect();
        let members = wait_ring(
            "3-member ring after restart",
            &live,
            Duration::from_secs(30),
            |_| true,
        )
        .await;
        let member_ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        assert!(member_ids.contains(&old_id));
        let me = nodes[0].addr.clone();
        for key in blocks.keys().take(20) {
            let (owner, address, hops) = lookup(&me, key).await.unwrap();
            assert_eq!(
                owner,
                successor_of(key, &member_ids),
                "lookup of {key} via the restarted node"
            );
            let m = members
                .iter()
                .find(|m| m.id == owner)
                .expect("owner is a member");
            assert_eq!(address, m.addr, "owner address of {key}");
            assert!(hops < 10, "{hops} hops in a ring of 3");
        }
        assert_all_read(
            "through the restarted node",
            read_all(&[me], &blocks, files.path()).await,
        );
        wait_ring(
            "3 members holding 200 blocks each after restart",
            &live,
            Duration::from_secs(60),
            |c| c.iter().all(|&b| b == BLOCKS as u64),
        )
        .await;
        eprintln!("[{:?}] restart done", t0.elapsed());
    })
    .await;
}

/// Lookups of 50 random keys give the same, correct owner from every node;
/// reading an absent block fails with exit code 1 and "not found".
#[tokio::test(flavor = "multi_thread")]
async fn lookups_agree_and_absent_blocks_are_not_found() {
    common::with_timeout(Duration::from_secs(120), async {
        let mut rng = StdRng::seed_from_u64(common::seed(
            "lookups_agree_and_absent_blocks_are_not_found",
        ));
        let nodes = start_ring(BLOCK_LOOKUP, 4).await;
        let all: Vec<&NodeGuard> = nodes.iter().collect();
        let members = wait_ring("4-node ring", &all, Duration::from_secs(30), |_| true).await;
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();

        let keys: Vec<String> = (0..50).map(|_| Id(rng.r#gen()).to_hex()).collect();
        let jobs = keys
            .iter()
            .flat_map(|k| nodes.iter().map(move |n| (k.clone(), n.addr.clone())));
        let answers: Vec<(String, String, Result<Answer, String>)> = stream::iter(jobs)
            .map(|(k, p)| async move {
                let r = lookup(&p, &k).await;
                (k, p, r)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        assert_eq!(answers.len(), 200);
        let mut max_hops = 0;
        for (key, peer, r) in answers {
            let (owner, address, hops) = r.unwrap();
            assert_eq!(owner, successor_of(&key, &ids), "owner of {key} via {peer}");
            let m = members.iter().find(|m| m.id == owner).unwrap();
            assert_eq!(address, m.addr, "owner address of {key} via {peer}");
            max_hops = max_hops.max(hops);
        }
        assert!(max_hops < 10, "{max_hops} hops in a ring of 4");

        let absent = Id(rng.r#gen()).to_hex();
        for n in &nodes {
            let o = cli(&["block", "get", "--peer", &n.addr, &absent]).await;
            assert_eq!(
                o.status.code(),
                Some(1),
                "block get of an absent key via {}",
                n.addr
            );
            assert!(
                stderr(&o).contains(&format!("block {absent} not found")),
                "unclear message: {}",
                stderr(&o)
            );
            assert!(o.stdout.is_empty(), "output for an absent block");
        }
        // A malformed key is refused before any call.
        let o = cli(&["block", "get", "--peer", &nodes[0].addr, "xyz"]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("expected 64 hex digits"),
            "{}",
            stderr(&o)
        );
        // Every member still counts zero blocks: nothing was created.
        let ms = ring_members(&nodes[1].addr).await.unwrap();
        assert!(ms.iter().all(|m| m.blocks == 0), "{ms:?}");
    })
    .await;
}
