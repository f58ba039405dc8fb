//! Put and get throughput of rings of 1, 2, 3 and 5 real `peerstore node`
//! processes on loopback (`PEERSTORE_BENCH_RINGS`, default `1,2,3,5`).
//!
//! The nodes of the ring of N listen on 127.0.(98+N).1..N, port 7400, with
//! r = 3 (so a ring smaller than 3 keeps a copy on every member) and their
//! data in temporary directories; they are killed (by PID) when the ring's
//! turn ends, fails or panics. Once `peerstore ring --json` shows all of
//! them, requests go straight to the nodes through the library's connection
//! pool, many in flight at once and spread over the nodes (each node routes
//! the request to the key's replicas, as for any client):
//!
//! - 1 MiB random blocks: put, then get each through another node (user
//!   data per second; every put writes r = 3 copies, each fsynced);
//! - 1 KiB random blocks: puts per second, then gets per second.
//!
//! Every phase is bounded in count and in time. Sizes can be changed with
//! `PEERSTORE_BENCH_BIG` (default 256 blocks), `PEERSTORE_BENCH_SMALL`
//! (default 5000) and `PEERSTORE_BENCH_CONCURRENCY` (default 16).
//!
//! Run: `cargo bench --bench throughput`.

use futures::stream::{self, StreamExt};
use peerstore::id::Id;
use peerstore::net::{LinkKeys, NetConfig, NetworkSecret, Pool, StaticKey};
use peerstore::wire::{ClientRequest, ClientResponse, Request, Response};
use rand::RngCore;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Port every node listens on (each on its own loopback address).
const PORT: u16 = 7400;
/// Replication factor.
const REPLICAS: usize = 3;
/// Longest wait for the ring to form.
const RING_DEADLINE: Duration = Duration::from_secs(60);
/// Longest time one phase may take; a phase still running stops issuing
/// requests then and reports what it finished.
const PHASE_DEADLINE: Duration = Duration::from_secs(180);
/// Timeout of one request.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Address of node `i` (0-based) of a ring of `n`.
fn addr(n: usize, i: usize) -> String {
    format!("127.0.{}.{}:{PORT}", 98 + n, i + 1)
}

/// The node processes and their data; dropping it kills every node.
struct Ring {
    /// Nodes in the ring.
    n: usize,
    /// The running nodes, in start order.
    children: Vec<Child>,
    /// Holds the data directories and logs; removed on drop, after the
    /// nodes are gone.
    dir: tempfile::TempDir,
}

impl Ring {
    /// An empty guard with a fresh temporary directory.
    fn new(n: usize) -> Result<Ring, String> {
        let dir = tempfile::Builder::new()
            .prefix("peerstore-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        Ok(Ring {
            n,
            children: Vec::new(),
            dir,
        })
    }

    /// Node `i`'s log file.
    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    /// Starts node `i`, joining through node 0 unless it is node 0.
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let data = self.dir.path().join(format!("node{i}"));
        // Every node of the bench ring holds the bench network's secret.
        let ticket =
            peerstore::network::Ticket::parse(&bench_ticket(self.n)).map_err(|e| e.to_string())?;
        peerstore::network::adopt(&data, &ticket).map_err(|e| format!("node {i}: {e}"))?;
        let log = File::create(self.log_path(i)).map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerstore"));
        cmd.arg("node")
            .arg("--listen")
            .arg(addr(self.n, i))
            .arg("--data")
            .arg(&data)
            .arg("--replicas")
            .arg(REPLICAS.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if i > 0 {
            cmd.arg("--join").arg(addr(self.n, 0));
        }
        let child = cmd.spawn().map_err(|e| format!("start node {i}: {e}"))?;
        self.children.push(child);
        Ok(())
    }

    /// An error naming `what`, with the end of every node's log.
    fn failure(&mut self, what: &str) -> String {
        let mut msg = what.to_string();
        for i in 0..self.children.len() {
            let status = match self.children[i].try_wait() {
                Ok(Some(s)) => format!("exited: {s}"),
                _ => "running".to_string(),
            };
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            msg.push_str(&format!("\n  node {i} at {} ({status})", addr(self.n, i)));
            for line in tail.into_iter().rev() {
                msg.push_str(&format!("\n    {line}"));
            }
        }
        msg
    }

    /// Fails if a node has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        for i in 0..self.children.len() {
            if let Ok(Some(_)) = self.children[i].try_wait() {
                return Err(self.failure(&format!("node {i} exited")));
            }
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGKILL by PID; the data is thrown away, so no graceful leave.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until node `i` answers client requests (it is a ring member).
async fn wait_member(ring: &mut Ring, pool: &Pool, i: usize) -> Result<(), String> {
    let deadline = Instant::now() + RING_DEADLINE;
    while Instant::now() < deadline {
        ring.check_alive()?;
        let answer = pool
            .call_with_timeout(
                &addr(ring.n, i),
                Request::Client(ClientRequest::Info),
                Duration::from_secs(2),
            )
            .await;
        if let Ok(Response::Client(ClientResponse::Info(_))) = answer {
            return Ok(());
        }
        pool.forget(&addr(ring.n, i));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ring.failure(&format!("node {i} did not become a ring member")))
}

