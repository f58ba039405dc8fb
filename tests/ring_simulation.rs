//! Deterministic simulation of the ring and its data at scale.
//!
//! - 256 nodes join, store blocks, and settle: the ring invariants of
//!   DESIGN.md hold and lookups agree; then churn (joins, graceful leaves,
//!   crashes, loss and delay) and the same checks.
//! - Over many seeds, a ring of 16 takes puts and gets while nodes join,
//!   leave, crash (up to r − 1 at once), pause and are cut off, with loss
//!   and delay: no acknowledged item is lost, and once the ring is stable
//!   every get of an acknowledged item succeeds.
//! - A member that lies (forged lookup answers and successor lists, false
//!   "I hold it" claims) costs no acknowledged item.
//!
//! Seeds come from `PEERSTORE_SIM_SEEDS` (comma-separated), or the first
//! `PEERSTORE_SIM_SEED_COUNT` seeds, or a default list; a failing seed is
//! printed with the command that replays it. `cargo test --test
//! ring_simulation -- --ignored` runs 1000 seeds.

use peerstore::sim::{Sim, SimConfig};

fn seeds(default: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("PEERSTORE_SIM_SEEDS") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    if let Ok(n) = std::env::var("PEERSTORE_SIM_SEED_COUNT")
        && let Ok(n) = n.parse::<u64>()
    {
        return (1..=n).collect();
    }
    default.to_vec()
}

/// The command that replays `seed` of test `test`.
fn replay(seed: u64, test: &str) -> String {
    format!("replay: PEERSTORE_SIM_SEEDS={seed} cargo test --test ring_simulation {test}")
}

/// Builds a ring of `n` nodes joining one every 20 ms, stores `blocks`
/// blocks, lets it settle.
fn build(seed: u64, n: usize, blocks: u64) -> Sim {
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
    for k in 0..blocks {
        sim.put_block([seed.to_be_bytes(), k.to_be_bytes()].concat());
    }
    sim.run_for(10_000);
    sim
}

fn check(seed: u64, sim: &Sim, phase: &str, test: &str) {
    if let Err(e) = sim.check_ring() {
        panic!(
            "seed {seed} ({phase}): ring invariant broken: {e}\n{}",
            replay(seed, test)
        );
    }
    let r = sim.data_report();
    assert!(
        r.lost.is_empty(),
        "seed {seed} ({phase}): {} of {} acknowledged items lost, e.g. {:?}\n{}",
        r.lost.len(),
        r.acked,
        r.lost.first(),
        replay(seed, test)
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
    const TEST: &str = "ring_of_256_converges_and_lookups_agree";
    for seed in seeds(&[1]) {
        let mut sim = build(seed, 256, 300);
        assert_eq!(
            sim.live_members().len(),
            256,
            "seed {seed}: not every node joined"
        );
        assert!(sim.failed_puts.is_empty(), "{:?}", sim.failed_puts);
        assert_eq!(sim.acked_blocks.len(), 300);
        check(seed, &sim, "after joins", TEST);
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
    const TEST: &str = "ring_survives_churn_loss_and_crashes";
    for seed in seeds(&[7, 8]) {
        let mut sim = build(seed, 256, 300);
        check(seed, &sim, "before churn", TEST);
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
                if let Some(i) = sim.random_healthy() {
                    sim.leave(i);
                    leaves += 1;
                }
            } else if step % 4 == 0
                && let Some(i) = sim.random_healthy()
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
            "seed {seed}: Zave's invariant broken during churn: {:?}\n{}",
            &sim.zave_violations[..sim.zave_violations.len().min(5)],
            replay(seed, TEST)
        );
        sim.lossy = false;
        sim.cfg.max_delay = 20;
        sim.run_for(60_000);
        check(seed, &sim, "after churn", TEST);
        lookups_agree(seed, &mut sim, 500, "after churn");
    }
}

/// What one seed of the data scenario found, when nothing was lost.
struct Outcome {
    summary: String,
    /// Zave's invariant broke during churn (transiently: the ring
    /// invariants held once it settled).
    zave: Option<String>,
}

