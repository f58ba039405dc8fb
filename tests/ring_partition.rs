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

use common::{NodeGuard, NodeOpts, addr, ring_consistent_in, run_tool, wait_until, with_timeout};
use std::process::Command;
use std::time::Duration;

/// How long one `ip` or `nft` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` (killed after [`IP_TIMEOUT`]), panicking with its output if
/// it fails.
fn run(cmd: &mut Command) {
    let out = run_tool(cmd, IP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of this test, deleted (with its rules) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("ps-part-{}", std::process::id());
        // A leftover of a crashed run with this PID would make `add` fail.
        let _ = run_tool(Command::new("ip").args(["netns", "del", &name]), IP_TIMEOUT);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        run(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    /// Drops every packet between `a` and `b` (addresses), both ways.
    fn cut(&self, a: &[String], b: &[String]) {
        let ips = |v: &[String]| {
            v.iter()
                .map(|s| {
                    s.rsplit_once(':')
                        .map_or(s.as_str(), |(h, _)| h)
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a, b) = (ips(a), ips(b));
        let rules = format!(
            "table inet pscut {{\n chain out {{\n  type filter hook output priority 0;\n  \
             ip saddr {{ {a} }} ip daddr {{ {b} }} drop\n  \
             ip saddr {{ {b} }} ip daddr {{ {a} }} drop\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, rules).expect("write nft rules");
        run(Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f"])
            .arg(&path));
        let _ = std::fs::remove_file(&path);
    }

    /// Deletes the rule of [`Netns::cut`].
    fn heal(&self) {
        run(Command::new("ip").args([
            "netns", "exec", &self.0, "nft", "delete", "table", "inet", "pscut",
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_tool(
            Command::new("ip").args(["netns", "del", &self.0]),
            IP_TIMEOUT,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_ring_becomes_one_again_after_healing() {
    with_timeout(Duration::from_secs(300), async {
        let ns = Netns::new();
        let opts = |i: u8, join: Option<&str>| NodeOpts {
            netns: Some(ns.0.clone()),
            ..NodeOpts::new(&addr(200, i), join)
        };
        // Nodes are dropped (killed, by PID) before the namespace.
        let mut nodes = vec![NodeGuard::start(opts(1, None)).await];
        let via = nodes[0].addr.clone();
        for i in 2..=5 {
            nodes.push(NodeGuard::start(opts(i, Some(&via))).await);
        }
        let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
        let (a, b) = (all[..3].to_vec(), all[3..].to_vec());
        let ns_name = Some(ns.0.as_str());
        wait_until("a ring of five", Duration::from_secs(30), || {
            ring_consistent_in(ns_name, &all, &all)
        })
        .await;

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
