//! Build script: records the git commit the binary is built from, for
//! `peerstore --version`.
//!
//! Sets `PEERSTORE_COMMIT` to, in order: `PEERSTORE_COMMIT` from the build
//! environment (a packager who knows the commit); `git rev-parse --short
//! HEAD` when the crate directory is the top of a git checkout; the commit
//! `cargo package` noted in `.cargo_vcs_info.json` (a crate tarball);
//! else "unknown". Reruns when HEAD moves: it watches the checkout's own
//! `HEAD` (in a worktree that is not `.git/HEAD`), the branch it points
//! at and `packed-refs`, those of them that exist (cargo reruns a build
//! script on every build while a watched path is missing).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Length of the abbreviated commit shown.
const SHORT: usize = 7;

/// The crate directory.
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `git ARGS` in the crate directory: its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(crate_dir())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Whether the crate directory is the top of a git checkout (not a crate
/// tarball unpacked somewhere inside another repository).
fn in_own_checkout() -> bool {
    let Some(top) = git(&["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(&top)) == canon(&crate_dir())
}

/// The path git uses for `name` (`HEAD`, `refs/heads/main`, ...).
fn git_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(if p.is_absolute() {
        p
    } else {
        crate_dir().join(p)
    })
}

/// The commit `cargo package` recorded in `.cargo_vcs_info.json`.
fn packaged_commit() -> Option<String> {
    let text = std::fs::read_to_string(crate_dir().join(".cargo_vcs_info.json")).ok()?;
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + "\"sha1\"".len()..];
    let start = rest.find(|c: char| c.is_ascii_hexdigit())?;
    let sha: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (sha.len() >= SHORT).then(|| sha[..SHORT].to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PEERSTORE_COMMIT");
    let given = std::env::var("PEERSTORE_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let commit = match given {
        Some(c) => c,
        None if in_own_checkout() => {
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            let watched = ["HEAD", "packed-refs"]
                .into_iter()
                .map(str::to_string)
                .chain(branch)
                .filter_map(|name| git_path(&name))
                .filter(|p| p.exists());
            for path in watched {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            git(&["rev-parse", &format!("--short={SHORT}"), "HEAD"])
                .unwrap_or_else(|| "unknown".to_string())
        }
        None => packaged_commit().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=PEERSTORE_COMMIT={commit}");
}