/// Runs one seed of the data-under-churn scenario; `liar` makes one
/// member lie throughout. `Err` describes what broke.
fn data_under_churn(seed: u64, liar: bool) -> Result<Outcome, String> {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let r = sim.cfg.replicas;
    sim.create_first();
    for _ in 1..16 {
        sim.join_new();
        sim.run_for(100);
    }
    sim.run_for(10_000);
    if liar && let Some(i) = sim.random_healthy() {
        sim.make_liar(i);
    }
    // A liar's copies do not count: one failure less may happen at once.
    let budget = if liar { r - 2 } else { r - 1 };
    let mut block = 0u64;
    let mut put_blocks = |sim: &mut Sim, n: u64| {
        for _ in 0..n {
            block += 1;
            sim.put_block([seed.to_be_bytes(), block.to_be_bytes()].concat());
        }
    };
    put_blocks(&mut sim, 20);
    for _ in 0..5 {
        sim.new_record();
    }
    sim.run_for(5_000);
    // Churn, with loss and delay. Departures (crashes and leaves) lose a
    // node's copies: at most `budget` within any window of 8 s, so repair
    // restores r copies before more go.
    sim.lossy = true;
    sim.cfg.loss = 0.02;
    sim.cfg.max_delay = 60;
    let mut departures: Vec<u64> = Vec::new();
    // Pauses and cut-offs fool every failure detector (the others drop a
    // node that is only unreachable): Zave's invariant is checked only
    // well clear of them.
    let mut disrupted = 0u64;
    let mut counts = [0usize; 5]; // joins, leaves, crashes, pauses, cut-offs
    for step in 0..60u64 {
        departures.retain(|&t| sim.now < t + 8_000);
        let room = budget.saturating_sub(departures.len());
        let healthy = sim.healthy().len();
        match sim.rand_u64() % 10 {
            0..=2 => {
                sim.join_new();
                counts[0] += 1;
            }
            3 if room >= 1 && healthy > 8 => {
                if let Some(i) = sim.random_healthy() {
                    sim.leave(i);
                    departures.push(sim.now);
                    counts[1] += 1;
                }
            }
            4 if room >= 1 && healthy > 8 => {
                let k = 1 + (sim.rand_u64() as usize % room);
                for _ in 0..k {
                    if let Some(i) = sim.random_healthy() {
                        sim.crash(i);
                        departures.push(sim.now);
                        counts[2] += 1;
                    }
                }
            }
            5 => {
                if let Some(i) = sim.random_healthy() {
                    let ms = 1_000 + sim.rand_u64() % 3_000;
                    sim.pause(i, ms);
                    disrupted = sim.now + ms;
                    counts[3] += 1;
                }
            }
            6 => {
                if let Some(i) = sim.random_healthy() {
                    let ms = 1_000 + sim.rand_u64() % 2_000;
                    sim.cut_off(i, ms);
                    disrupted = sim.now + ms;
                    counts[4] += 1;
                }
            }
            _ => {}
        }
        put_blocks(&mut sim, 2);
        let n = sim.records.len();
        if step % 3 == 0 {
            sim.new_record();
        } else if n > 0 {
            let pick = (sim.rand_u64() as usize) % n;
            sim.update_record(pick);
        }
        sim.run_for(500);
        if !liar && step % 4 == 0 && sim.now > disrupted + 10_000 {
            sim.check_zave();
        }
    }
    // The ring settles: no loss, short delays, every pause and cut over.
    sim.lossy = false;
    sim.cfg.max_delay = 20;
    sim.run_for(40_000);
    let report = sim.data_report();
    if !report.lost.is_empty() {
        return Err(format!(
            "{} of {} acknowledged items lost, e.g. {:?}",
            report.lost.len(),
            report.acked,
            &report.lost[..report.lost.len().min(3)]
        ));
    }
    let zave = (!sim.zave_violations.is_empty()).then(|| {
        format!(
            "Zave's invariant broken during churn: {:?}",
            &sim.zave_violations[..sim.zave_violations.len().min(3)]
        )
    });
    if !liar {
        sim.check_ring().map_err(|e| format!("after churn: {e}"))?;
    }
    // Every acknowledged item reads back, from any healthy node.
    let before = sim.gets_done;
    sim.verify_acked(1);
    sim.run_for(40_000);
    let wanted = report.acked;
    if !liar && !sim.failed_gets.is_empty() {
        return Err(format!(
            "{} of {wanted} gets failed, e.g. {:?}",
            sim.failed_gets.len(),
            &sim.failed_gets[..sim.failed_gets.len().min(3)]
        ));
    }
    if sim.gets_done - before != wanted {
        return Err(format!(
            "{} of {wanted} gets finished",
            sim.gets_done - before
        ));
    }
    let summary = format!(
        "{} acked, {} puts failed, {} gets failed; joins {}, leaves {}, crashes {}, pauses {}, cut-offs {}; repair pushed {}, dropped {}",
        report.acked,
        sim.failed_puts.len(),
        sim.failed_gets.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        sim.repaired.pushed,
        sim.repaired.dropped
    );
    Ok(Outcome { summary, zave })
}

