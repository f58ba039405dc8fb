//! The file system benchmark: a 5-node loopback ring (r = 3, encryption on)
//! with one node mounting its folder, against sshfs from a localhost sshd,
//! on the same workload in the same run.
//!
//! Workload, on each mount, after writing and removing a 16 MiB warm-up
//! file:
//! - sequential write: `cp` of a 256 MiB random file, then `sync`;
//! - cold read: drop the page cache (and PeerStore's block cache), `cat`
//!   the file to /dev/null;
//! - small files: create 10,000 files of 4 KiB (100 directories of 100),
//!   written by this process one after another (and counted again until
//!   an `fsync` of the mount's root returned);
//! - no-op `rsync -a --delete` of a local copy of 1,000 of them, after a
//!   first rsync made the mount's copy equal;
//! - `rm -rf` of the small files (and timed again until an `fsync` of the
//!   mount's root returned);
//! - 1000 random 4 KiB `pwrite`s, each followed by `fsync`, into a 64 MiB
//!   file (PeerStore: and then the ring's stored block bytes against r ×
//!   the file's size, once they are stable, at most 60 s after);
//! - PeerStore only: `rm` of the 256 MiB file and `peerstore trash
//!   empty`, and the share of its block bytes freed on the ring, polled
//!   for up to 60 s.
//!
//! Needs root (drop_caches), `fusermount3`, `sshd` and `sshfs`
//! (`apt-get install -y fuse3 openssh-server sshfs`). Nodes listen on
//! 127.0.98.1..5; sshd on 127.0.0.1:2298. Everything started is stopped by
//! PID and unmounted when the bench ends, fails or panics. Sizes:
//! `PEERSTORE_BENCH_MIB` (default 256), `PEERSTORE_BENCH_FILES` (10000);
//! `PEERSTORE_BENCH_NODE_ARGS` adds options to the mounting node (e.g.
//! `--write-back`).
//!
//! Run: `cargo bench --bench mount_vs_sshfs`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 5;
const SSH_PORT: u16 = 2298;

/// Everything this bench started; dropping it stops and unmounts all.
struct Setup {
    /// Node processes (node 0 mounts).
    nodes: Vec<Child>,
    /// sshd, started with -D so it stays our child.
    sshd: Option<Child>,
    /// Mount points to unmount at the end.
    mounts: Vec<PathBuf>,
    /// Work directory (data, keys, mounts).
    dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(m)
                .status();
        }
        for c in self.nodes.iter_mut().chain(self.sshd.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in &self.mounts {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("timed out waiting for {what}"))
}

fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(p.as_str())))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {st}"))
    }
}

