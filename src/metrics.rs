//! The process's metrics, in the Prometheus text format (`/metrics` of
//! `peerstore node --http`).
//!
//! Events are counted where they happen, in one process-wide set
//! ([`get`]): lookups and their hop counts, RPCs served and sent by kind
//! and outcome, block cache hits and misses, FUSE operations by kind with
//! their latency. Levels (bytes stored, repair backlog, journal, open
//! conflicts, uploads in flight, cache use) are read when scraped and
//! given to [`render`] as a [`Levels`]. The counting is the
//! `prometheus-client` crate's (atomic counters, lock-free histograms).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

/// An RPC's family (`chord`, `replica`, `client`), kind (`Ping`,
/// `StoreBlock`, `GetBlock`, ...) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rpc {
    pub family: &'static str,
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// A FUSE operation's kind (`lookup`, `read`, `write`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FuseOp {
    pub op: &'static str,
}

/// A cache and whether a read found what it wanted there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheRead {
    pub cache: &'static str,
    pub result: &'static str,
}

/// A lookup's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupEnd {
    pub outcome: &'static str,
}

/// The levels read at scrape time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Levels {
    /// Items this node stores, and their bytes.
    pub blocks: u64,
    pub records: u64,
    pub bytes_stored: u64,
    /// Items the last repair pass found short of r copies and could not
    /// copy (it retries), and those it copied.
    pub repair_backlog: u64,
    pub repair_copied: u64,
    /// Seconds since the last repair pass ended (none yet: -1).
    pub repair_age_secs: i64,
    /// Ring members this node knows (its successor list, its
    /// predecessor, its fingers), and whether it is a member itself.
    pub members_known: u64,
    pub member: bool,
    /// The mount's writes waiting for the ring, and its open conflicts.
    pub journal_entries: u64,
    pub journal_bytes: u64,
    pub conflicts: u64,
    /// The mount's block uploads in flight.
    pub uploads_in_flight: u64,
    /// The mount's on-disk block cache: bytes held and its budget.
    pub cache_bytes: u64,
    pub cache_capacity: u64,
}

/// The process's counters and histograms.
pub struct Metrics {
    registry: Registry,
    /// Hops of successful lookups (0: answered from this node's state).
    pub lookup_hops: Histogram,
    pub lookups: Family<LookupEnd, Counter>,
    /// Requests this node answered.
    pub rpcs_served: Family<Rpc, Counter>,
    /// Requests this node sent.
    pub rpcs_sent: Family<Rpc, Counter>,
    pub cache_reads: Family<CacheRead, Counter>,
    /// Seconds from a FUSE request's arrival to its answer.
    pub fuse_seconds: Family<FuseOp, Histogram>,
    levels: LevelGauges,
}

/// The gauges [`Levels`] are written into before each scrape.
#[derive(Default)]
struct LevelGauges {
    blocks: Gauge,
    records: Gauge,
    bytes_stored: Gauge,
    repair_backlog: Gauge,
    repair_copied: Gauge,
    repair_age: Gauge,
    members_known: Gauge,
    member: Gauge,
    journal_entries: Gauge,
    journal_bytes: Gauge,
    conflicts: Gauge,
    uploads: Gauge,
    cache_bytes: Gauge,
    cache_capacity: Gauge,
}