/// Runs the data scenario over the seeds. Losing an acknowledged item, a
/// failed get once the ring is stable, or broken ring invariants after it
/// settled fail the test; so does a transient break of Zave's invariant
/// during churn when `strict_zave` (otherwise those seeds are counted and
/// listed).
fn run_seeds(test: &str, liar: bool, default: &[u64], strict_zave: bool) {
    let mut failed = Vec::new();
    let mut transient = Vec::new();
    let list = seeds(default);
    for &seed in &list {
        match data_under_churn(seed, liar) {
            Ok(o) => {
                if list.len() <= 5 {
                    eprintln!("seed {seed}: {}", o.summary);
                }
                if let Some(z) = o.zave {
                    eprintln!("seed {seed}: {z}\n{}", replay(seed, test));
                    transient.push(seed);
                }
            }
            Err(e) => {
                eprintln!("seed {seed}: {e}\n{}", replay(seed, test));
                failed.push(seed);
            }
        }
    }
    eprintln!(
        "{test}: {} seeds, {} failed, {} with Zave's invariant broken during churn {transient:?}",
        list.len(),
        failed.len(),
        transient.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?}",
        failed.len(),
        list.len()
    );
    if strict_zave && !liar {
        assert!(
            transient.is_empty(),
            "Zave's invariant broke during churn in seeds {transient:?}"
        );
    }
}

#[test]
fn data_survives_churn() {
    run_seeds(
        "data_survives_churn",
        false,
        // 737, 264: blocks whose three holders crashed within 8 s were
        // lost by repair one group at a time, walking from this node's own
        // ID (737), and by one worker going through a long batch alone
        // (264).
        &(1..=30).chain([264, 737]).collect::<Vec<_>>(),
        true,
    );
}

#[test]
fn a_lying_member_costs_no_acknowledged_item() {
    run_seeds(
        "a_lying_member_costs_no_acknowledged_item",
        true,
        // 523, 494, 467: items lost to repair passes that were too slow
        // (one group at a time) or visited a crashed neighbour's keys last.
        &(1..=10).chain([467, 494, 523]).collect::<Vec<_>>(),
        false,
    );
}

/// The long run: 1000 seeds without and 1000 with a liar (`-- --ignored`).
/// Transient breaks of Zave's invariant during churn are listed, not
/// failed (see the README's limits).
#[test]
#[ignore]
fn data_survives_churn_1000_seeds() {
    let list: Vec<u64> = (1..=1000).collect();
    run_seeds("data_survives_churn_1000_seeds", false, &list, false);
}

#[test]
#[ignore]
fn a_lying_member_1000_seeds() {
    let list: Vec<u64> = (1..=1000).collect();
    run_seeds("a_lying_member_1000_seeds", true, &list, false);
}

