//! File commands: `put`, `get`, `ls`, `rm`, `backup`, `restore`. They run
//! the same `fs` layer as the mount, over one node's client API, so a file
//! put here is visible in the mounted folder and the other way round.

use super::{CliError, RemoteStore};
use crate::fs::object::{Body, Kind};
use crate::fs::{FsError, Identity, Vault};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A vault of `identity` through the node at `peer`.
pub fn open_vault(
    target: &super::Target,
    id: Identity,
) -> Result<Arc<Vault<RemoteStore>>, CliError> {
    let store = RemoteStore::new(&target.addr, target.keys.clone());
    Ok(Vault::new(Arc::new(store), id))
}

pub(super) fn err(path: &str) -> impl Fn(FsError) -> CliError + '_ {
    move |e| CliError::tree(path, e)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Bytes under a local path (for the progress bar's total).
fn local_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| local_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

/// `peerstore put LOCAL PATH`.
pub async fn run_put(
    v: &Arc<Vault<RemoteStore>>,
    local: &Path,
    path: &str,
) -> Result<(), CliError> {
    let pb = bar(local_size(local), "put");
    let n = v
        .put_file(local, path, &mut |k| pb.inc(k))
        .await
        .map_err(err(path))?;
    pb.finish_and_clear();
    eprintln!("stored {path} ({n} bytes)");
    Ok(())
}

/// `peerstore get PATH LOCAL [--version N]`.
pub async fn run_get(
    v: &Arc<Vault<RemoteStore>>,
    path: &str,
    local: &Path,
    version: Option<u64>,
) -> Result<(), CliError> {
    let (_, obj) = v.resolve(path).await.map_err(err(path))?;
    let pb = bar(obj.obj.attrs.size, "get");
    let n = v
        .get_file(path, local, version, &mut |k| pb.inc(k))
        .await
        .map_err(err(path))?;
    pb.finish_and_clear();
    eprintln!("wrote {} ({n} bytes)", local.display());
    Ok(())
}

/// `peerstore ls [PATH]`: one line per entry, `kind mode size mtime name`.
pub async fn run_ls(v: &Arc<Vault<RemoteStore>>, path: &str) -> Result<(), CliError> {
    let (link, obj) = v.resolve(path).await.map_err(err(path))?;
    let entries = match obj.obj.entries() {
        Some(e) => e.clone(),
        None => {
            let name = path.rsplit('/').next().unwrap_or(path);
            println!("{}", line(link.kind, &obj.obj, name));
            return Ok(());
        }
    };
    for (name, child) in entries {
        let name = String::from_utf8_lossy(&name);
        match v.load(&child.link).await {
            Ok(c) => println!("{}", line(child.link.kind, &c.obj, &name)),
            Err(e) => println!("?  {name}  ({e})"),
        }
    }
    Ok(())
}

fn line(kind: Kind, obj: &crate::fs::Object, name: &str) -> String {
    let k = match kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
    };
    let target = match &obj.body {
        Body::Symlink { target } => format!(" -> {}", String::from_utf8_lossy(target)),
        _ => String::new(),
    };
    format!(
        "{k}{:04o} {:>12} {:>12} {name}{target}",
        obj.attrs.mode & 0o7777,
        obj.attrs.size,
        obj.attrs.mtime.secs
    )
}

/// `peerstore rm [-r] PATH`.
pub async fn run_rm(
    v: &Arc<Vault<RemoteStore>>,
    path: &str,
    recursive: bool,
) -> Result<(), CliError> {
    let s = v.remove_path(path, recursive).await.map_err(err(path))?;
    eprintln!(
        "removed {} files, {} directories, {} links",
        s.files, s.dirs, s.symlinks
    );
    Ok(())
}

/// `peerstore backup LOCAL_DIR [PATH]`.
pub async fn run_backup(
    v: &Arc<Vault<RemoteStore>>,
    local: &Path,
    path: &str,
) -> Result<(), CliError> {
    let start = Instant::now();
    let pb = bar(local_size(local), "backup");
    let s = v
        .backup(local, path, &mut |k| pb.inc(k))
        .await
        .map_err(err(path))?;
    pb.finish_and_clear();
    summary("backed up", s, start);
    Ok(())
}

/// `peerstore restore PATH DEST_DIR`.
pub async fn run_restore(
    v: &Arc<Vault<RemoteStore>>,
    path: &str,
    dest: &Path,
) -> Result<(), CliError> {
    let start = Instant::now();
    let pb = ProgressBar::new_spinner();
    pb.set_message("restore");
    let mut total = 0u64;
    let s = v
        .restore(path, dest, &mut |k| {
            total += k;
            pb.set_message(format!("restore: {} bytes", total));
            pb.tick();
        })
        .await
        .map_err(err(path))?;
    pb.finish_and_clear();
    summary("restored", s, start);
    Ok(())
}

fn summary(what: &str, s: crate::fs::tree::TreeStats, start: Instant) {
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "{what} {} files, {} directories, {} links, {} bytes in {:.1} s ({:.1} MB/s)",
        s.files,
        s.dirs,
        s.symlinks,
        s.bytes,
        secs,
        s.bytes as f64 / secs / 1e6
    );
}