fn fuse_histogram() -> Histogram {
    // 50 µs to ~13 s.
    Histogram::new(exponential_buckets(50e-6, 4.0, 10))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("peerstore");
        let lookup_hops = Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0]);
        registry.register(
            "lookup_hops",
            "Hops of successful lookups (0 when this node's state answered)",
            lookup_hops.clone(),
        );
        let lookups = Family::<LookupEnd, Counter>::default();
        registry.register("lookups", "Lookups by outcome", lookups.clone());
        let rpcs_served = Family::<Rpc, Counter>::default();
        registry.register(
            "rpcs_served",
            "Requests answered, by kind and outcome",
            rpcs_served.clone(),
        );
        let rpcs_sent = Family::<Rpc, Counter>::default();
        registry.register(
            "rpcs_sent",
            "Requests sent to other nodes, by kind and outcome",
            rpcs_sent.clone(),
        );
        let cache_reads = Family::<CacheRead, Counter>::default();
        registry.register(
            "cache_reads",
            "Reads of the local caches, hits and misses",
            cache_reads.clone(),
        );
        let fuse_seconds =
            Family::<FuseOp, Histogram>::new_with_constructor(fuse_histogram as fn() -> Histogram);
        registry.register(
            "fuse_op_seconds",
            "FUSE operations by kind: time from request to answer",
            fuse_seconds.clone(),
        );
        // Series that exist from the start (at 0), so a scrape shows them
        // before the first event.
        for outcome in ["ok", "failed"] {
            drop(lookups.get_or_create(&LookupEnd { outcome }));
        }
        for result in ["hit", "miss"] {
            drop(cache_reads.get_or_create(&CacheRead {
                cache: "blocks",
                result,
            }));
        }
        let levels = LevelGauges::default();
        let g = &levels;
        for (name, help, gauge) in [
            ("store_blocks", "Blocks this node stores", &g.blocks),
            ("store_records", "Records this node stores", &g.records),
            (
                "store_bytes",
                "Bytes of blocks and records this node stores",
                &g.bytes_stored,
            ),
            (
                "repair_backlog",
                "Items the last repair pass found short of r copies and could not copy",
                &g.repair_backlog,
            ),
            (
                "repair_copied",
                "Items the last repair pass copied to replicas that lacked them",
                &g.repair_copied,
            ),
            (
                "repair_age_seconds",
                "Seconds since the last repair pass ended (-1: none yet)",
                &g.repair_age,
            ),
            (
                "ring_members_known",
                "Ring members in this node's successor list, predecessor and fingers",
                &g.members_known,
            ),
            ("ring_member", "1 if this node is a ring member", &g.member),
            (
                "journal_entries",
                "The mount's writes waiting for the ring",
                &g.journal_entries,
            ),
            (
                "journal_bytes",
                "Bytes of the mount's writes waiting for the ring",
                &g.journal_bytes,
            ),
            (
                "conflicts",
                "Conflict copies the mount made that are still there",
                &g.conflicts,
            ),
            (
                "uploads_in_flight",
                "The mount's block uploads in flight",
                &g.uploads,
            ),
            (
                "cache_bytes",
                "Bytes in the mount's block cache",
                &g.cache_bytes,
            ),
            (
                "cache_capacity_bytes",
                "The mount's block cache budget",
                &g.cache_capacity,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        Metrics {
            registry,
            lookup_hops,
            lookups,
            rpcs_served,
            rpcs_sent,
            cache_reads,
            fuse_seconds,
            levels,
        }
    }

    /// Counts a lookup: its hops if it found the owner.
    pub fn lookup(&self, hops: Option<u32>) {
        let outcome = match hops {
            Some(h) => {
                self.lookup_hops.observe(h as f64);
                "ok"
            }
            None => "failed",
        };
        self.lookups.get_or_create(&LookupEnd { outcome }).inc();
    }

    /// Counts a request of `(family, kind)` answered.
    pub fn served(&self, (family, kind): (&'static str, &'static str), ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        let rpc = Rpc {
            family,
            kind,
            outcome,
        };
        self.rpcs_served.get_or_create(&rpc).inc();
    }

    /// Counts a request of `(family, kind)` sent: `ok`, `refused` (an
    /// error answer), `timeout` or `failed` (no answer).
    pub fn sent(&self, (family, kind): (&'static str, &'static str), outcome: &'static str) {
        let rpc = Rpc {
            family,
            kind,
            outcome,
        };
        self.rpcs_sent.get_or_create(&rpc).inc();
    }

    /// Counts a read of cache `cache`.
    pub fn cache_read(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_reads
            .get_or_create(&CacheRead { cache, result })
            .inc();
    }

    /// Records a FUSE operation's time to answer.
    pub fn fuse_op(&self, op: &'static str, took: Duration) {
        self.fuse_seconds
            .get_or_create(&FuseOp { op })
            .observe(took.as_secs_f64());
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric, with `levels` as they are now, in the Prometheus text
/// format.
pub fn render(levels: &Levels) -> String {
    let m = get();
    let g = &m.levels;
    let n = |v: u64| v.min(i64::MAX as u64) as i64;
    g.blocks.set(n(levels.blocks));
    g.records.set(n(levels.records));
    g.bytes_stored.set(n(levels.bytes_stored));
    g.repair_backlog.set(n(levels.repair_backlog));
    g.repair_copied.set(n(levels.repair_copied));
    g.repair_age.set(levels.repair_age_secs);
    g.members_known.set(n(levels.members_known));
    g.member.set(levels.member as i64);
    g.journal_entries.set(n(levels.journal_entries));
    g.journal_bytes.set(n(levels.journal_bytes));
    g.conflicts.set(n(levels.conflicts));
    g.uploads.set(n(levels.uploads_in_flight));
    g.cache_bytes.set(n(levels.cache_bytes));
    g.cache_capacity.set(n(levels.cache_capacity));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_levels_show_in_the_text_format() {
        let m = get();
        m.lookup(Some(2));
        m.lookup(None);
        m.served(("client", "GetBlock"), true);
        m.sent(("replica", "StoreBlock"), "timeout");
        m.cache_read("blocks", false);
        m.fuse_op("read", Duration::from_micros(300));
        let text = render(&Levels {
            bytes_stored: 12345,
            repair_backlog: 7,
            member: true,
            ..Levels::default()
        });
        for want in [
            "# TYPE peerstore_lookup_hops histogram",
            "peerstore_lookup_hops_bucket{le=\"2\"} 1",
            "peerstore_lookups_total{outcome=\"failed\"}",
            "peerstore_rpcs_served_total{family=\"client\",kind=\"GetBlock\",outcome=\"ok\"}",
            "peerstore_rpcs_sent_total{family=\"replica\",kind=\"StoreBlock\",outcome=\"timeout\"}",
            "peerstore_cache_reads_total{cache=\"blocks\",result=\"miss\"}",
            "peerstore_fuse_op_seconds_count{op=\"read\"}",
            "peerstore_store_bytes 12345",
            "peerstore_repair_backlog 7",
            "peerstore_ring_member 1",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        // Every sample line is `name{labels} value` with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
