//! Shared harness of the process-level tests: real `peerstore node`
//! processes on loopback addresses, the CLI run as a child process, and
//! bounded waits.
//!
//! Every test uses its own loopback block `127.0.<block>.<n>` (port
//! [`PORT`]), so tests run in parallel without port clashes; no address
//! outside 127.0.0.0/8 is ever used. A [`NodeGuard`] owns its process and
//! its data directory: dropping it kills the process (by PID, only processes
//! this harness spawned) and removes the directory; if the test is failing,
//! the tail of the node's logs is printed first. Every wait is bounded, and
//! [`with_timeout`] bounds a whole test.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Port every test node listens on (the IP differs per node).
pub const PORT: u16 = 7400;
/// How long a node may take to start and join.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a terminated node may take to leave and exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Node options that make the ring converge quickly.
pub const FAST: &[&str] = &[
    "--stabilize-ms",
    "200",
    "--repair-secs",
    "1",
    "--rpc-timeout-ms",
    "1000",
];

/// Set when a test timed out, so guards dropped afterwards print their logs.
static FAILED: AtomicBool = AtomicBool::new(false);

/// The loopback address of node `n` of the test using `block`.
pub fn addr(block: u8, n: u8) -> String {
    format!("127.0.{block}.{n}:{PORT}")
}

/// Runs `fut`, failing the test if it takes longer than `limit`. The future
/// is dropped while the test panics, so its guards print their logs.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> F::Output {
    let mut fut = Box::pin(fut);
    tokio::select! {
        out = &mut fut => out,
        _ = tokio::time::sleep(limit) => {
            FAILED.store(true, Ordering::SeqCst);
            panic!("test did not finish within {limit:?}");
        }
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, for at most `limit`;
/// panics with `what` and the last `Err` otherwise. Returns the `Ok` value
/// and how long it took.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(limit, check()).await {
            Ok(Ok(v)) => return (v, start.elapsed()),
            Ok(Err(e)) => e,
            Err(_) => "the check itself timed out".to_string(),
        };
        if start.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the `peerstore` binary with `args`, killing it after
/// [`CLI_TIMEOUT`].
pub async fn cli(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_peerstore"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("PEERSTORE_PEER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run peerstore {args:?}: {e}"),
        Err(_) => panic!("peerstore {args:?} did not finish within {CLI_TIMEOUT:?}"),
    }
}

/// stdout of a command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a command as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `block put --peer PEER FILE`: the key printed, or the error output.
pub async fn put_file(peer: &str, file: &Path) -> Result<String, String> {
    let f = file.to_str().expect("utf-8 temp path");
    let o = cli(&["block", "put", "--peer", peer, f]).await;
    if o.status.success() {
        Ok(stdout(&o).trim().to_string())
    } else {
        Err(format!("{}: {}", o.status, stderr(&o).trim()))
    }
}

/// `block get --peer PEER KEY -o FILE`: the bytes written, or the error.
pub async fn get_file(peer: &str, key: &str, out: &Path) -> Result<Vec<u8>, String> {
    let f = out.to_str().expect("utf-8 temp path");
    let o = cli(&["block", "get", "--peer", peer, key, "-o", f]).await;
    if !o.status.success() {
        return Err(format!("{}: {}", o.status, stderr(&o).trim()));
    }
    std::fs::read(out).map_err(|e| format!("{}: {e}", out.display()))
}

/// One ring member as `ring --json` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub addr: String,
    pub pred: Option<String>,
    pub succs: Vec<String>,
    pub blocks: u64,
    pub records: u64,
}

/// `ring --peer PEER --json`, parsed.
pub async fn ring_json(peer: &str) -> Result<serde_json::Value, String> {
    let o = cli(&["ring", "--peer", peer, "--json"]).await;
    if !o.status.success() {
        return Err(format!(
            "ring via {peer}: {}: {}",
            o.status,
            stderr(&o).trim()
        ));
    }
    serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("ring via {peer}: bad JSON: {e}: {}", stdout(&o)))
}

