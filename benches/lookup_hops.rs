//! Lookup path length on the simulated ring (DESIGN.md: mean near ½·log2 N).
//!
//! For N = 64, 256, 1024 nodes: build the ring in the deterministic
//! simulator, let stabilization and finger refresh settle, then run random
//! lookups from random nodes and print the mean and the 99th percentile of
//! the number of lookup calls, against the bounds ½·log2 N + 1 (mean) and
//! log2 N + 1 (p99). Exits non-zero if a bound is missed.
//!
//! Run: `cargo bench --bench lookup_hops`.

use peerstore::sim::{Sim, SimConfig};

fn main() {
    let mut ok = true;
    println!(
        "{:>6} {:>8} {:>10} {:>8} {:>10} {:>8}",
        "N", "lookups", "mean hops", "bound", "p99 hops", "bound"
    );
    for &n in &[64usize, 256, 1024] {
        let mut sim = Sim::new(SimConfig {
            seed: 42,
            ..SimConfig::default()
        });
        sim.create_first();
        for _ in 1..n {
            sim.join_new();
            sim.run_for(20);
        }
        sim.run_for(60_000);
        if let Err(e) = sim.check_ring() {
            eprintln!("N={n}: ring not converged: {e}");
            ok = false;
        }
        let lookups = 20_000;
        sim.measure_lookups(lookups);
        sim.run_for(30_000);
        let mut hops = sim.hops.clone();
        hops.sort_unstable();
        let mean = hops.iter().map(|&h| h as f64).sum::<f64>() / hops.len() as f64;
        let p99 = hops[(hops.len() * 99 / 100).min(hops.len() - 1)] as f64;
        let log = (n as f64).log2();
        let (mean_bound, p99_bound) = (0.5 * log + 1.0, log + 1.0);
        println!(
            "{n:>6} {:>8} {mean:>10.2} {mean_bound:>8.1} {p99:>10.0} {p99_bound:>8.1}",
            hops.len()
        );
        if sim.failed_lookups > 0 || sim.wrong_owners > 0 {
            eprintln!(
                "N={n}: {} failed, {} wrong owners",
                sim.failed_lookups, sim.wrong_owners
            );
            ok = false;
        }
        ok &= mean <= mean_bound && p99 <= p99_bound && hops.len() == lookups;
    }
    if !ok {
        eprintln!("lookup hop bounds missed");
        std::process::exit(1);
    }
}
