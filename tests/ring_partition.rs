//! Process test of a ring split by a network partition and healed.
//!
//! Five nodes run in a network namespace of the test's own (on its
//! loopback, so the host's network is never touched). An nftables rule in
//! that namespace drops every packet between nodes 1–3 and nodes 4–5: each
//! side settles into a ring of its own (3 and 2 members). Once the rule is
//! deleted, the merge probes find the other ring and the two become one
//! ring of five within 60 s, consistent from every member.
//!
//! Needs root, `ip` (iproute2), `nsenter` and `nft` (nftables).

mod common;

use common::{Netns, NodeOpts, addr, ring_consistent_in, ring_in, wait_until, with_timeout};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_ring_becomes_one_again_after_healing() {
    with_timeout(Duration::from_secs(300), async {
        let ns = Netns::new("ps-part");
        let opts = |i: u8, join: Option<&str>| NodeOpts {
            netns: Some(ns.0.clone()),
            ..NodeOpts::new(&addr(200, i), join)
        };
        // Nodes are dropped (killed, by PID) before the namespace.
        let (nodes, all) = ring_in(&ns.0, 5, opts).await;
        let (a, b) = (all[..3].to_vec(), all[3..].to_vec());
        let ns_name = Some(ns.0.as_str());

        ns.cut(&a, &b);
        let (_, t) = wait_until(
            "each side a ring of its own",
            Duration::from_secs(60),
            || async {
                ring_consistent_in(ns_name, &a, &a).await?;
                ring_consistent_in(ns_name, &b, &b).await
            },
        )
        .await;
        eprintln!("cut: rings of 3 and 2 after {t:?}");

        ns.heal();
        let (_, t) = wait_until(
            "one ring of five after healing",
            Duration::from_secs(60),
            || ring_consistent_in(ns_name, &all, &all),
        )
        .await;
        eprintln!("healed: one ring of five after {t:?}");
        drop(nodes);
    })
    .await;
}
