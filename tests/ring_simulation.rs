//! Deterministic simulation of the chord state machine at scale: 256 nodes
//! join, then churn (joins, graceful leaves, crashes, message loss and delay),
//! then the ring invariants of DESIGN.md are checked after stabilization.
//! Seeds come from `PEERSTORE_SIM_SEEDS` (comma-separated) or a fixed list; a
//! failing seed is printed so the run can be replayed exactly.

use peerstore::id::Id;
use peerstore::sim::{Sim, SimConfig};
use std::collections::BTreeSet;

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("PEERSTORE_SIM_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// Builds a ring of `n` nodes joining one every `gap` ms, stores `keys` keys,
/// lets it settle, and returns it with the keys.
fn build(seed: u64, n: usize, keys: u64) -> (Sim, BTreeSet<Id>) {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.create_first();
    for _ in 1..n {
        sim.join_new();
        sim.run_for(20);
    }
    sim.run_for(30_000);
    let mut stored = BTreeSet::new();
    for k in 0..keys {
        let key = Id::hash_parts(&[&seed.to_be_bytes(), &k.to_be_bytes()]);
        stored.insert(key);
        sim.insert_key(key);
    }
    sim.run_for(10_000);
    (sim, stored)
}

fn check(seed: u64, sim: &Sim, stored: &BTreeSet<Id>, phase: &str) {
    if let Err(e) = sim.check_ring() {
        panic!(
            "seed {seed} ({phase}): ring invariant broken: {e}\nreplay: PEERSTORE_SIM_SEEDS={seed} cargo test --test ring_simulation"
        );
    }
    let held = sim.all_keys();
    let lost: Vec<_> = stored.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "seed {seed} ({phase}): {} keys lost, e.g. {:?}\nreplay: PEERSTORE_SIM_SEEDS={seed} cargo test --test ring_simulation",
        lost.len(),
        lost.first()
    );
}

fn lookups_agree(seed: u64, sim: &mut Sim, n: usize, phase: &str) {
    let before = (sim.hops.len(), sim.wrong_owners, sim.failed_lookups);
    sim.measure_lookups(n);
    sim.run_for(10_000);
    assert_eq!(
        sim.hops.len() - before.0,
        n,
        "seed {seed} ({phase}): lookups did not all finish"
    );
    assert_eq!(
        sim.wrong_owners, before.1,
        "seed {seed} ({phase}): lookups disagree with the true owner"
    );
    assert_eq!(
        sim.failed_lookups, before.2,
        "seed {seed} ({phase}): lookups failed"
    );
}

#[test]
fn ring_of_256_converges_and_lookups_agree() {
    for seed in seeds(&[1]) {
        let (mut sim, stored) = build(seed, 256, 500);
        assert_eq!(
            sim.live_members().len(),
            256,
            "seed {seed}: not every node joined"
        );
        check(seed, &sim, &stored, "after joins");
        lookups_agree(seed, &mut sim, 1000, "after joins");
        let mean = sim.hops.iter().map(|&h| h as f64).sum::<f64>() / sim.hops.len() as f64;
        assert!(
            mean <= 0.5 * 8.0 + 1.0,
            "seed {seed}: mean hops {mean:.2} on 256 nodes"
        );
    }
}

#[test]
fn ring_survives_churn_loss_and_crashes() {
    for seed in seeds(&[7, 8]) {
        let (mut sim, stored) = build(seed, 256, 500);
        check(seed, &sim, &stored, "before churn");
        // Churn: every 700 ms one event; crashes no closer than the repair
        // period, so r = 3 copies always outlive them.
        sim.lossy = true;
        sim.cfg.loss = 0.01;
        sim.cfg.max_delay = 60;
        let (mut joins, mut leaves, mut crashes) = (0, 0, 0);
        for step in 0..120u64 {
            let dice = sim.rand_u64() % 10;
            if dice < 4 {
                sim.join_new();
                joins += 1;
            } else if dice < 7 {
                if let Some(i) = sim.random_member() {
                    sim.leave(i);
                    leaves += 1;
                }
            } else if step % 4 == 0
                && let Some(i) = sim.random_member()
            {
                sim.crash(i);
                crashes += 1;
            }
            sim.run_for(700);
            if step % 3 == 0 {
                sim.check_zave();
            }
        }
        assert!(
            joins > 10 && leaves > 10 && crashes > 3,
            "seed {seed}: churn too mild"
        );
        assert!(
            sim.zave_violations.is_empty(),
            "seed {seed}: Zave's invariant broken during churn: {:?}\nreplay: PEERSTORE_SIM_SEEDS={seed} cargo test --test ring_simulation",
            &sim.zave_violations[..sim.zave_violations.len().min(5)]
        );
        sim.lossy = false;
        sim.cfg.max_delay = 20;
        sim.run_for(60_000);
        check(seed, &sim, &stored, "after churn");
        lookups_agree(seed, &mut sim, 500, "after churn");
    }
}
