//! The systemd unit `packaging/peerstore@.service`: its command line is
//! one `peerstore` accepts and holds no secret, it keeps out of the
//! settings that would hide its mount from the user, `systemd-analyze
//! verify` accepts it and `systemd-analyze security` rates it OK or better
//! (the last two where systemd-analyze is installed; they run offline, no
//! systemd needs to be running).

use clap::Parser;
use peerstore::cli::{Cli, Command as Sub};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unit as committed.
fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/peerstore@.service")
}

fn unit() -> String {
    std::fs::read_to_string(unit_path()).expect("read packaging/peerstore@.service")
}

/// The values of `key=` in the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// `systemd-analyze ARGS`, killed after a minute; `None` if it is not
/// installed.
fn systemd_analyze(args: &[&str]) -> Option<Output> {
    let mut child = match Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no systemd-analyze here: skipped");
            return None;
        }
        Err(e) => panic!("run systemd-analyze: {e}"),
    };
    let start = Instant::now();
    while child
        .try_wait()
        .expect("wait for systemd-analyze")
        .is_none()
    {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("systemd-analyze {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("systemd-analyze output"))
}

/// The unit as instance `alice`, with `/usr/bin/peerstore` replaced by
/// `bin`, in a new temporary directory.
fn instance_with(bin: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peerstore@alice.service");
    let text = unit().replace("/usr/bin/peerstore", bin.to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn exec_start_is_a_peerstore_command_line_without_secrets() {
    let unit = unit();
    let exec = values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart");
    // As systemd would run it for alice with nothing in her env file.
    let line = exec[0]
        .replace("${PEERSTORE_LISTEN}", "127.0.0.1:7400")
        .replace("${HOME}", "/home/alice")
        .replace("%d", "/run/credentials/peerstore@alice.service");
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| !w.starts_with('$'))
        .collect();
    assert_eq!(words[0], "/usr/bin/peerstore");
    let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{line}: {e}"));
    let Sub::Node(node) = cli.command else {
        panic!("ExecStart does not run a node: {line}");
    };
    assert_eq!(
        node.ticket_file.as_deref(),
        Some(Path::new("/run/credentials/peerstore@alice.service/ticket"))
    );
    assert_eq!(node.join, None, "a join argument on the command line");
    assert_eq!(
        node.mount.as_deref(),
        Some(Path::new("/home/alice/PeerStore"))
    );
    assert_eq!(node.data, Path::new("/home/alice/.local/share/peerstore"));
    // %h is root's home in a system unit, whatever User= says: the user's
    // home is $HOME, which systemd sets for User=.
    assert!(!unit.contains("%h"), "%h is /root in a system unit");
    // The ticket reaches the node as a credential, with an empty default.
    assert_eq!(
        values(&unit, "LoadCredential"),
        ["ticket:/etc/peerstore/%i.ticket"]
    );
    assert_eq!(values(&unit, "SetCredential"), [r"ticket:\n"]);
    assert!(!unit.contains("psk1"), "a ticket in the unit");
}

#[test]
fn no_setting_hides_the_mount_from_the_user() {
    // Each of these gives the service a mount namespace of its own, from
    // which mounts do not propagate to the host: the user would see an
    // empty ~/PeerStore (README, "The service").
    let unit = unit();
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "BindPaths",
        "TemporaryFileSystem",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "MountFlags",
    ] {
        assert!(
            values(&unit, key).is_empty(),
            "{key}= would put the mount in a namespace of the service's own"
        );
    }
    // The node mounts with mount(2), its one capability, under
    // NoNewPrivileges (the setuid fusermount3 would not work).
    assert_eq!(values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&unit, "AmbientCapabilities"), ["CAP_SYS_ADMIN"]);
    assert_eq!(values(&unit, "CapabilityBoundingSet"), ["CAP_SYS_ADMIN"]);
    assert_eq!(values(&unit, "DeviceAllow"), ["/dev/fuse rw"]);
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !Path::new("/bin/fusermount3").exists() {
        eprintln!("no /bin/fusermount3 (Debian: fuse3), which ExecStopPost runs: skipped");
        return;
    }
    let (_dir, path) = instance_with(Path::new(env!("CARGO_BIN_EXE_peerstore")));
    let Some(out) = systemd_analyze(&["verify", "--man=no", path.to_str().unwrap()]) else {
        return;
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // It warns (and still succeeds) for unknown keys and bad values.
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn systemd_analyze_security_rates_it_ok_or_better() {
    let (_dir, path) = instance_with(Path::new("/usr/bin/peerstore"));
    let Some(out) = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--no-pager",
        path.to_str().unwrap(),
    ]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "→ Overall exposure level for peerstore@alice.service: 3.8 OK 🙂"
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no rating in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let rating = line.rsplit(": ").next().unwrap_or("");
    let mut words = rating.split_whitespace();
    let exposure: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in {line:?}"));
    let label = words.next().unwrap_or("");
    eprintln!("{line}");
    assert!(
        ["OK", "SAFE", "PERFECT"].contains(&label) && exposure < 5.0,
        "rated {exposure} {label}, not OK or better:\n{text}"
    );
}