/// The members `ring --json` lists from `peer`, in walk order.
pub async fn ring_members(peer: &str) -> Result<Vec<Member>, String> {
    let v = ring_json(peer).await?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| format!("ring via {peer}: no \"nodes\" array: {v}"))?;
    let text = |x: &serde_json::Value| x.as_str().map(str::to_string);
    nodes
        .iter()
        .map(|n| {
            Ok(Member {
                id: text(&n["id"]).ok_or("member without id")?,
                addr: text(&n["addr"]).ok_or("member without addr")?,
                pred: text(&n["predecessor"]),
                succs: n["successors"]
                    .as_array()
                    .ok_or("member without successors")?
                    .iter()
                    .filter_map(text)
                    .collect(),
                blocks: n["blocks"].as_u64().ok_or("member without blocks")?,
                records: n["records"].as_u64().ok_or("member without records")?,
            })
        })
        .collect::<Result<_, &str>>()
        .map_err(|e| format!("ring via {peer}: {e}: {v}"))
}

/// Checks that the walk from every one of `peers` shows exactly the members
/// `expect` (addresses), in one consistent cycle: each member's first
/// successor is the next in the walk and the next one's predecessor is it.
/// Returns the members in walk order from the first peer.
pub async fn ring_consistent(peers: &[String], expect: &[String]) -> Result<Vec<Member>, String> {
    let mut want: Vec<&String> = expect.iter().collect();
    want.sort();
    let mut first: Option<Vec<Member>> = None;
    for p in peers {
        let ms = ring_members(p).await?;
        let mut got: Vec<&String> = ms.iter().map(|m| &m.addr).collect();
        got.sort();
        if got != want {
            return Err(format!("ring via {p} has members {got:?}, want {want:?}"));
        }
        for (i, m) in ms.iter().enumerate() {
            let next = &ms[(i + 1) % ms.len()];
            if m.succs.first() != Some(&next.id) {
                return Err(format!(
                    "via {p}: successor of {} is {:?}, walk says {}",
                    m.addr,
                    m.succs.first(),
                    next.addr
                ));
            }
            if next.pred.as_ref() != Some(&m.id) {
                return Err(format!(
                    "via {p}: predecessor of {} is {:?}, walk says {}",
                    next.addr, next.pred, m.addr
                ));
            }
        }
        // Same cycle from everywhere: compare as (id, successor) pairs.
        if let Some(f) = &first {
            let pairs = |v: &[Member]| {
                let mut x: Vec<(String, String)> = v
                    .iter()
                    .map(|m| (m.id.clone(), m.succs[0].clone()))
                    .collect();
                x.sort();
                x
            };
            if pairs(f) != pairs(&ms) {
                return Err(format!("ring via {p} differs from ring via {}", peers[0]));
            }
        } else {
            first = Some(ms);
        }
    }
    first.ok_or_else(|| "no peer to ask".to_string())
}

/// Options of one node process.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    pub listen: String,
    pub join: Option<String>,
    pub replicas: usize,
    /// Further options (e.g. [`FAST`]).
    pub extra: Vec<String>,
}