fn start(setup: &mut Setup) -> Result<(PathBuf, PathBuf), String> {
    let bin = env!("CARGO_BIN_EXE_peerstore");
    let base = setup.dir.path().to_path_buf();
    let pmnt = base.join("peerstore-mnt");
    let mut ticket = String::new();
    // The tree's owner: a node with --identity needs the file to exist.
    peerstore::fs::Identity::load_or_create(&base.join("identity"))
        .map_err(|e| format!("identity: {e}"))?;
    for i in 0..NODES {
        let mut cmd = Command::new(bin);
        cmd.args(["node", "--listen", &format!("127.0.98.{}:7400", i + 1)])
            .arg("--data")
            .arg(base.join(format!("node{i}")))
            .args(["--replicas", "3"])
            .arg("--identity")
            .arg(base.join("identity"))
            .stdout(Stdio::null())
            .stderr(File::create(base.join(format!("node{i}.log"))).map_err(|e| e.to_string())?);
        // Node 0 creates the network; the others join with its ticket.
        if i > 0 {
            cmd.args(["--join", &ticket]);
        } else {
            cmd.arg("--mount").arg(&pmnt);
            // Extra options of the mounting node (e.g. `--write-back`).
            if let Ok(extra) = std::env::var("PEERSTORE_BENCH_NODE_ARGS") {
                cmd.args(extra.split_whitespace());
            }
        }
        setup
            .nodes
            .push(cmd.spawn().map_err(|e| format!("start node: {e}"))?);
        if i == 0 {
            setup.mounts.push(pmnt.clone());
            wait_for("the PeerStore mount", Duration::from_secs(60), || {
                is_mounted(&pmnt)
            })?;
            let out = Command::new(bin)
                .args(["invite", "--data"])
                .arg(base.join("node0"))
                .output()
                .map_err(|e| format!("peerstore invite: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "peerstore invite: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            ticket = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
    }
    // Let the ring settle (5 members, fingers) before measuring.
    wait_for("a 5-member ring", Duration::from_secs(60), || {
        Command::new(bin)
            .args(["ring", "--json", "--peer", "127.0.98.1:7400"])
            .env("PEERSTORE_TICKET", &ticket)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["nodes"].as_array().map(|a| a.len() == NODES))
            .unwrap_or(false)
    })?;
    std::thread::sleep(Duration::from_secs(3));

    // sshd on loopback with throwaway keys, and sshfs from it.
    let keys = base.join("ssh");
    fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
    for k in ["host", "client"] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(keys.join(k)))?;
    }
    let auth = keys.join("authorized_keys");
    fs::copy(keys.join("client.pub"), &auth).map_err(|e| e.to_string())?;
    fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
    let sshd = Command::new("/usr/sbin/sshd")
        .args([
            "-D",
            "-e",
            "-p",
            &SSH_PORT.to_string(),
            "-o",
            "ListenAddress=127.0.0.1",
            "-h",
        ])
        .arg(keys.join("host"))
        .arg("-o")
        .arg(format!("AuthorizedKeysFile={}", auth.display()))
        .args(["-o", "StrictModes=no", "-o", "PidFile=none"])
        .stderr(File::create(base.join("sshd.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start sshd (apt-get install -y openssh-server): {e}"))?;
    setup.sshd = Some(sshd);
    std::thread::sleep(Duration::from_millis(500));
    let remote = base.join("sshfs-remote");
    let smnt = base.join("sshfs-mnt");
    fs::create_dir_all(&remote).map_err(|e| e.to_string())?;
    fs::create_dir_all(&smnt).map_err(|e| e.to_string())?;
    run(Command::new("sshfs")
        .args(["-p", &SSH_PORT.to_string(), "-o"])
        .arg(format!(
            "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null",
            keys.join("client").display()
        ))
        .arg(format!("root@127.0.0.1:{}", remote.display()))
        .arg(&smnt))
    .map_err(|e| format!("{e} (apt-get install -y sshfs)"))?;
    setup.mounts.push(smnt.clone());
    Ok((pmnt, smnt))
}

fn drop_caches(peerstore_cache: Option<&Path>) -> Result<(), String> {
    if let Some(c) = peerstore_cache
        && let Ok(rd) = fs::read_dir(c)
    {
        for sub in rd.flatten() {
            if sub.path().is_dir() {
                for f in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
    }
    run(&mut Command::new("sync"))?;
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches (needs root): {e}"))
}

/// Bytes of the block files of every node's store under `nodes` (data
/// directories).
fn ring_block_bytes(nodes: &[PathBuf]) -> u64 {
    let mut total = 0;
    for n in nodes {
        for sub in fs::read_dir(n.join("store/blocks"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Polls the ring's block bytes until `done(bytes)` or `limit`; the last
/// reading and the time it took.
fn poll_blocks(
    nodes: &[PathBuf],
    limit: Duration,
    mut done: impl FnMut(u64) -> bool,
) -> (u64, f64) {
    let t = Instant::now();
    loop {
        let b = ring_block_bytes(nodes);
        if done(b) || t.elapsed() >= limit {
            return (b, t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What one mount measured.
struct Results {
    write: f64,
    read: f64,
    creates: f64,
    /// Creates per second counting until an `fsync` of the mount's root
    /// returned (PeerStore writes new files' entries and small files
    /// behind their `close`).
    creates_settled: f64,
    rsync_noop: f64,
    rm_rf: f64,
    /// `rm -rf` and then an `fsync` of the mount's root (PeerStore writes
    /// removals behind the `unlink`).
    rm_rf_settled: f64,
    pwrite_fsync: f64,
    /// PeerStore: ring block bytes after the pwrites ÷ (r × file size).
    pwrite_space: Option<f64>,
    /// PeerStore: share of the big file's block bytes freed by `rm`, and
    /// seconds it took.
    rm_freed: Option<(f64, f64)>,
}

/// `fsync` of directory `dir` (on PeerStore: waits for everything written
/// behind).
fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// 1000 random 4 KiB `pwrite` + `fsync` into a 64 MiB file: seconds.
fn pwrite_fsync(path: &Path) -> Result<f64, String> {
    use std::os::unix::fs::FileExt;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let size: u64 = 64 << 20;
    let f = fs::File::create(path).map_err(err)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let chunk: Vec<u8> = (0..1 << 20).map(|_| next() as u8).collect();
    for i in 0..64u64 {
        f.write_all_at(&chunk, i << 20).map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    let page: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
    let t = Instant::now();
    for _ in 0..1000 {
        let off = (next() % (size / 4096)) * 4096;
        f.write_all_at(&page, off).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    Ok(secs)
}

/// Every measurement on one mount; `nodes` are PeerStore's data
/// directories (for the ring's stored bytes).
fn workload(
    mnt: &Path,
    src: &Path,
    mib: u64,
    files: u64,
    cache: Option<&Path>,
    nodes: Option<&[PathBuf]>,
) -> Result<Results, String> {
    // Warm-up, the same on both mounts: open connections, settle routes.
    let warm = mnt.join("warm-up");
    fs::write(&warm, vec![7u8; 16 << 20]).map_err(|e| format!("{}: {e}", warm.display()))?;
    fs::remove_file(&warm).map_err(|e| format!("{}: {e}", warm.display()))?;
    let bytes = (mib << 20) as f64;
    let dst = mnt.join("big");
    let t = Instant::now();
    run(Command::new("cp").arg(src).arg(&dst))?;
    run(&mut Command::new("sync"))?;
    let write = bytes / t.elapsed().as_secs_f64() / 1e6;
    drop_caches(cache)?;
    let t = Instant::now();
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' > /dev/null", dst.display())))?;
    let read = bytes / t.elapsed().as_secs_f64() / 1e6;
    let data = vec![0x5au8; 4096];
    let t = Instant::now();
    for i in 0..files {
        let d = mnt.join(format!("small/d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut f = fs::File::create(d.join(format!("f{i}"))).map_err(|e| e.to_string())?;
        f.write_all(&data).map_err(|e| e.to_string())?;
    }
    let creates = files as f64 / t.elapsed().as_secs_f64();
    sync_dir(mnt)?;
    let creates_settled = files as f64 / t.elapsed().as_secs_f64();

    // No-op rsync of a local tree the mount already has.
    let local = src.with_file_name("rsync-src");
    for i in 0..1000u64 {
        let d = local.join(format!("d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        fs::write(d.join(format!("f{i}")), &data).map_err(|e| e.to_string())?;
    }
    let rsync = |dst: &Path| {
        run(Command::new("rsync")
            .args(["-a", "--delete"])
            .arg(format!("{}/", local.display()))
            .arg(dst))
    };
    let tree = mnt.join("rsynced");
    rsync(&tree)?;
    let t = Instant::now();
    rsync(&tree)?;
    let rsync_noop = t.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&local);

    let t = Instant::now();
    run(Command::new("rm").arg("-rf").arg(mnt.join("small")))?;
    let rm_rf = t.elapsed().as_secs_f64();
    sync_dir(mnt)?;
    let rm_rf_settled = t.elapsed().as_secs_f64();

    let before = nodes.map(ring_block_bytes);
    let pwrite = pwrite_fsync(&mnt.join("pwrite.bin"))?;
    let pwrite_space = match (nodes, before) {
        (Some(n), Some(b0)) => {
            // Stable: the same reading a second apart, within 60 s.
            let mut last = u64::MAX;
            let (b1, _) = poll_blocks(n, Duration::from_secs(60), |b| {
                let same = b == last;
                last = b;
                if !same {
                    std::thread::sleep(Duration::from_millis(750));
                }
                same
            });
            Some(b1.saturating_sub(b0) as f64 / (3.0 * (64u64 << 20) as f64))
        }
        _ => None,
    };

    let rm_freed = match nodes {
        Some(n) => {
            let b0 = ring_block_bytes(n);
            run(Command::new("rm").arg(&dst))?;
            // The mount moves a removed file to the trash behind the
            // `unlink`; an fsync of its directory waits for that.
            File::open(mnt)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("fsync {}: {e}", mnt.display()))?;
            // A deleted file waits in the trash (30 days by default):
            // emptying it is what frees the space.
            let data = &n[0];
            let identity = data
                .parent()
                .map(|b| b.join("identity"))
                .unwrap_or_default();
            run(Command::new(env!("CARGO_BIN_EXE_peerstore"))
                .args(["trash", "empty", "--data"])
                .arg(data)
                .arg("--identity")
                .arg(identity)
                .stdout(Stdio::null()))?;
            let target = 3 * (mib << 20);
            let (b1, secs) = poll_blocks(n, Duration::from_secs(60), |b| {
                b0.saturating_sub(b) * 100 >= target * 95
            });
            Some((b0.saturating_sub(b1) as f64 / target as f64, secs))
        }
        None => None,
    };
    Ok(Results {
        write,
        read,
        creates,
        creates_settled,
        rsync_noop,
        rm_rf,
        rm_rf_settled,
        pwrite_fsync: pwrite,
        pwrite_space,
        rm_freed,
    })
}

fn main() -> ExitCode {
    let mib = env_num("PEERSTORE_BENCH_MIB", 256);
    let files = env_num("PEERSTORE_BENCH_FILES", 10_000);
    let mut setup = Setup {
        nodes: Vec::new(),
        sshd: None,
        mounts: Vec::new(),
        dir: match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("tempdir: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = (|| -> Result<_, String> {
        let (pmnt, smnt) = start(&mut setup)?;
        let src = setup.dir.path().join("random.bin");
        run(Command::new("head")
            .args(["-c", &(mib << 20).to_string(), "/dev/urandom"])
            .stdout(File::create(&src).map_err(|e| e.to_string())?))?;
        let cache = setup.dir.path().join("node0/cache");
        let nodes: Vec<PathBuf> = (0..NODES)
            .map(|i| setup.dir.path().join(format!("node{i}")))
            .collect();
        let p = workload(&pmnt, &src, mib, files, Some(&cache), Some(&nodes))?;
        let s = workload(&smnt, &src, mib, files, None, None)?;
        Ok((p, s))
    })();
    match result {
        Ok((p, s)) => {
            println!(
                "{:<30} {:>12} {:>12} {:>8}",
                "workload", "peerstore", "sshfs", "ratio"
            );
            let row = |name: String, unit: &str, a: f64, b: f64| {
                println!(
                    "{name:<30} {a:>8.2} {unit:<3} {b:>8.2} {unit:<3} {:>8.2}",
                    a / b
                );
            };
            row(format!("write {mib} MiB + sync"), "MB/s", p.write, s.write);
            row("cold read (cat)".into(), "MB/s", p.read, s.read);
            row(
                format!("create {files} x 4 KiB"),
                "/s",
                p.creates,
                s.creates,
            );
            row(
                "  then fsync of the mount".into(),
                "/s",
                p.creates_settled,
                s.creates_settled,
            );
            row(
                "no-op rsync -a --delete, 1000".into(),
                "s",
                p.rsync_noop,
                s.rsync_noop,
            );
            row(format!("rm -rf {files} files"), "s", p.rm_rf, s.rm_rf);
            row(
                "  then fsync of the mount".into(),
                "s",
                p.rm_rf_settled,
                s.rm_rf_settled,
            );
            row(
                "1000 x 4 KiB pwrite+fsync".into(),
                "s",
                p.pwrite_fsync,
                s.pwrite_fsync,
            );
            if let Some(x) = p.pwrite_space {
                println!("ring block bytes added by the 64 MiB pwrite file: {x:.2} x (r x size)");
            }
            if let Some((share, secs)) = p.rm_freed {
                println!(
                    "rm of the {mib} MiB file, then trash empty: {:.1}% of its r copies freed in {secs:.1} s",
                    share * 100.0
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
