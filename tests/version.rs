//! `peerstore --version` names the release, the git commit the binary was
//! built from, and the wire and disk format versions.

use std::process::Command;

/// `peerstore ARG`'s standard output (it must succeed).
fn run(arg: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerstore"))
        .arg(arg)
        .output()
        .expect("run peerstore");
    assert!(out.status.success(), "peerstore {arg}: {}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `git ARGS` in the crate directory, if it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit of the checkout the crate directory is the top of, if any
/// (as `build.rs` decides).
fn head_commit() -> Option<String> {
    let top = std::path::PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    git(&["rev-parse", "--short=7", "HEAD"])
}

#[test]
fn version_names_release_commit_wire_and_disk() {
    let line = run("--version");
    let want_tail = format!(
        ", wire {}, disk {})\n",
        peerstore::wire::VERSION,
        peerstore::store::FORMAT_VERSION
    );
    let head = format!("peerstore {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&head), "{line:?}");
    assert!(line.ends_with(&want_tail), "{line:?}");
    let commit = &line[head.len()..line.len() - want_tail.len()];
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit:?}"
    );
    // Built in a git checkout (and not told another commit by
    // PEERSTORE_COMMIT, which cargo test would pass on to the build): its
    // HEAD.
    if std::env::var_os("PEERSTORE_COMMIT").is_none()
        && let Some(head) = head_commit()
    {
        assert_eq!(commit, head, "the binary names another commit than HEAD");
    }
    assert_eq!(run("-V"), line, "-V and --version differ");
}
