//! What a command-line command can fail with: one enum, one line each.

use crate::fs::FsError;
use crate::rpc::CallError;
use crate::wire::RemoteError;
use std::path::{Path, PathBuf};

/// Why a command failed; its `Display` is the one line printed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The node could not be reached (or the link failed).
    #[error("cannot reach node at {addr}: {why}")]
    Unreachable { addr: String, why: String },
    /// The ring has no room for the item.
    #[error("no space left on the ring ({0})")]
    NoSpace(String),
    /// The item asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The node refused the request.
    #[error("{addr}: {err}")]
    Refused { addr: String, err: RemoteError },
    /// The node answered with something else than asked.
    #[error("{0} sent an unexpected answer")]
    Unexpected(String),
    /// A local file could not be read or written.
    #[error("{}: {err}", path.display())]
    File { path: PathBuf, err: std::io::Error },
    /// A file-system operation on the tree failed.
    #[error("{path}: {err}")]
    Tree { path: String, err: FsError },
    /// An argument or a local setting is wrong.
    #[error("{0}")]
    Invalid(String),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] crate::account::records::AccountError),
}

impl CliError {
    /// The error of a call to `addr` that asked for `what`.
    pub fn of_call(addr: &str, what: &str, e: CallError) -> CliError {
        match e {
            CallError::Refused(RemoteError::NoSpace(m)) => CliError::NoSpace(m),
            CallError::Refused(RemoteError::NotFound) => CliError::NotFound(what.to_string()),
            CallError::Refused(err) => CliError::Refused {
                addr: addr.to_string(),
                err,
            },
            CallError::Unexpected => CliError::Unexpected(addr.to_string()),
            CallError::Timeout => CliError::Unreachable {
                addr: addr.to_string(),
                why: "call timed out".into(),
            },
            CallError::Unreachable(why) => CliError::Unreachable {
                addr: addr.to_string(),
                why,
            },
        }
    }

    /// A local file error on `path`.
    pub fn file(path: &Path, err: std::io::Error) -> CliError {
        CliError::File {
            path: path.to_path_buf(),
            err,
        }
    }

    /// A tree operation on `path` that failed.
    pub fn tree(path: &str, err: FsError) -> CliError {
        match err {
            FsError::NoSpace(m) => CliError::NoSpace(m),
            err => CliError::Tree {
                path: path.to_string(),
                err,
            },
        }
    }
}

impl From<crate::network::AdmissionError> for CliError {
    fn from(e: crate::network::AdmissionError) -> Self {
        CliError::Invalid(e.to_string())
    }
}

impl From<crate::keyfile::KeyFileError> for CliError {
    fn from(e: crate::keyfile::KeyFileError) -> Self {
        CliError::Invalid(e.to_string())
    }
}
