//! Small-file copy into the mounted folder of rings of 1, 2 and 5 nodes.
//!
//! For each ring size (`PEERSTORE_BENCH_RINGS`, default `1,2,5`): start the
//! nodes on 127.0.(110+N).1..N (node 1 mounts its folder, r = 3, so rings
//! of 1 and 2 keep a copy on every member), then time `cp -r` of a
//! directory of `PEERSTORE_BENCH_FILES` (default 300) files of 4 KiB
//! followed by `sync`, and check the copy with `diff -r`. Rounds
//! (`PEERSTORE_BENCH_ROUNDS`, default 3) alternate the sizes, so a busy
//! machine hurts each alike. Prints files/s per round and each size's best
//! against the largest ring's best.
//!
//! Needs root (FUSE mounts) and `fusermount3`. Everything started is
//! stopped by PID and unmounted when the bench ends, fails or panics.
//!
//! Run: `cargo bench --bench ring_sizes`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 7400;

/// The nodes of one ring and its mount; dropping it unmounts and kills.
struct Ring {
    nodes: Vec<Child>,
    mnt: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn addr(n: usize, i: usize) -> String {
    format!("127.0.{}.{}:{PORT}", 110 + n, i + 1)
}

fn is_mounted(p: &Path) -> bool {
    let want = p.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// Starts a ring of `n` nodes, node 1 mounting; returns once it is whole.
fn start(n: usize) -> Result<Ring, String> {
    let dir = tempfile::Builder::new()
        .prefix("peerstore-sizes-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    let mut ring = Ring {
        nodes: Vec::new(),
        mnt: mnt.clone(),
        dir,
    };
    let bin = env!("CARGO_BIN_EXE_peerstore");
    for i in 0..n {
        let data = ring.dir.path().join(format!("n{i}"));
        let log =
            File::create(ring.dir.path().join(format!("n{i}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(["node", "--listen", &addr(n, i)])
            .arg("--data")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if i == 0 {
            cmd.arg("--mount")
                .arg(&mnt)
                .arg("--identity")
                .arg(ring.dir.path().join("identity"));
        } else {
            let ticket = Command::new(bin)
                .args(["invite", "--addr", &addr(n, 0), "--data"])
                .arg(ring.dir.path().join("n0"))
                .output()
                .map_err(|e| e.to_string())?;
            let ticket = String::from_utf8_lossy(&ticket.stdout).trim().to_string();
            cmd.args(["--join", &ticket]);
        }
        ring.nodes
            .push(cmd.spawn().map_err(|e| format!("start node {i}: {e}"))?);
        // Each joins before the next starts (node 1 first creates the
        // network the others' tickets name).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ring.dir.path().join(format!("n{i}/node.addr")).exists() {
            if Instant::now() > deadline {
                return Err(format!("node {i} of {n} did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(&mnt) {
        if Instant::now() > deadline {
            return Err("the folder was not mounted".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The ring is whole when node 1 lists every member.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(bin)
            .args(["ring", "--json", "--peer", &addr(n, 0), "--data"])
            .arg(ring.dir.path().join("n0"))
            .output()
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["nodes"].as_array().is_some_and(|a| a.len() == n) {
            return Ok(ring);
        }
        if Instant::now() > deadline {
            return Err(format!("the {n}-node ring did not form"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cp -r` of `src` into the ring's folder, then `sync`: files per second.
fn copy(ring: &Ring, src: &Path, files: usize, round: usize) -> Result<f64, String> {
    let dest = ring.mnt.join(format!("copy{round}"));
    let t = Instant::now();
    let ok = Command::new("cp").arg("-r").arg(src).arg(&dest).status();
    if !ok.is_ok_and(|s| s.success()) {
        return Err("cp failed".into());
    }
    let _ = Command::new("sync").status();
    let took = t.elapsed().as_secs_f64();
    let same = Command::new("diff").arg("-r").arg(src).arg(&dest).status();
    if !same.is_ok_and(|s| s.success()) {
        return Err("the copy differs".into());
    }
    Ok(files as f64 / took)
}

fn run() -> Result<(), String> {
    let sizes: Vec<usize> = std::env::var("PEERSTORE_BENCH_RINGS")
        .unwrap_or_else(|_| "1,2,5".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .filter(|&n| (1..=9).contains(&n))
        .collect();
    let files = env_num("PEERSTORE_BENCH_FILES", 300);
    let rounds = env_num("PEERSTORE_BENCH_ROUNDS", 3).max(1);
    let src_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = src_dir.path().join("src");
    fs::create_dir(&src).map_err(|e| e.to_string())?;
    for i in 0..files {
        let data: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        fs::write(src.join(format!("f{i:04}")), data).map_err(|e| e.to_string())?;
    }
    let mut best = vec![0f64; sizes.len()];
    println!("cp -r of {files} files of 4 KiB + sync into the mount (files/s)");
    for round in 0..rounds {
        for (k, &n) in sizes.iter().enumerate() {
            let ring = start(n)?;
            let rate = copy(&ring, &src, files, round)?;
            println!("round {round}: {n} node(s): {rate:.0}");
            best[k] = best[k].max(rate);
        }
    }
    let top = *best.last().unwrap_or(&1.0);
    for (k, &n) in sizes.iter().enumerate() {
        println!(
            "{n} node(s): best {:.0} files/s, {:.2}x the {}-node ring",
            best[k],
            best[k] / top,
            sizes.last().unwrap_or(&n)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