impl NodeOpts {
    /// A node on `listen` with r = 3 and the fast timers, joining `join`.
    pub fn new(listen: &str, join: Option<&str>) -> NodeOpts {
        NodeOpts {
            listen: listen.to_string(),
            join: join.map(str::to_string),
            replicas: 3,
            extra: FAST.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A running (or killed) `peerstore node` process this test spawned.
pub struct NodeGuard {
    child: Child,
    /// The node's ID (hex), from its "node <id> listening on <addr>" line.
    pub id: String,
    /// The address it listens on.
    pub addr: String,
    pub opts: NodeOpts,
    /// Data directory (kept across [`NodeGuard::restart`]).
    data: tempfile::TempDir,
    /// Log directory: `runN.out` / `runN.err` per start.
    logs: tempfile::TempDir,
    run: u32,
    exited: Option<ExitStatus>,
}

impl NodeGuard {
    /// Starts a node on a fresh data directory and waits until it is a ring
    /// member.
    pub async fn start(opts: NodeOpts) -> NodeGuard {
        let data = tempfile::Builder::new()
            .prefix("peerstore-data-")
            .tempdir()
            .expect("temp dir");
        let logs = tempfile::Builder::new()
            .prefix("peerstore-logs-")
            .tempdir()
            .expect("temp dir");
        Self::spawn(opts, data, logs, 1).await
    }

    /// Starts the node again on its old data directory and address, after
    /// it was killed or terminated; `join` replaces the join address.
    pub async fn restart(mut self, join: Option<&str>) -> NodeGuard {
        assert!(
            self.exited.is_some() || self.child.try_wait().ok().flatten().is_some(),
            "restart of node {} that is still running",
            self.addr
        );
        let mut opts = self.opts.clone();
        opts.join = join.map(str::to_string);
        let run = self.run + 1;
        // Move the directories out; the dead guard has nothing left to do.
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp dir"));
        let logs = std::mem::replace(&mut self.logs, tempfile::tempdir().expect("temp dir"));
        drop(self);
        Self::spawn(opts, data, logs, run).await
    }

    async fn spawn(
        opts: NodeOpts,
        data: tempfile::TempDir,
        logs: tempfile::TempDir,
        run: u32,
    ) -> NodeGuard {
        let out_path = logs.path().join(format!("run{run}.out"));
        let err_path = logs.path().join(format!("run{run}.err"));
        let out = std::fs::File::create(&out_path).expect("log file");
        let err = std::fs::File::create(&err_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerstore"));
        cmd.arg("node")
            .args(["--listen", &opts.listen])
            .arg("--data")
            .arg(data.path())
            .args(["--replicas", &opts.replicas.to_string()])
            .args(&opts.extra);
        if let Some(j) = &opts.join {
            cmd.args(["--join", j]);
        }
        // Default level (info) unless PEERSTORE_TEST_LOG asks for more.
        match std::env::var("PEERSTORE_TEST_LOG") {
            Ok(l) => cmd.env("RUST_LOG", l),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().expect("spawn peerstore node");
        let mut g = NodeGuard {
            child,
            id: String::new(),
            addr: String::new(),
            opts,
            data,
            logs,
            run,
            exited: None,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(" listening on ")) {
                // "node <id-hex> listening on <addr>"
                let words: Vec<&str> = line.split_whitespace().collect();
                assert!(
                    words.len() == 5 && words[0] == "node" && words[1].len() == 64,
                    "unexpected start line {line:?}"
                );
                g.id = words[1].to_string();
                g.addr = words[4].to_string();
                assert_eq!(
                    g.addr, g.opts.listen,
                    "node reports another address than it was given"
                );
                return g;
            }
            if let Ok(Some(status)) = g.child.try_wait() {
                g.exited = Some(status);
                panic!(
                    "node {} exited during start-up with {status}",
                    g.opts.listen
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "node {} did not become a ring member within {START_TIMEOUT:?}",
                    g.opts.listen
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The log file of the current run's stderr (where the node logs).
    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("run{}.err", self.run))
    }

    /// The current run's log text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = Some(s);
                false
            }
            _ => true,
        }
    }

    /// SIGKILL (by PID) and reap.
    pub fn kill_9(&mut self) {
        assert!(self.is_running(), "node {} is not running", self.addr);
        // `Child::kill` sends SIGKILL to this child's PID on Unix.
        self.child.kill().expect("SIGKILL");
        self.exited = Some(self.child.wait().expect("reap killed node"));
    }

    /// SIGTERM (by PID), then waits up to [`EXIT_TIMEOUT`] for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        assert!(self.is_running(), "node {} is not running", self.addr);
        let pid = self.pid().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {pid} failed");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for node") {
                self.exited = Some(s);
                return s;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                panic!(
                    "node {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of every log of this node, for failure reports.
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for run in 1..=self.run {
            for ext in ["out", "err"] {
                let p = self.logs.path().join(format!("run{run}.{ext}"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(n);
                out.push_str(&format!(
                    "--- {} run {run} {ext} (last {} lines)\n",
                    self.opts.listen,
                    lines.len() - from
                ));
                for l in &lines[from..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() || FAILED.load(Ordering::SeqCst) {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

/// Random bytes of length `n`.
pub fn random_bytes(rng: &mut impl rand::RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// A seed from `PEERSTORE_TEST_SEED`, or a fresh one; printed so a failing
/// run can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = match std::env::var("PEERSTORE_TEST_SEED") {
        Ok(v) => v.parse().expect("PEERSTORE_TEST_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {s} (replay with PEERSTORE_TEST_SEED={s})");
    s
}
