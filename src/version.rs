//! What `peerstore --version` prints: the release, the git commit it was
//! built from (by `build.rs`; "unknown" outside a git checkout), and the
//! versions of the formats it speaks: the wire protocol
//! ([`crate::wire::VERSION`]) and the store's on-disk layout
//! ([`crate::store::FORMAT_VERSION`]).

use std::sync::OnceLock;

/// The commit the binary was built from (abbreviated), or "unknown".
pub const COMMIT: &str = env!("PEERSTORE_COMMIT");

/// The release, as in `Cargo.toml`.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// `0.1.0 (commit 9c8804d, wire 4, disk 2)`: what follows the program
/// name in `peerstore --version`.
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{RELEASE} (commit {COMMIT}, wire {}, disk {})",
            crate::wire::VERSION,
            crate::store::FORMAT_VERSION
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_version_names_release_commit_and_formats() {
        let v = long_version();
        assert!(v.starts_with(&format!("{RELEASE} (commit ")), "{v}");
        assert!(
            v.ends_with(&format!(
                ", wire {}, disk {})",
                crate::wire::VERSION,
                crate::store::FORMAT_VERSION
            )),
            "{v}"
        );
        assert!(!COMMIT.is_empty() && !COMMIT.contains(char::is_whitespace));
    }
}
