//! Process test of offline work: four nodes (r = 4) in a network namespace
//! of the test's own, nodes 1 and 2 mounting the tree of one identity. An
//! nftables rule cuts node 1 off. Its mount keeps working: pinned files
//! read, and writes, renames, deletes and `fsyncdir` go to its journal at
//! local-disk speed. Node 1 is then killed (SIGKILL) and restarted while still cut
//! off: its journal and its mount come back. Meanwhile machine 2 edits one
//! of the same files. After the heal the journal replays, and both mounts
//! show every acknowledged write, the file edited on both sides as the
//! file plus one conflict copy.
//!
//! Needs root, /dev/fuse, `ip` (iproute2), `nsenter` and `nft`.

mod common;

use common::{
    Netns, NodeOpts, addr, blocking, cli_in, ring_consistent_in, ring_in, test_ticket, tree,
    wait_until, with_timeout, write_closed,
};
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

const BLOCK: u8 = 130;
const IO: Duration = Duration::from_secs(90);

/// `peerstore status --json` of the node at `peer`, from inside `ns`.
async fn status(ns: &str, peer: &str) -> Result<serde_json::Value, String> {
    let ticket = test_ticket("127.0.0.1:1");
    let out = cli_in(
        Some(ns),
        &["status", "--json", "--peer", peer],
        &[("PEERSTORE_TICKET", &ticket)],
    )
    .await;
    if !out.status.success() {
        return Err(common::stderr(&out));
    }
    serde_json::from_str(&common::stdout(&out)).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_cut_off_works_from_its_journal_across_a_crash_and_replays_it() {
    with_timeout(Duration::from_secs(600), async {
        let keys = tempfile::tempdir().expect("temp dir");
        let identity = keys.path().join("identity");
        let ns = Netns::new("ps-ow");
        let opts = |i: u8, join: Option<&str>| {
            let me = addr(BLOCK, i);
            let base = if i <= 2 {
                NodeOpts::mounted(&me, join, &identity)
            } else {
                NodeOpts::new(&me, join)
            };
            NodeOpts {
                netns: Some(ns.0.clone()),
                replicas: 4,
                ..base
            }
        };
        let (mut nodes, all) = ring_in(&ns.0, 4, opts).await;
        let ns_name = Some(ns.0.as_str());
        let (a, b) = (all[..1].to_vec(), all[1..].to_vec());
        let mnt_a = nodes[0].mount_dir().to_path_buf();
        let mnt_b = nodes[1].mount_dir().to_path_buf();

        // Before the cut: files both machines see, and a pinned folder.
        let manual: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        {
            let (m, manual) = (mnt_a.clone(), manual.clone());
            blocking("first files", IO, move || {
                write_closed(&m.join("shared.txt"), b"before the cut\n")?;
                write_closed(&m.join("keep.txt"), b"renamed offline\n")?;
                write_closed(&m.join("gone.txt"), b"deleted offline\n")?;
                fs::create_dir(m.join("docs"))?;
                write_closed(&m.join("docs/manual.bin"), &manual)
            })
            .await
            .expect("first files");
        }
        let ticket = test_ticket("127.0.0.1:1");
        let out = cli_in(
            ns_name,
            &["pin", "/docs", "--peer", &a[0]],
            &[("PEERSTORE_TICKET", &ticket)],
        )
        .await;
        assert!(out.status.success(), "pin: {}", common::stderr(&out));
        let s = status(&ns.0, &a[0]).await.expect("status");
        assert_eq!(s["mount"]["pinned"][0], "/docs", "{s}");
        assert!(
            s["mount"]["pinned_bytes"].as_u64().unwrap() >= manual.len() as u64,
            "{s}"
        );
        wait_until(
            "machine 2 to see the first files",
            Duration::from_secs(30),
            || {
                let m = mnt_b.clone();
                async move {
                    let t = blocking("list mount 2", IO, move || tree(&m)).await?;
                    (t.len() == 4)
                        .then_some(())
                        .ok_or(format!("{:?}", t.keys()))
                }
            },
        )
        .await;
        // Node 1 must remember its ring across the crash below.
        let seen = nodes[0].data_dir().join("seen");
        wait_until(
            "node 1 to save the members it saw",
            Duration::from_secs(30),
            || {
                let seen = seen.clone();
                async move {
                    let n = fs::read_to_string(&seen)
                        .unwrap_or_default()
                        .lines()
                        .count();
                    (n >= 3).then_some(()).ok_or(format!("{n} members saved"))
                }
            },
        )
        .await;

        ns.cut(&a, &b);
        let (_, t) = wait_until("node 1 cut off", Duration::from_secs(60), || async {
            ring_consistent_in(ns_name, &b, &b).await?;
            let s = status(&ns.0, &a[0]).await?;
            (s["mount"]["online"] == false)
                .then_some(())
                .ok_or(format!("{}", s["mount"]))
        })
        .await;
        eprintln!("node 1 offline after {t:?}");

        // Offline on machine 1: everything returns at local speed.
        let started = Instant::now();
        let offline_files: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| {
                (
                    format!("offline/f{i}.txt"),
                    format!("offline {i}\n").into_bytes(),
                )
            })
            .chain([("big.bin".to_string(), vec![7u8; 2 << 20])])
            .collect();
        {
            let (m, files) = (mnt_a.clone(), offline_files.clone());
            blocking("offline writes", IO, move || {
                fs::create_dir(m.join("offline"))?;
                for (name, data) in &files {
                    write_closed(&m.join(name), data)?;
                }
                write_closed(&m.join("shared.txt"), b"edit offline\n")?;
                fs::rename(m.join("keep.txt"), m.join("kept.txt"))?;
                fs::remove_file(m.join("gone.txt"))?;
                // What survives a crash is what was fsynced, as on a local
                // disk: a new file's name is stored up to 20 ms after its
                // `close` (README, "Directory changes are written
                // behind"), and the crash below may come sooner.
                fs::File::open(m.join("offline"))?.sync_all()?;
                fs::File::open(&m)?.sync_all()
            })
            .await
            .expect("offline writes return 0");
        }
        let took = started.elapsed();
        eprintln!(
            "offline: 21 files, an edit, a rename, a delete and two fsyncdirs in {took:?}"
        );
        // Local-disk speed (~40 ms here), with room for a loaded machine:
        // nothing waits on the ring.
        assert!(
            took < Duration::from_secs(5),
            "offline writes took {took:?}"
        );
        // The pinned folder reads without the ring.
        {
            let (m, manual) = (mnt_a.clone(), manual.clone());
            let got = blocking("read pinned", IO, move || {
                fs::read(m.join("docs/manual.bin"))
            })
            .await
            .expect("a pinned file reads offline");
            assert!(got == manual, "pinned file differs");
        }
        let s = status(&ns.0, &a[0]).await.expect("status offline");
        let journal = s["mount"]["journal"]["entries"].as_u64().unwrap();
        assert!(journal > 0, "{s}");
        eprintln!("journal: {}", s["mount"]["journal"]);

        // Machine 2 edits the same file and adds one meanwhile.
        {
            let m = mnt_b.clone();
            blocking("writes on machine 2", IO, move || {
                write_closed(&m.join("shared.txt"), b"edit on machine 2\n")?;
                write_closed(&m.join("from-2.txt"), b"made on machine 2\n")
            })
            .await
            .expect("machine 2 writes");
        }

        // Machine 1 crashes and starts again, still cut off: its journal
        // and its mount come back.
        nodes[0].kill_9();
        let n1 = nodes.remove(0);
        let n1 = n1.restart(Some(&b[0])).await;
        nodes.insert(0, n1);
        let mnt_a = nodes[0].mount_dir().to_path_buf();
        {
            let (m, files) = (mnt_a.clone(), offline_files.clone());
            blocking("read the journal after the restart", IO, move || {
                let t = tree(&m)?;
                for (name, data) in &files {
                    if t.get(name) != Some(data) {
                        let names: Vec<&String> = t.keys().collect();
                        let list = |d: &std::path::Path| -> String {
                            match fs::read_dir(d) {
                                Ok(r) => format!(
                                    "{:?}",
                                    r.filter_map(|e| e.ok())
                                        .map(|e| e.file_name())
                                        .collect::<Vec<_>>()
                                ),
                                Err(e) => e.to_string(),
                            }
                        };
                        return Err(format!(
                            "{name} lost in the restart; the files: {names:?}; the root: {}; offline/: {}",
                            list(&m),
                            list(&m.join("offline"))
                        ));
                    }
                }
                if t.get("shared.txt").map(Vec::as_slice) != Some(b"edit offline\n") {
                    return Err("the offline edit was lost in the restart".into());
                }
                Ok(())
            })
            .await
            .expect("offline writes survive the crash");
        }
        let s = status(&ns.0, &a[0]).await.expect("status after restart");
        assert_eq!(s["mount"]["online"], false, "{s}");
        assert!(
            s["mount"]["journal"]["entries"].as_u64().unwrap() > 0,
            "{s}"
        );

        ns.heal();
        let (_, t) = wait_until("one ring of four", Duration::from_secs(90), || {
            ring_consistent_in(ns_name, &all, &all)
        })
        .await;
        eprintln!("healed: one ring after {t:?}");
        let mut want = offline_files.clone();
        want.push(("kept.txt".into(), b"renamed offline\n".to_vec()));
        want.push(("from-2.txt".into(), b"made on machine 2\n".to_vec()));
        want.push(("docs/manual.bin".into(), manual.clone()));
        let check = |t: &BTreeMap<String, Vec<u8>>| -> Result<(), String> {
            for (name, data) in &want {
                match t.get(name) {
                    Some(d) if d == data => {}
                    Some(_) => return Err(format!("{name} has other content")),
                    None => return Err(format!("{name} missing")),
                }
            }
            for g in ["keep.txt", "gone.txt"] {
                if t.contains_key(g) {
                    return Err(format!("{g} is still there"));
                }
            }
            let copies: Vec<&String> = t.keys().filter(|n| n.contains(".conflict-")).collect();
            if copies.len() != 1 {
                return Err(format!("{} conflict copies, 1 expected", copies.len()));
            }
            let mut edits = vec![t.get("shared.txt").cloned(), t.get(copies[0]).cloned()];
            edits.sort();
            if edits
                != [
                    Some(b"edit offline\n".to_vec()),
                    Some(b"edit on machine 2\n".to_vec()),
                ]
            {
                return Err(format!("shared.txt and its copy: {edits:?}"));
            }
            Ok(())
        };
        let (listed, t) = wait_until(
            "both mounts to show every acknowledged write",
            Duration::from_secs(120),
            || {
                let (x, y) = (mnt_a.clone(), mnt_b.clone());
                let listing = blocking("list both mounts", IO, move || {
                    Ok::<_, String>((tree(&x)?, tree(&y)?))
                });
                let check = &check;
                async move {
                    let (x, y) = listing.await?;
                    check(&x).map_err(|e| format!("mount 1: {e}"))?;
                    check(&y).map_err(|e| format!("mount 2: {e}"))?;
                    (x == y).then_some(x).ok_or("the mounts differ".into())
                }
            },
        )
        .await;
        eprintln!(
            "after the heal: both mounts agree after {t:?}: {:?}",
            listed.keys().collect::<Vec<_>>()
        );
        let s = status(&ns.0, &a[0]).await.expect("status after the heal");
        assert_eq!(s["mount"]["online"], true, "{s}");
        assert_eq!(s["mount"]["journal"]["entries"], 0, "{s}");
        drop(nodes);
    })
    .await;
}