/// Whether `peerstore ring --json` run against node 0 shows every node of
/// a ring of `n`, each with a predecessor and at least min(r, n) − 1
/// successors.
fn ring_complete(n: usize) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_peerstore"))
        .args(["ring", "--json", "--peer", &addr(n, 0)])
        .env("PEERSTORE_TICKET", bench_ticket(n))
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return false };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let Some(nodes) = v["nodes"].as_array() else {
        return false;
    };
    nodes.len() == n
        && nodes.iter().all(|m| {
            (n == 1 || !m["predecessor"].is_null())
                && m["successors"]
                    .as_array()
                    .is_some_and(|s| s.len() >= REPLICAS.min(n) - 1)
        })
}

/// Starts the ring: node 0 creates it, the others join one at a time.
async fn start_ring(pool: &Pool, n: usize) -> Result<Ring, String> {
    let mut ring = Ring::new(n)?;
    for i in 0..n {
        ring.spawn(i)?;
        wait_member(&mut ring, pool, i).await?;
    }
    let deadline = Instant::now() + RING_DEADLINE;
    loop {
        ring.check_alive()?;
        if tokio::task::spawn_blocking(move || ring_complete(n))
            .await
            .unwrap_or(false)
        {
            return Ok(ring);
        }
        if Instant::now() > deadline {
            return Err(ring.failure("the ring did not converge"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one phase measured.
struct Phase {
    /// Row label.
    name: &'static str,
    /// Requests that succeeded.
    ok: usize,
    /// Requests that failed.
    failed: usize,
    /// User bytes moved by the successful requests.
    bytes: u64,
    /// Wall time of the phase.
    elapsed: Duration,
    /// Latency of each successful request, sorted.
    latencies: Vec<Duration>,
    /// The first error, if any.
    first_error: Option<String>,
}

impl Phase {
    fn percentile(&self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn row(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{:<14} {:>6} {:>6} {:>9.1} {:>8.2} {:>9.1} {:>9.0} {:>8.1} {:>8.1}",
            self.name,
            self.ok,
            self.failed,
            self.bytes as f64 / (1 << 20) as f64,
            secs,
            self.bytes as f64 / (1 << 20) as f64 / secs,
            self.ok as f64 / secs,
            self.percentile(50),
            self.percentile(99),
        )
    }
}

fn header() -> String {
    format!(
        "{:<14} {:>6} {:>6} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "phase", "ok", "failed", "MiB", "seconds", "MiB/s", "ops/s", "p50 ms", "p99 ms"
    )
}

/// Sends `reqs[i]` to node `(i + shift) % nodes`, `concurrency` at a time,
/// until all are done or the phase deadline passes. `check` says whether an
/// answer is right and how many user bytes it moved.
async fn run_phase(
    name: &'static str,
    pool: &Pool,
    nodes: usize,
    reqs: Vec<ClientRequest>,
    shift: usize,
    concurrency: usize,
    check: impl Fn(usize, &ClientResponse) -> Result<u64, String>,
) -> Phase {
    let start = Instant::now();
    let deadline = start + PHASE_DEADLINE;
    let results: Vec<(usize, Duration, Result<ClientResponse, String>)> =
        stream::iter(reqs.into_iter().enumerate())
            .take_while(|_| std::future::ready(Instant::now() < deadline))
            .map(|(i, req)| {
                let pool = pool.clone();
                async move {
                    let t = Instant::now();
                    let to = addr(nodes, (i + shift) % nodes);
                    let r = match pool
                        .call_with_timeout(&to, Request::Client(req), RPC_TIMEOUT)
                        .await
                    {
                        Ok(Response::Client(c)) => Ok(c),
                        Ok(Response::Error(e)) => Err(format!("{to}: {e}")),
                        Ok(other) => Err(format!("{to}: unexpected answer {other:?}")),
                        Err(e) => Err(format!("{to}: {e}")),
                    };
                    (i, t.elapsed(), r)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let elapsed = start.elapsed();
    let mut phase = Phase {
        name,
        ok: 0,
        failed: 0,
        bytes: 0,
        elapsed,
        latencies: Vec::new(),
        first_error: None,
    };
    for (i, took, r) in results {
        match r.and_then(|c| check(i, &c)) {
            Ok(bytes) => {
                phase.ok += 1;
                phase.bytes += bytes;
                phase.latencies.push(took);
            }
            Err(e) => {
                phase.failed += 1;
                phase.first_error.get_or_insert(e);
            }
        }
    }
    phase.latencies.sort_unstable();
    phase
}

/// `n` random blocks of `size` bytes and their keys.
fn random_blocks(n: usize, size: usize) -> Vec<(Id, Vec<u8>)> {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            let mut b = vec![0u8; size];
            rng.fill_bytes(&mut b);
            (Id::hash(&b), b)
        })
        .collect()
}

/// Put then get every block of `blocks`; gets go to a different node than
/// the put of the same block.
async fn put_get(
    label: (&'static str, &'static str),
    pool: &Pool,
    nodes: usize,
    blocks: &[(Id, Vec<u8>)],
    concurrency: usize,
) -> (Phase, Phase) {
    let owner = peerstore::fs::Identity::generate();
    let puts = blocks
        .iter()
        .map(|(key, data)| ClientRequest::PutBlock {
            data: data.clone(),
            claim: owner.claim(*key),
        })
        .collect();
    let wanted = REPLICAS.min(nodes);
    let put = run_phase(label.0, pool, nodes, puts, 0, concurrency, |i, r| match r {
        ClientResponse::Put { key, copies } if *key == blocks[i].0 => {
            if *copies as usize >= wanted {
                Ok(blocks[i].1.len() as u64)
            } else {
                Err(format!("block {i}: only {copies} copies"))
            }
        }
        other => Err(format!("block {i}: unexpected answer {other:?}")),
    })
    .await;
    let gets = blocks
        .iter()
        .map(|(key, _)| ClientRequest::GetBlock { key: *key })
        .collect();
    let get = run_phase(label.1, pool, nodes, gets, 2, concurrency, |i, r| match r {
        ClientResponse::Block(data) if *data == blocks[i].1 => Ok(data.len() as u64),
        ClientResponse::Block(_) => Err(format!("block {i}: wrong bytes")),
        other => Err(format!("block {i}: unexpected answer {other:?}")),
    })
    .await;
    (put, get)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The network secret of this bench run (random per run).
fn bench_secret() -> NetworkSecret {
    static SECRET: std::sync::OnceLock<NetworkSecret> = std::sync::OnceLock::new();
    SECRET.get_or_init(NetworkSecret::generate).clone()
}

/// A ticket of the bench network, via node 0 of the ring of `n`.
fn bench_ticket(n: usize) -> String {
    peerstore::network::Ticket {
        secret: bench_secret(),
        addr: addr(n, 0),
    }
    .encode()
}

async fn run() -> Result<(), String> {
    let big = env_usize("PEERSTORE_BENCH_BIG", 256);
    let small = env_usize("PEERSTORE_BENCH_SMALL", 5000);
    let concurrency = env_usize("PEERSTORE_BENCH_CONCURRENCY", 16).max(1);
    let pool = Pool::new(
        NetConfig {
            rpc_timeout: RPC_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            local_ip: None,
        },
        LinkKeys {
            key: StaticKey::generate(),
            secret: bench_secret(),
        },
    );
    let sizes: Vec<usize> = std::env::var("PEERSTORE_BENCH_RINGS")
        .unwrap_or_else(|_| "1,2,3,5".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .filter(|&n| (1..=9).contains(&n))
        .collect();
    let big_blocks = random_blocks(big, peerstore::wire::MAX_BLOCK);
    let small_blocks = random_blocks(small, 1024);
    println!("r = {REPLICAS}; {concurrency} requests in flight");
    println!("{:>5} {}", "nodes", header());
    let mut failures: Vec<String> = Vec::new();
    for n in sizes {
        let started = Instant::now();
        let mut ring = start_ring(&pool, n).await?;
        eprintln!(
            "{n}-node ring on 127.0.{}.1-{n}:{PORT} formed in {:.1} s",
            98 + n,
            started.elapsed().as_secs_f64()
        );
        let mut phases = Vec::new();
        let (p, g) = put_get(
            ("put 1 MiB", "get 1 MiB"),
            &pool,
            n,
            &big_blocks,
            concurrency,
        )
        .await;
        phases.push(p);
        phases.push(g);
        ring.check_alive()?;
        let (p, g) = put_get(
            ("put 1 KiB", "get 1 KiB"),
            &pool,
            n,
            &small_blocks,
            concurrency,
        )
        .await;
        phases.push(p);
        phases.push(g);
        ring.check_alive()?;
        for p in &phases {
            println!("{n:>5} {}", p.row());
        }
        failures.extend(phases.iter().filter(|p| p.failed > 0).map(|p| {
            format!(
                "{n} nodes, {}: {} failed, first: {}",
                p.name,
                p.failed,
                p.first_error.as_deref().unwrap_or("?")
            )
        }));
        drop(ring);
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
