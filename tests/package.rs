//! The Debian package's metadata (`[package.metadata.deb]` in Cargo.toml)
//! is consistent with the tree: every asset it lists exists (the man pages
//! and completions are kept up to date by `tests/man_page.rs` and
//! `tests/completions.rs`), every file under `man/` and
//! `packaging/completions/` is shipped, they go to the standard Debian
//! paths, and the maintainer scripts are executable shell scripts. The
//! package itself is built and installed on a fresh Debian 12 by
//! `packaging/test-deb.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `[package.metadata.deb]`.
fn deb() -> toml::Table {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    let manifest: toml::Table = text.parse().expect("Cargo.toml parses");
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// The assets: (source, destination, mode).
fn assets() -> Vec<(String, String, String)> {
    deb()["assets"]
        .as_array()
        .expect("assets is a list")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("an asset is [source, dest, mode]");
            let s = |i: usize| a[i].as_str().expect("asset fields are strings").to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// The files `pattern` (relative to the crate; `*` only in the file name)
/// names.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = root().join(pattern);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let Some((pre, post)) = name.split_once('*') else {
        return vec![path];
    };
    let dir = path.parent().unwrap();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()
        })
        .collect();
    found.sort();
    found
}

/// Where `file` (relative to the crate) is installed, if an asset ships it.
fn installed_as(file: &str) -> Option<String> {
    for (src, dest, _) in assets() {
        if expand(&src).contains(&root().join(file)) {
            let name = Path::new(file).file_name().unwrap().to_str().unwrap();
            return Some(match dest.strip_suffix('/') {
                Some(dir) => format!("/{dir}/{name}"),
                None => format!("/{dest}"),
            });
        }
    }
    None
}

#[test]
fn every_asset_exists() {
    for (src, dest, mode) in assets() {
        assert!(
            u32::from_str_radix(&mode, 8).is_ok_and(|m| m == 0o644 || m == 0o755),
            "{src}: mode {mode}"
        );
        assert!(
            !dest.starts_with('/'),
            "{src}: destination {dest} must be relative"
        );
        // cargo deb builds the binary itself.
        if src.starts_with("target/release/") {
            continue;
        }
        let files = expand(&src);
        assert!(!files.is_empty(), "asset {src} matches no file");
        for f in files {
            assert!(f.is_file(), "asset {src}: {} is not a file", f.display());
        }
    }
}

#[test]
fn the_package_ships_the_command_pages_completions_and_unit() {
    let shipped = |f: &str| installed_as(f).unwrap_or_else(|| panic!("{f} is not shipped"));
    assert!(
        assets()
            .iter()
            .any(|(s, d, m)| s == "target/release/peerstore" && d == "usr/bin/" && m == "755")
    );
    for page in expand("man/*.1") {
        let name = page.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            shipped(&format!("man/{name}")),
            format!("/usr/share/man/man1/{name}")
        );
    }
    assert!(expand("man/*.1").len() > 20, "one page per command");
    for (file, dest) in [
        (
            "packaging/completions/peerstore.bash",
            "/usr/share/bash-completion/completions/peerstore",
        ),
        (
            "packaging/completions/_peerstore",
            "/usr/share/zsh/vendor-completions/_peerstore",
        ),
        (
            "packaging/completions/peerstore.fish",
            "/usr/share/fish/vendor_completions.d/peerstore.fish",
        ),
        (
            "packaging/peerstore@.service",
            "/lib/systemd/system/peerstore@.service",
        ),
    ] {
        assert_eq!(shipped(file), dest);
    }
    let depends = deb()["depends"].as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = depends.split(',').map(str::trim).collect();
    assert!(
        parts.contains(&"$auto") && parts.contains(&"fuse3"),
        "Depends: {depends}"
    );
}

#[test]
fn maintainer_scripts_are_executable_shell_scripts() {
    let dir = deb()["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts")
        .to_string();
    for name in ["postinst", "prerm", "postrm"] {
        let path = root().join(&dir).join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            meta.permissions().mode() & 0o111,
            0o111,
            "{name} is not executable"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{name}: not a /bin/sh script"
        );
        assert!(
            text.contains("set -e") && text.trim_end().ends_with("exit 0"),
            "{name}"
        );
        let st = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("run sh -n");
        assert!(st.success(), "{name}: sh -n finds a syntax error");
    }
}
