//! Two sides of a partition change one tree, then their record versions
//! meet in one store, as repair brings them together after the heal.

use super::mem_store::MemStore;
use super::object::{Attrs, Body, Kind};
use super::*;
use crate::id::Id;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A side of the partition: its own store, counted as its own writer.
fn side(writer: u64, from: Option<&MemStore>) -> Arc<Vault<MemStore>> {
    let store = MemStore {
        writer,
        ..Default::default()
    };
    if let Some(f) = from {
        copy_into(f, &store);
    }
    Vault::new(Arc::new(store), Identity::from_secret([7; 32]))
}

/// What repair does when the sides meet: every block, and every record
/// version offered with no expectation (a store keeps concurrent ones).
fn copy_into(from: &MemStore, to: &MemStore) {
    add_missing(&from.blocks, &to.blocks);
    add_missing(&from.claims, &to.claims);
    let versions: Vec<_> = from
        .records
        .lock()
        .unwrap()
        .values()
        .flatten()
        .cloned()
        .collect();
    futures::executor::block_on(async {
        for v in versions {
            let _ = to.put_record(v, None, Durability::Later).await;
        }
    });
}

/// Copies into `to` the entries of `from` it lacks.
fn add_missing<V: Clone>(from: &Mutex<HashMap<Id, V>>, to: &Mutex<HashMap<Id, V>>) {
    let from = from.lock().unwrap();
    let mut to = to.lock().unwrap();
    for (k, v) in from.iter() {
        to.entry(*k).or_insert_with(|| v.clone());
    }
}

/// Writes `data` to root file `name` (made if missing) and stores it.
pub(crate) async fn write<S: BlockStore>(v: &Arc<Vault<S>>, name: &[u8], data: &[u8]) {
    let root = v.root();
    let link = match v.load(&root).await.unwrap().obj.body {
        Body::Dir { entries } if entries.contains_key(name) => entries[name].link.clone(),
        _ => {
            v.create(&root, name, Kind::File, Attrs::new(0o644, 0, 0), None)
                .await
                .unwrap()
                .0
        }
    };
    let mut f = OpenFile::open(v, link).await.unwrap();
    f.truncate(v, 0).await.unwrap();
    f.write(v, 0, data).await.unwrap();
    f.flush(v, Durability::Later).await.unwrap();
    v.settle_dir(&root).await;
}

async fn names(v: &Arc<Vault<MemStore>>) -> Vec<String> {
    match v.load(&v.root()).await.unwrap().obj.body {
        Body::Dir { entries } => entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect(),
        _ => panic!("root is not a directory"),
    }
}

async fn read(v: &Arc<Vault<MemStore>>, name: &str) -> Vec<u8> {
    let (link, _) = v.resolve(name).await.unwrap();
    let mut f = OpenFile::open(v, link).await.unwrap();
    let n = f.size() as usize;
    f.read(v, 0, n).await.unwrap()
}

#[tokio::test]
async fn both_sides_of_a_partition_are_kept_after_the_heal() {
    let a = side(1, None);
    for (n, d) in [
        (&b"shared.txt"[..], &b"base"[..]),
        (b"gone.txt", b"deleted on A"),
        (b"moved.txt", b"renamed on B"),
    ] {
        write(&a, n, d).await;
    }
    // The partition: B starts from what A has.
    let b = side(2, Some(&a.store));
    write(&a, b"a-only.txt", b"made on A").await;
    a.remove(&a.root(), b"gone.txt", false, Some("/gone.txt"))
        .await
        .unwrap();
    write(&a, b"shared.txt", b"edit on A").await;
    a.settle_dir(&a.root()).await;
    write(&b, b"b-only.txt", b"made on B").await;
    b.rename(&b.root(), b"moved.txt", &b.root(), b"moved2.txt", None)
        .await
        .unwrap();
    write(&b, b"shared.txt", b"edit on B, longer").await;
    b.settle_dir(&b.root()).await;
    // The heal: B's versions reach A's store; a fresh mount reads it.
    copy_into(&b.store, &a.store);
    let healed = side(1, Some(&a.store));
    let listed = names(&healed).await;
    for want in ["a-only.txt", "b-only.txt", "moved2.txt", "shared.txt"] {
        assert!(listed.contains(&want.to_string()), "{want} in {listed:?}");
    }
    assert!(!listed.contains(&"gone.txt".to_string()), "{listed:?}");
    assert!(!listed.contains(&"moved.txt".to_string()), "{listed:?}");
    assert_eq!(read(&healed, "a-only.txt").await, b"made on A");
    assert_eq!(read(&healed, "b-only.txt").await, b"made on B");
    assert_eq!(read(&healed, "moved2.txt").await, b"renamed on B");
    // Both edits of shared.txt: one keeps the name, the other becomes a
    // conflict copy once the resolver has run.
    healed.settle_merges().await;
    let copies: Vec<String> = names(&healed)
        .await
        .into_iter()
        .filter(|n| n.starts_with("shared.conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", names(&healed).await);
    let mut seen = vec![
        read(&healed, "shared.txt").await,
        read(&healed, &copies[0]).await,
    ];
    seen.sort();
    assert_eq!(
        seen,
        vec![b"edit on A".to_vec(), b"edit on B, longer".to_vec()]
    );
    // Resolved: one version of each record is left, and a change now
    // saves without a conflict.
    let multi = healed
        .store
        .records
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.len() > 1)
        .count();
    assert_eq!(multi, 0, "records with concurrent versions left");
    write(&healed, b"after.txt", b"after the heal").await;
    assert!(names(&healed).await.contains(&"after.txt".to_string()));
}

/// Records of `store` holding concurrent versions.
fn with_siblings(store: &MemStore) -> usize {
    store
        .records
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.len() > 1)
        .count()
}

#[tokio::test]
async fn a_merged_directory_is_stored_once_read() {
    let a = side(1, None);
    write(&a, b"base.txt", b"base").await;
    let b = side(2, Some(&a.store));
    write(&a, b"from-a.txt", b"a").await;
    write(&b, b"from-b.txt", b"b").await;
    b.remove(&b.root(), b"base.txt", false, Some("/base.txt"))
        .await
        .unwrap();
    b.settle_dir(&b.root()).await;
    copy_into(&b.store, &a.store);
    assert_eq!(with_siblings(&a.store), 1, "the root, both sides");
    let healed = side(1, Some(&a.store));
    assert_eq!(names(&healed).await, ["from-a.txt", "from-b.txt"]);
    // Read once, the merge is stored: no concurrent versions are left,
    // and a reader that does not merge sees the same.
    healed.settle_merges().await;
    assert_eq!(with_siblings(&healed.store), 0);
    let later = side(3, Some(&healed.store));
    assert_eq!(names(&later).await, ["from-a.txt", "from-b.txt"]);
}

#[tokio::test]
async fn a_thousand_saves_from_one_machine_make_no_conflict() {
    let v = side(1, None);
    write(&v, b"log.txt", b"").await;
    let (link, _) = v.resolve("log.txt").await.unwrap();
    let mut want = Vec::new();
    for i in 0..1000 {
        let line = format!("line {i}\n");
        let mut f = OpenFile::open(&v, link.clone()).await.unwrap();
        let end = f.size();
        f.write(&v, end, line.as_bytes()).await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        want.extend_from_slice(line.as_bytes());
    }
    assert_eq!(read(&v, "log.txt").await, want);
    assert_eq!(names(&v).await, ["log.txt"], "no conflict copies");
    assert_eq!(with_siblings(&v.store), 0);
    assert!(v.conflicts.list().is_empty());
}
