//! Shared harness of the process-level tests: real `peerstore node`
//! processes on loopback addresses, the CLI run as a child process, and
//! bounded waits.
//!
//! Every test uses its own loopback block `127.0.<block>.<n>` (port
//! [`port`]), so tests run in parallel without port clashes; no address
//! outside 127.0.0.0/8 is ever used. A [`NodeGuard`] owns its process and
//! its data directory: dropping it kills the process (by PID, only processes
//! this harness spawned) and removes the directory; if the test is failing,
//! the tail of the node's logs is printed first. Every wait is bounded, and
//! [`with_timeout`] bounds a whole test.
//!
//! A node started with [`NodeOpts::mounted`] also mounts its file tree
//! (`--mount DIR --identity FILE`) on a fresh folder its guard owns
//! ([`MountDir`], kept across a restart); dropping the guard kills the
//! process first, then detaches whatever is still mounted there
//! (`fusermount3 -u -z`, else `umount -l`). Shell tools run through
//! [`run_tool`] / [`tool`] and file I/O on a mount through [`blocking`],
//! each with a deadline, so a hung file system fails the test instead of
//! hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Port every test node listens on (the IP differs per node), unless
/// `PEERSTORE_TEST_PORT` names another (so two checkouts can run their
/// tests at once).
pub fn port() -> u16 {
    std::env::var("PEERSTORE_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7400)
}
/// How long a node may take to start and join.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a terminated node may take to leave and exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Node options that make the ring converge quickly. The call timeout
/// stays at 2 s: a fsynced 1 MiB write on a loaded 2-core machine can take
/// most of a second, and a shorter timeout made puts fail spuriously.
pub const FAST: &[&str] = &[
    "--stabilize-ms",
    "200",
    "--repair-secs",
    "1",
    "--rpc-timeout-ms",
    "2000",
];

/// Set when a test timed out, so guards dropped afterwards print their logs.
static FAILED: AtomicBool = AtomicBool::new(false);

/// The loopback address of node `n` of the test using `block`.
pub fn addr(block: u8, n: u8) -> String {
    format!("127.0.{block}.{n}:{}", port())
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

/// The network secret of every node and command this test process starts
/// (random per process, so tests of two runs never talk to each other).
pub fn test_secret() -> peerstore::net::NetworkSecret {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    peerstore::net::NetworkSecret::from_bytes(*SECRET.get_or_init(rand::random))
}

/// A join ticket for the test network via `addr`.
pub fn test_ticket(addr: &str) -> String {
    peerstore::network::Ticket {
        secret: test_secret(),
        addr: addr.to_string(),
    }
    .encode()
}

/// Link keys in the test network: a fresh static key and the test secret.
pub fn test_keys() -> peerstore::net::LinkKeys {
    peerstore::net::LinkKeys {
        key: peerstore::net::StaticKey::generate(),
        secret: test_secret(),
    }
}

/// Puts the test network's secret into data directory `dir` (mode 0600),
/// as `peerstore node --join TICKET` would.
pub fn admit(dir: &Path) {
    let t = peerstore::network::Ticket::parse(&test_ticket("127.0.0.1:1")).expect("ticket");
    peerstore::network::adopt(dir, &t).expect("store the test network secret");
}

/// Runs the `peerstore` binary with `args` in the test network (its
/// ticket in `PEERSTORE_TICKET`), killing it after [`CLI_TIMEOUT`].
pub async fn cli(args: &[&str]) -> Output {
    cli_with(args, &[("PEERSTORE_TICKET", &test_ticket("127.0.0.1:1"))]).await
}

/// Runs the `peerstore` binary with `args` and environment `env` only
/// (no test ticket unless given), killing it after [`CLI_TIMEOUT`].
pub async fn cli_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    cli_in(None, args, env).await
}

/// [`cli_with`], run in network namespace `ns` (`/run/netns/NS`) if given.
pub async fn cli_in(ns: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::from(peerstore_in(ns));
    // An identity of this test process's own, unless one is given: a
    // command that needs one never writes the user's home.
    let identity =
        std::env::temp_dir().join(format!("peerstore-test-identity-{}", std::process::id()));
    ensure_identity(&identity);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("PEERSTORE_PEER")
        .env_remove("PEERSTORE_TICKET")
        .env_remove("PEERSTORE_TICKET_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("PEERSTORE_IDENTITY", &identity);
    // An empty value removes the variable.
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run peerstore {args:?}: {e}"),
        Err(_) => panic!("peerstore {args:?} did not finish within {CLI_TIMEOUT:?}"),
    }
}

/// The `peerstore` binary as a command, run in network namespace `ns`
/// (`/run/netns/NS`) if given: nsenter execs it, so the child's PID is
/// peerstore's.
pub fn peerstore_in(ns: Option<&str>) -> Command {
    match ns {
        None => Command::new(env!("CARGO_BIN_EXE_peerstore")),
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg(env!("CARGO_BIN_EXE_peerstore"));
            c
        }
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
    ring_json_in(None, peer).await
}

/// [`ring_json`] from inside network namespace `ns`, if given.
pub async fn ring_json_in(ns: Option<&str>, peer: &str) -> Result<serde_json::Value, String> {
    let ticket = test_ticket("127.0.0.1:1");
    let o = cli_in(
        ns,
        &["ring", "--peer", peer, "--json"],
        &[("PEERSTORE_TICKET", &ticket)],
    )
    .await;
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
    ring_members_in(None, peer).await
}

/// [`ring_members`] from inside network namespace `ns`, if given.
pub async fn ring_members_in(ns: Option<&str>, peer: &str) -> Result<Vec<Member>, String> {
    let v = ring_json_in(ns, peer).await?;
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
    ring_consistent_in(None, peers, expect).await
}

/// [`ring_consistent`] from inside network namespace `ns`, if given.
pub async fn ring_consistent_in(
    ns: Option<&str>,
    peers: &[String],
    expect: &[String],
) -> Result<Vec<Member>, String> {
    let mut want: Vec<&String> = expect.iter().collect();
    want.sort();
    let mut first: Option<Vec<Member>> = None;
    for p in peers {
        let ms = ring_members_in(ns, p).await?;
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
            // The whole successor list, not only its head: a node whose
            // list covers the ring answers lookups from it, so a list
            // missing a newer member would name the wrong owner.
            for (d, s) in m.succs.iter().enumerate().take(ms.len() - 1) {
                let want = &ms[(i + 1 + d) % ms.len()].id;
                if s != want {
                    return Err(format!(
                        "via {p}: successor {d} of {} is {s}, walk says {want}",
                        m.addr
                    ));
                }
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

/// Creates the identity file `path` (mode 0600) unless it exists.
pub fn ensure_identity(path: &Path) {
    peerstore::fs::Identity::load_or_create(path).expect("identity file");
}

/// Options of one node process.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    pub listen: String,
    pub join: Option<String>,
    pub replicas: usize,
    /// Further options (e.g. [`FAST`]).
    pub extra: Vec<String>,
    /// With `Some(identity file)`, the node also mounts the file tree of
    /// that identity (`--mount DIR --identity FILE`) on a folder its guard
    /// owns ([`NodeGuard::mount_dir`]).
    pub mount: Option<PathBuf>,
    /// Leave the data directory without the test network's secret: the
    /// node creates a network of its own, or adopts the one of a ticket
    /// given as `join`.
    pub own_network: bool,
    /// With `Some(bytes)`, the node's store lives on a tmpfs of that size
    /// (a small disk that fills up), mounted by its guard.
    pub store_size: Option<u64>,
    /// With `Some(dir)`, the data directory starts as a copy of `dir`
    /// (for instance a node's data written by an earlier release).
    pub data_from: Option<PathBuf>,
    /// With `Some(ns)`, the node runs in network namespace `ns`
    /// (`nsenter --net=/run/netns/NS`).
    pub netns: Option<String>,
    /// With `Some(dir)`, the node's `XDG_CONFIG_HOME` (where `peerstore
    /// login` keeps its session): a machine of its own. A node that
    /// mounts with an empty identity path acts as the session's account.
    pub config_home: Option<PathBuf>,
}

impl NodeOpts {
    /// A node on `listen` with r = 3 and the fast timers, joining `join`.
    pub fn new(listen: &str, join: Option<&str>) -> NodeOpts {
        NodeOpts {
            listen: listen.to_string(),
            join: join.map(str::to_string),
            replicas: 3,
            extra: FAST.iter().map(|s| s.to_string()).collect(),
            mount: None,
            own_network: false,
            store_size: None,
            data_from: None,
            netns: None,
            config_home: None,
        }
    }

    /// Like [`NodeOpts::new`], and the node mounts the tree of the account
    /// logged in on the machine whose configuration is `config_home`.
    pub fn mounted_as(listen: &str, join: Option<&str>, config_home: &Path) -> NodeOpts {
        NodeOpts {
            mount: Some(PathBuf::new()),
            config_home: Some(config_home.to_path_buf()),
            ..NodeOpts::new(listen, join)
        }
    }

    /// Like [`NodeOpts::new`], and the node mounts the tree of `identity`.
    pub fn mounted(listen: &str, join: Option<&str>, identity: &Path) -> NodeOpts {
        NodeOpts {
            mount: Some(identity.to_path_buf()),
            ..NodeOpts::new(listen, join)
        }
    }
}

/// Starts a ring of `n` nodes on block `block`: node 1 with `first` (which
/// must listen on `addr(block, 1)`), the others plain and joining it; waits
/// until the ring is consistent.
pub async fn start_ring(block: u8, n: u8, first: NodeOpts) -> Vec<NodeGuard> {
    let via = first.listen.clone();
    let mut nodes = vec![NodeGuard::start(first).await];
    for i in 2..=n {
        nodes.push(NodeGuard::start(NodeOpts::new(&addr(block, i), Some(&via))).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
    wait_until(&format!("{n}-node ring"), Duration::from_secs(30), || {
        ring_consistent(&addrs, &addrs)
    })
    .await;
    nodes
}

/// How long unmounting a folder (`fusermount3`, `umount`) may take.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` (stdin closed, output captured), killing it (by PID) if it
/// is still running after `limit`; `Err` then. Blocks the calling thread:
/// from async code use [`tool`].
pub fn run_tool(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    use std::io::Read;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (is its Debian package installed? see .ci/run)"
            } else {
                ""
            };
            format!("cannot run {what}: {e}{hint}")
        })?;
    // Drain both pipes in threads, so a chatty tool never blocks on them.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {limit:?}; killed"));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// [`run_tool`] off the async threads; panics unless the tool ran to
/// completion and exited 0. Returns its output.
pub async fn tool(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    // A copy to move to the worker thread (program, arguments, directory,
    // environment changes).
    let mut owned = Command::new(cmd.get_program());
    owned.args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        owned.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => owned.env(k, v),
            None => owned.env_remove(k),
        };
    }
    let out = blocking(&what, limit + Duration::from_secs(5), move || {
        run_tool(&mut owned, limit)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{what} failed with {}:\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Runs the blocking `f` (e.g. file I/O through a mount, which hangs if the
/// file system does) on its own thread and waits at most `limit` for it;
/// panics with `what` on expiry, re-raises a panic of `f`. A thread stuck
/// in a system call is left behind: it returns once the mount is gone.
pub async fn blocking<T, F>(what: &str, limit: Duration, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(p))) => std::panic::resume_unwind(p),
        Ok(Err(_)) => panic!("{what}: worker thread vanished"),
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Whether something is mounted at `dir` (per /proc/mounts; `dir` must be
/// absolute and free of symbolic links, as the temporary folders here are).
pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// The /proc/mounts line of the mount at `dir`, if any.
pub fn mount_line(dir: &Path) -> Option<String> {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want.as_str()))
        .map(str::to_string)
}

/// Detaches whatever is mounted at `dir`, lazily: `fusermount3 -u -z`, else
/// `umount -l`, each bounded. Returns whether `dir` is unmounted afterwards.
pub fn force_unmount(dir: &Path) -> bool {
    for _ in 0..3 {
        if !is_mounted(dir) {
            return true;
        }
        let fuse = run_tool(
            Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(dir),
            UNMOUNT_TIMEOUT,
        );
        if !fuse.is_ok_and(|o| o.status.success()) && is_mounted(dir) {
            let _ = run_tool(Command::new("umount").arg("-l").arg(dir), UNMOUNT_TIMEOUT);
        }
    }
    !is_mounted(dir)
}

/// The folder a node mounts on: `<temp dir>/mnt`. Dropping it detaches any
/// mount left there (after the node was killed: its [`NodeGuard`] kills
/// the process first) and removes the folder, but never removes anything
/// while a mount is still there.
pub struct MountDir {
    parent: Option<tempfile::TempDir>,
    dir: PathBuf,
}

impl MountDir {
    /// A fresh, empty mount folder.
    pub fn new() -> MountDir {
        let parent = tempfile::Builder::new()
            .prefix("peerstore-mnt-")
            .tempdir()
            .expect("temp dir");
        let parent_path = parent.path().canonicalize().expect("temp dir path");
        let dir = parent_path.join("mnt");
        std::fs::create_dir(&dir).expect("mount folder");
        MountDir {
            parent: Some(parent),
            dir,
        }
    }

    /// The mount folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Default for MountDir {
    fn default() -> Self {
        MountDir::new()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if !force_unmount(&self.dir) {
            eprintln!(
                "warning: {} is still mounted; leaving its folder in place",
                self.dir.display()
            );
            if let Some(p) = self.parent.take() {
                let _ = p.keep();
            }
        }
    }
}

/// A tmpfs of a fixed size mounted by a test; unmounted (lazily) on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `dir` (created if missing).
    pub fn mount(dir: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("tmpfs mount point");
        let out = run_tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
            UNMOUNT_TIMEOUT,
        )
        .expect("mount tmpfs");
        assert!(
            out.status.success(),
            "mount tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Changes its size (files stay).
    pub fn resize(&self, size: u64) {
        let out = run_tool(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.dir),
            UNMOUNT_TIMEOUT,
        )
        .expect("remount tmpfs");
        assert!(
            out.status.success(),
            "resize tmpfs at {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_tool(
            Command::new("umount").arg("-l").arg(&self.dir),
            UNMOUNT_TIMEOUT,
        );
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
    /// The small file system under the store, if any (dropped before the
    /// data directory, so it is unmounted before that is removed).
    store_fs: Option<Tmpfs>,
    /// Data directory (kept across [`NodeGuard::restart`]).
    data: tempfile::TempDir,
    /// The mount folder of a mounting node (fresh per [`NodeGuard::start`],
    /// kept across [`NodeGuard::restart`]); dropped after the process is
    /// killed, which detaches the mount.
    mnt: Option<MountDir>,
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
        let mnt = opts.mount.as_ref().map(|_| MountDir::new());
        if let Some(src) = &opts.data_from {
            let st = Command::new("cp")
                .arg("-a")
                .arg(src.join("."))
                .arg(data.path())
                .status()
                .expect("run cp");
            assert!(st.success(), "copying {} failed", src.display());
        }
        if !opts.own_network {
            admit(data.path());
        }
        let store_fs = opts
            .store_size
            .map(|size| Tmpfs::mount(&data.path().join("store"), size));
        let mut g = Self::spawn(opts, data, logs, mnt, 1).await;
        g.store_fs = store_fs;
        g
    }

    /// Resizes the tmpfs under the store (the node must have one).
    pub fn resize_store(&self, size: u64) {
        self.store_fs
            .as_ref()
            .unwrap_or_else(|| panic!("node {} has no store file system", self.addr))
            .resize(size);
    }

    /// Stops the process (SIGSTOP, by PID): it holds its state and
    /// sockets but answers nothing, as a machine cut off by a partition.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, sig: &str) {
        assert!(self.is_running(), "node {} is not running", self.addr);
        let pid = self.pid().to_string();
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {pid} failed");
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
        // The same folder: a dead mount left on it is for the node to clear.
        let mnt = self.mnt.take();
        let store_fs = self.store_fs.take();
        drop(self);
        let mut g = Self::spawn(opts, data, logs, mnt, run).await;
        g.store_fs = store_fs;
        g
    }

    async fn spawn(
        opts: NodeOpts,
        data: tempfile::TempDir,
        logs: tempfile::TempDir,
        mnt: Option<MountDir>,
        run: u32,
    ) -> NodeGuard {
        let out_path = logs.path().join(format!("run{run}.out"));
        let err_path = logs.path().join(format!("run{run}.err"));
        let out = std::fs::File::create(&out_path).expect("log file");
        let err = std::fs::File::create(&err_path).expect("log file");
        let mut cmd = peerstore_in(opts.netns.as_deref());
        cmd.arg("node")
            .args(["--listen", &opts.listen])
            .arg("--data")
            .arg(data.path())
            .args(["--replicas", &opts.replicas.to_string()])
            .args(&opts.extra);
        if let Some(j) = &opts.join {
            cmd.args(["--join", j]);
        }
        if let (Some(identity), Some(m)) = (&opts.mount, &mnt) {
            cmd.arg("--mount").arg(m.path());
            if !identity.as_os_str().is_empty() {
                ensure_identity(identity);
                cmd.arg("--identity").arg(identity);
            }
        }
        cmd.env_remove("PEERSTORE_IDENTITY");
        if let Some(c) = &opts.config_home {
            cmd.env("XDG_CONFIG_HOME", c);
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
            store_fs: None,
            data,
            mnt,
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
                // A mounting node prints "mounted at DIR" once it is.
                let mounted = match &g.mnt {
                    None => true,
                    Some(m) => {
                        text.lines().any(|l| l.starts_with("mounted at "))
                            && mount_line(m.path()).is_some_and(|l| l.contains(" fuse"))
                    }
                };
                if mounted {
                    return g;
                }
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

    /// The mount folder (panics for a node started without a mount).
    pub fn mount_dir(&self) -> &Path {
        self.mnt
            .as_ref()
            .unwrap_or_else(|| panic!("node {} does not mount", self.addr))
            .path()
    }

    /// Waits until the mount's journal is empty: every write it
    /// acknowledged (write-back) is on the ring. Panics after 30 s.
    pub async fn settle(&self) {
        let dir = self.data.path().join("journal");
        let limit = Duration::from_secs(30);
        let start = Instant::now();
        loop {
            let pending = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                })
                .unwrap_or(false);
            if !pending {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "node {}: its journal did not empty within {limit:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `limit` for the process to exit by itself; its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited {
                return s;
            }
            if let Some(s) = self.child.try_wait().expect("wait for node") {
                self.exited = Some(s);
                return s;
            }
            if start.elapsed() > limit {
                panic!("node {} did not exit within {limit:?}", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            // PEERSTORE_TEST_LOG_LINES shows more (with PEERSTORE_TEST_LOG=debug).
            let n = std::env::var("PEERSTORE_TEST_LOG_LINES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(40);
            eprintln!("{}", self.log_tail(n));
        }
    }
}

/// What a node's store holds (read from its files and packs, without
/// changing anything); nothing if it cannot be read.
pub fn store_held(data_dir: &Path) -> peerstore::store::Held {
    peerstore::store::held_in(&data_dir.join("store")).unwrap_or_default()
}

/// Bytes of every block a node's store holds (the garbage its packs have
/// not compacted yet left out).
pub fn block_bytes(data_dir: &Path) -> u64 {
    store_held(data_dir).blocks.values().sum()
}

/// Whether a node's store holds block `key` (hex).
pub fn holds_block(data_dir: &Path, key: &str) -> bool {
    key.parse()
        .is_ok_and(|k| store_held(data_dir).blocks.contains_key(&k))
}

/// Waits (at most `limit`) until the stores in `data_dirs` hold at most
/// 5 % of `held` block bytes; the bytes left.
pub async fn blocks_freed(what: &str, data_dirs: &[PathBuf], held: u64, limit: Duration) -> u64 {
    let (left, _) = wait_until(what, limit, || {
        let dirs = data_dirs.to_vec();
        async move {
            let left: u64 = dirs.iter().map(|d| block_bytes(d)).sum();
            (left * 20 <= held)
                .then_some(left)
                .ok_or(format!("{left} of {held} block bytes left"))
        }
    })
    .await;
    left
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

/// `close(2)` of `f` with its result (dropping a `File` ignores it, and an
/// error of a FUSE mount's final store is reported only there).
pub fn close(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by the `File`, which owned it; it is
    // closed exactly once here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates (or truncates) `path` with `data` and closes it explicitly.
pub fn write_closed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    close(f)
}

/// How long one `ip` or `nft` command may take.
pub const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` (killed after [`IP_TIMEOUT`]), panicking with its output if
/// it fails.
fn run_ok(cmd: &mut Command) {
    let out = run_tool(cmd, IP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of a test, deleted (with its rules) on drop.
/// Needs root, `ip` (iproute2) and `nft` (nftables).
pub struct Netns(pub String);

impl Netns {
    /// A new namespace `PREFIX-<pid>` with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        // A leftover of a crashed run with this PID would make `add` fail.
        let _ = run_tool(Command::new("ip").args(["netns", "del", &name]), IP_TIMEOUT);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        run_ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    /// Drops every packet between `a` and `b` (addresses), both ways.
    pub fn cut(&self, a: &[String], b: &[String]) {
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
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.0, "nft", "-f"])
                .arg(&path),
        );
        let _ = std::fs::remove_file(&path);
    }

    /// Deletes the rule of [`Netns::cut`].
    pub fn heal(&self) {
        run_ok(Command::new("ip").args([
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

/// Starts nodes 1..=`n` (`opts(i, join)`; every node after the first
/// joins the first) in namespace `ns`, and waits until they form one
/// consistent ring; the guards and the nodes' addresses.
pub async fn ring_in(
    ns: &str,
    n: u8,
    opts: impl Fn(u8, Option<&str>) -> NodeOpts,
) -> (Vec<NodeGuard>, Vec<String>) {
    let mut nodes = vec![NodeGuard::start(opts(1, None)).await];
    let via = nodes[0].addr.clone();
    for i in 2..=n {
        nodes.push(NodeGuard::start(opts(i, Some(&via))).await);
    }
    let all: Vec<String> = nodes.iter().map(|g| g.addr.clone()).collect();
    wait_until(
        &format!("a ring of {n} in namespace {ns}"),
        Duration::from_secs(30),
        || ring_consistent_in(Some(ns), &all, &all),
    )
    .await;
    (nodes, all)
}

/// Every file under `dir` (and one level of subdirectories), by relative
/// path, with its content.
pub fn tree(dir: &Path) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("list {}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().map_err(|e| e.to_string())?.is_dir() {
                if prefix.is_empty() {
                    todo.push((e.path(), format!("{name}/")));
                }
            } else {
                let data = std::fs::read(e.path()).map_err(|e| format!("read {name}: {e}"))?;
                out.insert(name, data);
            }
        }
    }
    Ok(out)
}

/// `GET url` (plain HTTP on loopback), its body.
pub async fn http_get(url: &str) -> Result<String, String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map_err(|e| e.to_string())?
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
