//! Process test of writes on both sides of a network partition: five
//! nodes (r = 5) in a network namespace of the test's own, nodes 1 and 4
//! mounting the tree of one identity. An nftables rule cuts nodes 1–3 from 4–5;
//! each mount then creates, edits, renames and deletes files on its side.
//! Once the rule is gone the rings merge, repair brings both sides'
//! versions of each record together, and every write whose `close` (or
//! `rename`, `unlink`) returned 0 must show on both mounts: new files on
//! either side, the edit of one file from both sides (the name keeps one,
//! a conflict copy the other), a rename made on one side, a delete made
//! on the other.
//!
//! Needs root, /dev/fuse, `ip` (iproute2), `nsenter` and `nft`.

mod common;

use common::{
    Netns, NodeOpts, addr, blocking, ring_consistent_in, ring_in, tree, wait_until, with_timeout,
    write_closed,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BLOCK: u8 = 117;
/// Deadline of one file operation (a write whose replicas are all on the
/// other side fails after the ring's own deadline, well within it).
const IO: Duration = Duration::from_secs(90);

/// Runs one file operation on a helper thread; whether it returned 0.
async fn acked(what: &str, op: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> bool {
    let r = blocking(what, IO, op).await;
    if let Err(e) = &r {
        eprintln!("{what}: {e} (not acknowledged: need not survive)");
    }
    r.is_ok()
}

/// What one side wrote while cut off, and which of it was acknowledged.
#[derive(Default)]
struct Side {
    /// Files written (relative path, content) whose close returned 0.
    files: Vec<(String, Vec<u8>)>,
    /// The edit of `shared.txt`, if acknowledged.
    edit: Option<Vec<u8>>,
}

async fn write_side(mount: &Path, tag: &str, big: bool) -> Side {
    let mut side = Side::default();
    let put = |rel: String, data: Vec<u8>| {
        let path = mount.join(&rel);
        let what = format!("write {rel} on side {tag}");
        async move {
            let d = data.clone();
            acked(&what, move || write_closed(&path, &d))
                .await
                .then_some((rel, data))
        }
    };
    if let Some(f) = put(format!("{tag}-only.txt"), format!("made on {tag}\n").into()).await {
        side.files.push(f);
    }
    let dir = mount.join(format!("{tag}dir"));
    if acked(&format!("mkdir {tag}dir"), move || fs::create_dir(&dir)).await {
        for i in 0..5 {
            let data = format!("{tag} file {i}\n").into_bytes();
            if let Some(f) = put(format!("{tag}dir/f{i}.txt"), data).await {
                side.files.push(f);
            }
        }
        if big {
            let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
            if let Some(f) = put(format!("{tag}dir/big.bin"), data).await {
                side.files.push(f);
            }
        }
    }
    let edit = format!("edit on {tag}\n").into_bytes();
    let (path, e) = (mount.join("shared.txt"), edit.clone());
    if acked(&format!("edit shared.txt on {tag}"), move || {
        write_closed(&path, &e)
    })
    .await
    {
        side.edit = Some(edit);
    }
    side
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_on_both_sides_of_a_partition_are_all_kept() {
    with_timeout(Duration::from_secs(600), async {
        let keys = tempfile::tempdir().expect("temp dir");
        let identity = keys.path().join("identity");
        let ns = Netns::new("ps-pw");
        let opts = |i: u8, join: Option<&str>| {
            let me = addr(BLOCK, i);
            let base = if i == 1 || i == 4 {
                NodeOpts::mounted(&me, join, &identity)
            } else {
                NodeOpts::new(&me, join)
            };
            // r = 5: before the cut every node holds every record, so
            // each side can read (and change) the whole tree. With r = 3
            // a side that holds no copy of a directory cannot change it
            // (EIO: no offline journal yet).
            NodeOpts {
                netns: Some(ns.0.clone()),
                replicas: 5,
                ..base
            }
        };
        let (nodes, all) = ring_in(&ns.0, 5, opts).await;
        let (a, b) = (all[..3].to_vec(), all[3..].to_vec());
        let ns_name = Some(ns.0.as_str());
        let mounts: [PathBuf; 2] = [
            nodes[0].mount_dir().to_path_buf(),
            nodes[3].mount_dir().to_path_buf(),
        ];

        // Before the cut: three files both mounts see.
        for (name, data) in [
            ("shared.txt", "before the cut\n"),
            ("moved.txt", "renamed on B\n"),
            ("gone.txt", "deleted on A\n"),
        ] {
            let path = mounts[0].join(name);
            assert!(acked(name, move || write_closed(&path, data.as_bytes())).await);
        }
        wait_until("mount 4 to see the first files", Duration::from_secs(30), || {
            let m = mounts[1].clone();
            async move {
                let t = blocking("list mount 4", IO, move || tree(&m)).await?;
                (t.len() == 3 && t["shared.txt"] == b"before the cut\n")
                    .then_some(())
                    .ok_or(format!("{:?}", t.keys().collect::<Vec<_>>()))
            }
        })
        .await;

        ns.cut(&a, &b);
        let (_, t) = wait_until("each side a ring of its own", Duration::from_secs(60), || async {
            ring_consistent_in(ns_name, &a, &a).await?;
            ring_consistent_in(ns_name, &b, &b).await
        })
        .await;
        eprintln!("cut: rings of 3 and 2 after {t:?}");

        let side_a = write_side(&mounts[0], "a", false).await;
        let gone = mounts[0].join("gone.txt");
        let a_deleted = acked("rm gone.txt on A", move || fs::remove_file(gone)).await;
        let side_b = write_side(&mounts[1], "b", true).await;
        let (from, to) = (mounts[1].join("moved.txt"), mounts[1].join("moved2.txt"));
        let b_renamed = acked("mv moved.txt on B", move || fs::rename(from, to)).await;
        let acked_count = side_a.files.len() + side_b.files.len();
        eprintln!(
            "while cut: {} files on A, {} on B acknowledged; edits A {} B {}; rm {a_deleted}, mv {b_renamed}",
            side_a.files.len(),
            side_b.files.len(),
            side_a.edit.is_some(),
            side_b.edit.is_some()
        );
        assert!(
            !side_a.files.is_empty() && !side_b.files.is_empty(),
            "each side must take some writes while cut"
        );

        ns.heal();
        let (_, t) = wait_until("one ring of five", Duration::from_secs(60), || {
            ring_consistent_in(ns_name, &all, &all)
        })
        .await;
        eprintln!("healed: one ring of five after {t:?}");

        let mut want: Vec<(String, Vec<u8>)> = side_a.files.clone();
        want.extend(side_b.files.iter().cloned());
        let edits: Vec<Vec<u8>> = [&side_a.edit, &side_b.edit]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let mut gone_names: Vec<String> = Vec::new();
        if a_deleted {
            gone_names.push("gone.txt".into());
        }
        if b_renamed {
            gone_names.push("moved.txt".into());
            want.push(("moved2.txt".into(), b"renamed on B\n".to_vec()));
        }
        let check = |t: &BTreeMap<String, Vec<u8>>| -> Result<(), String> {
            for (name, data) in &want {
                match t.get(name) {
                    Some(d) if d == data => {}
                    Some(_) => return Err(format!("{name} has other content")),
                    None => return Err(format!("{name} missing")),
                }
            }
            for g in &gone_names {
                if t.contains_key(g) {
                    return Err(format!("{g} is still there"));
                }
            }
            // Changes to different files make no conflict copies; the
            // two edits of one file make one.
            let copies = t.keys().filter(|n| n.contains(".conflict-")).count();
            let want_copies = usize::from(edits.len() == 2);
            if copies != want_copies {
                return Err(format!("{copies} conflict copies, {want_copies} expected"));
            }
            // Each acknowledged edit of shared.txt is the file or a copy.
            let versions: Vec<&Vec<u8>> = t
                .iter()
                .filter(|(n, _)| *n == "shared.txt" || n.starts_with("shared.conflict-"))
                .map(|(_, d)| d)
                .collect();
            for e in &edits {
                if !versions.contains(&e) {
                    return Err(format!(
                        "edit {:?} of shared.txt missing ({} versions)",
                        String::from_utf8_lossy(e),
                        versions.len()
                    ));
                }
            }
            Ok(())
        };
        let (listed, t) = wait_until(
            "both mounts to show every acknowledged write",
            Duration::from_secs(120),
            || {
                let m = mounts.clone();
                let listing = blocking("list both mounts", IO, move || {
                    Ok::<_, String>((tree(&m[0])?, tree(&m[1])?))
                });
                let check = &check;
                async move {
                    let (x, y) = listing.await?;
                    check(&x).map_err(|e| format!("mount 1: {e}"))?;
                    check(&y).map_err(|e| format!("mount 4: {e}"))?;
                    if x != y {
                        return Err("the mounts differ".into());
                    }
                    Ok(x)
                }
            },
        )
        .await;
        eprintln!(
            "after the heal: {acked_count} acknowledged files and {} edits on both mounts after {t:?}: {:?}",
            edits.len(),
            listed.keys().collect::<Vec<_>>()
        );
        drop(nodes);
    })
    .await;
}