/// One seed of a partition of a ring of `n` into `parts` sides, held 60 s
/// (each side settles into a ring of its own, taking puts), then healed:
/// within 60 s the rings are one again, Zave's invariant holds, and no
/// acknowledged item is lost. `Err` says what broke.
fn partition_then_heal(seed: u64, n: usize, parts: usize) -> Result<(), String> {
    let mut sim = build(seed, n, 40);
    split_and_heal(seed, &mut sim, parts)?;
    let rings = sim.ring_count();
    if rings != 1 {
        return Err(format!("{rings} rings 60 s after the partition healed"));
    }
    sim.check_ring()
        .map_err(|e| format!("after healing: ring invariant broken: {e}"))?;
    sim.check_zave();
    if let Some(v) = sim.zave_violations.first() {
        return Err(format!("after healing: Zave's invariant broken: {v}"));
    }
    sim.run_for(30_000);
    let r = sim.data_report();
    if !r.lost.is_empty() {
        return Err(format!(
            "{} of {} acknowledged items lost after healing",
            r.lost.len(),
            r.acked
        ));
    }
    Ok(())
}

/// Splits the members of `sim` into `parts` random sides for 60 s (each
/// side takes puts meanwhile and must become a ring of its own), then
/// runs 60 s more with the network whole again.
fn split_and_heal(seed: u64, sim: &mut Sim, parts: usize) -> Result<(), String> {
    let mut members = sim.live_members();
    for k in (1..members.len()).rev() {
        let j = (sim.rand_u64() % (k as u64 + 1)) as usize;
        members.swap(k, j);
    }
    let per = members.len().div_ceil(parts);
    let sides: Vec<Vec<usize>> = members.chunks(per).map(|c| c.to_vec()).collect();
    sim.partition(&sides, 60_000);
    sim.run_for(30_000);
    // Every side keeps taking writes.
    for k in 0..20u64 {
        sim.put_block([seed.to_be_bytes(), (1000 + k).to_be_bytes()].concat());
    }
    sim.run_for(30_000);
    let split = sim.ring_count();
    if split != parts {
        return Err(format!(
            "the partition left {split} rings, not {parts} (sides {:?})",
            sides.iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    sim.run_for(60_000);
    Ok(())
}

/// Without merge probes the sides stay apart after healing (what the
/// probes are for, and a check that the partition tests can fail).
#[test]
fn without_merge_probes_a_split_ring_stays_split() {
    let seed = 1;
    let mut sim = Sim::new(SimConfig {
        seed,
        merge_every: 0,
        ..SimConfig::default()
    });
    sim.create_first();
    for _ in 1..16 {
        sim.join_new();
        sim.run_for(20);
    }
    sim.run_for(30_000);
    split_and_heal(seed, &mut sim, 2).unwrap();
    assert_eq!(sim.ring_count(), 2);
}

fn run_partition_seeds(test: &str, n: usize, parts: usize, default: &[u64]) {
    let list = seeds(default);
    let failed: Vec<String> = list
        .iter()
        .filter_map(|&seed| {
            partition_then_heal(seed, n, parts)
                .err()
                .map(|e| format!("seed {seed}: {e}\n{}", replay(seed, test)))
        })
        .collect();
    eprintln!("{test}: {} seeds, {} failed", list.len(), failed.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_ring_split_in_two_merges_after_healing() {
    run_partition_seeds(
        "a_ring_split_in_two_merges_after_healing",
        16,
        2,
        &[1, 2, 3, 4, 5, 6],
    );
}

#[test]
fn a_ring_split_in_three_merges_after_healing() {
    run_partition_seeds(
        "a_ring_split_in_three_merges_after_healing",
        18,
        3,
        &[1, 2, 3, 4, 5, 6],
    );
}

/// The long run of the two above (`-- --ignored`).
#[test]
#[ignore]
fn partitions_heal_1000_seeds() {
    let list: Vec<u64> = (1..=500).collect();
    let failed: Vec<String> = list
        .iter()
        .flat_map(|&seed| {
            [(16, 2), (18, 3)]
                .into_iter()
                .filter_map(move |(n, parts)| {
                    partition_then_heal(seed, n, parts)
                        .err()
                        .map(|e| format!("seed {seed}, {parts} sides: {e}"))
                })
        })
        .collect();
    eprintln!("partitions_heal_1000_seeds: {} failed", failed.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
