//! Account commands: `user create`, `login`, `logout`, `whoami`, `passwd`;
//! and whose tree the other commands act on ([`resolve_identity`]).
//!
//! Passwords come from the terminal (twice when a new one is chosen) or,
//! for scripts, from a file (`--password-file`; one trailing newline is
//! dropped). They are never taken from the command line or the
//! environment, where `ps` and `/proc` show them.

use super::{CliError, RemoteStore, Target};
use crate::account::records::{self, AccountError};
use crate::account::session::{self, Session, default_session_path};
use crate::account_record::KdfParams;
use crate::fs::Identity;
use crate::fs::identity::default_identity_path;
use crate::id::Id;
use crate::keyfile::read_key;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Whose tree a command acts on, and why.
pub enum Who {
    /// The identity file given with `--identity` (or `PEERSTORE_IDENTITY`).
    File(PathBuf),
    /// The account logged in on this machine.
    Account(String),
    /// This machine's own identity (created on first use).
    Local(PathBuf),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::File(p) => write!(f, "the identity file {}", p.display()),
            Who::Account(n) => write!(f, "account {n}"),
            Who::Local(p) => write!(f, "this machine's identity ({})", p.display()),
        }
    }
}

/// The identity a command acts as: the file `explicit` names (it must
/// exist: a mistyped path never starts an empty tree), else the account
/// logged in on this machine, else this machine's identity, created on
/// first use unless `create` is false.
pub fn resolve_identity(
    explicit: Option<&Path>,
    create: bool,
) -> Result<Option<(Identity, Who)>, CliError> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return match read_key::<32>(p)? {
            Some(secret) => Ok(Some((Identity::from_secret(secret), Who::File(p.into())))),
            None => Err(CliError::Invalid(format!(
                "{}: no identity file there (without --identity, the account logged in with `peerstore login` or this machine's own identity is used)",
                p.display()
            ))),
        };
    }
    if let Some(s) = load_session()? {
        return Ok(Some((s.identity(), Who::Account(s.name.clone()))));
    }
    let p = default_identity_path();
    if create {
        let id = Identity::load_or_create(&p)?;
        return Ok(Some((id, Who::Local(p))));
    }
    Ok(read_key::<32>(&p)?.map(|s| (Identity::from_secret(s), Who::Local(p))))
}

/// The account session of this machine, if logged in.
pub fn load_session() -> Result<Option<Session>, CliError> {
    session::load(&default_session_path()).map_err(|e| CliError::Invalid(e.to_string()))
}

fn save_session(s: &Session) -> Result<(), CliError> {
    session::save(&default_session_path(), s).map_err(|e| CliError::Invalid(e.to_string()))
}

/// A password: read from `file`, else from the terminal (asked twice if
/// `confirm`).
fn password(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(f) = file {
        let max = crate::account::keyring::MAX_PASSWORD as u64 + 2;
        let meta = std::fs::metadata(f).map_err(|e| CliError::file(f, e))?;
        if meta.len() > max {
            return Err(CliError::Invalid(format!(
                "{}: the password is longer than {} bytes",
                f.display(),
                crate::account::keyring::MAX_PASSWORD
            )));
        }
        let mut bytes = Zeroizing::new(std::fs::read(f).map_err(|e| CliError::file(f, e))?);
        for end in [&b"\n"[..], b"\r"] {
            if bytes.ends_with(end) {
                let n = bytes.len() - 1;
                bytes.truncate(n);
            }
        }
        return Ok(bytes);
    }
    let ask = |p: &str| {
        rpassword::prompt_password(p).map_err(|e| {
            CliError::Invalid(format!(
                "cannot read a password from the terminal ({e}): give --password-file FILE"
            ))
        })
    };
    let first = Zeroizing::new(ask(prompt)?.into_bytes());
    if confirm {
        let again = Zeroizing::new(ask("Repeat it: ")?.into_bytes());
        if *again != *first {
            return Err(CliError::Invalid("the passwords differ".into()));
        }
    }
    Ok(first)
}

fn store(target: &Target) -> RemoteStore {
    RemoteStore::new(&target.addr, target.keys.clone())
}

/// `peerstore user create NAME [--identity FILE] [--password-file FILE]`.
pub async fn run_user_create(
    target: &Target,
    name: &str,
    adopt: Option<&Path>,
    password_file: Option<&Path>,
) -> Result<(), CliError> {
    crate::account_record::check_name(name).map_err(AccountError::from)?;
    let identity = match adopt {
        Some(p) => resolve_identity(Some(p), false)?.map(|(id, _)| id.secret()),
        None => None,
    };
    let pw = password(password_file, &format!("New password for {name}: "), true)?;
    let keyring = records::new_keyring(identity);
    let account = records::create(&store(target), name, &pw, &keyring, KdfParams::DEFAULT).await?;
    save_session(&Session {
        name: name.to_string(),
        keyring,
    })?;
    println!(
        "created account {name} (key {}); this machine is logged in as {name}",
        Id::hash(&account.owner()).short()
    );
    Ok(())
}

/// `peerstore login NAME [--password-file FILE]`.
pub async fn run_login(
    target: &Target,
    name: &str,
    password_file: Option<&Path>,
) -> Result<(), CliError> {
    let pw = password(password_file, &format!("Password for {name}: "), false)?;
    let s = records::login(&store(target), name, &pw).await?;
    save_session(&s)?;
    println!("logged in as {name}");
    Ok(())
}

/// `peerstore logout`.
pub fn run_logout() -> Result<(), CliError> {
    let path = default_session_path();
    let name = load_session().ok().flatten().map(|s| s.name.clone());
    let removed = session::remove(&path).map_err(|e| CliError::Invalid(e.to_string()))?;
    match (removed, name) {
        (true, Some(n)) => println!("logged out of {n}"),
        (true, None) => println!("removed a damaged session file"),
        (false, _) => println!("not logged in"),
    }
    Ok(())
}

/// `peerstore whoami`: whose tree the commands act on.
pub fn run_whoami(explicit: Option<&Path>) -> Result<(), CliError> {
    match resolve_identity(explicit, false)? {
        Some((id, who)) => println!("{who}, key {}", Id::hash(&id.owner()).short()),
        None => println!(
            "not logged in; this machine's identity will be created at {} on first use",
            default_identity_path().display()
        ),
    }
    Ok(())
}

/// `peerstore passwd [--password-file OLD --new-password-file NEW]`.
pub async fn run_passwd(
    target: &Target,
    old_file: Option<&Path>,
    new_file: Option<&Path>,
) -> Result<(), CliError> {
    let Some(s) = load_session()? else {
        return Err(CliError::Invalid(
            "not logged in: `peerstore login NAME` first".into(),
        ));
    };
    let old = password(old_file, "Current password: ", false)?;
    let new = password(new_file, "New password: ", true)?;
    records::change_password(&store(target), &s, &old, &new).await?;
    println!("password of {} changed", s.name);
    Ok(())
}
