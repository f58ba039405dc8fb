//! Version and trash commands: `versions`, `trash ls`, `trash restore`,
//! `trash empty`. Like the file commands they run the vault over one
//! node's client API, so they work from any machine holding the identity.

use super::files::err;
use super::{CliError, RemoteStore};
use crate::fs::Vault;
use std::sync::Arc;

/// Prints `value` as pretty JSON.
pub(super) fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Invalid(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `peerstore versions PATH [--json]`: one line per version, oldest first:
/// number, time, size, machine.
pub async fn run_versions(
    v: &Arc<Vault<RemoteStore>>,
    path: &str,
    json: bool,
) -> Result<(), CliError> {
    let (link, cur) = v.resolve(path).await.map_err(err(path))?;
    let list = v.versions(&link, &cur.obj).await.map_err(err(path))?;
    if json {
        return print_json(&list);
    }
    for i in list {
        let machine = if i.machine.is_empty() {
            "-"
        } else {
            &i.machine
        };
        let now = if i.current { "  (current)" } else { "" };
        println!(
            "{:>5}  {}  {:>12}  {machine}{now}",
            i.version, i.time, i.size
        );
    }
    Ok(())
}

/// `peerstore trash ls [--json]`: one line per deleted file, oldest first:
/// deletion time, size, machine, path.
pub async fn run_trash_ls(v: &Arc<Vault<RemoteStore>>, json: bool) -> Result<(), CliError> {
    let items = v.trash_items().await.map_err(err("the trash"))?;
    let list: Vec<_> = items.iter().map(|i| i.listing()).collect();
    if json {
        return print_json(&list);
    }
    for i in list {
        println!("{}  {:>12}  {}  {}", i.deleted, i.size, i.machine, i.path);
    }
    Ok(())
}

/// `peerstore trash restore PATH [--to DEST]`.
pub async fn run_trash_restore(
    v: &Arc<Vault<RemoteStore>>,
    path: &str,
    to: Option<&str>,
) -> Result<(), CliError> {
    let at = v.trash_restore(path, to).await.map_err(err(path))?;
    v.settle_all().await.map_err(err(path))?;
    eprintln!("restored {at}");
    Ok(())
}

/// `peerstore trash empty`.
pub async fn run_trash_empty(v: &Arc<Vault<RemoteStore>>) -> Result<(), CliError> {
    let n = v.trash_empty().await.map_err(err("the trash"))?;
    // The releases go out before the command ends.
    v.settle_all().await.map_err(err("the trash"))?;
    eprintln!("deleted {n} files for good");
    Ok(())
}
