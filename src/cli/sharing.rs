//! Share commands (`share`, `shares`) and the `/shared` paths of the file
//! commands: `/shared` lists the accounts that share folders with the
//! logged-in account, `/shared/OWNER` their folders, and
//! `/shared/OWNER/NAME/...` reads inside one, through a vault rooted at
//! the shared folder of the owner's tree.

use super::accounts::load_session;
use super::files::err;
use super::versions::print_json;
use super::{CliError, RemoteStore, Target, VaultArgs, open_vault};
use crate::account::session::Session;
use crate::account::shares::{self, Given, Offer};
use crate::fs::{BlockStore, FsError, Kind, Vault};
use std::sync::Arc;

/// The top of the shared folders in every account's paths; reserved at the
/// root of a tree.
pub const SHARED: &str = "shared";

/// Where a path of a file command leads.
pub enum Place {
    /// A path in a tree (the account's own, or inside a shared folder),
    /// and the path inside that tree.
    Tree(Arc<Vault<RemoteStore>>, String),
    /// `/shared` or `/shared/OWNER`: these names, all folders.
    Listing(Vec<String>),
}

/// The path's components after `/shared`, if it is under it.
fn shared_parts(path: &str) -> Option<Vec<&str>> {
    let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
    if parts.next() != Some(SHARED) {
        return None;
    }
    Some(parts.collect())
}

fn need_session() -> Result<Session, CliError> {
    load_session()?.ok_or_else(|| {
        CliError::Invalid(
            "sharing needs an account: `peerstore user create NAME` or `peerstore login NAME` first"
                .into(),
        )
    })
}

/// Resolves `path` for a file command: the own tree, or a shared folder
/// (read-only: `write` is refused there with one line).
pub async fn place(args: &VaultArgs, path: &str, write: bool) -> Result<Place, CliError> {
    let target = args.peer.target()?;
    let explicit = args.identity.identity.as_deref();
    let Some(parts) = shared_parts(path) else {
        return Ok(Place::Tree(
            open_vault(&target, args.identity.resolve()?)?,
            path.to_string(),
        ));
    };
    if explicit.is_some_and(|p| !p.as_os_str().is_empty()) {
        return Err(CliError::Invalid(format!(
            "{path}: /{SHARED} holds what is shared with an account; it has no place in an identity file's tree"
        )));
    }
    let me = need_session()?;
    let store = RemoteStore::new(&target.addr, target.keys.clone());
    let offers = shares::received(&store, &me).await?;
    match parts.as_slice() {
        [] | [_] if write => Err(CliError::Invalid(format!(
            "{path}: /{SHARED} lists what others share with you; write inside a shared folder"
        ))),
        [] => {
            let mut owners: Vec<String> = offers.iter().map(|o| o.from.clone()).collect();
            owners.dedup();
            Ok(Place::Listing(owners))
        }
        [owner] => {
            let names: Vec<String> = offers
                .iter()
                .filter(|o| o.from == *owner)
                .map(|o| o.name.clone())
                .collect();
            if names.is_empty() {
                return Err(CliError::tree(path, FsError::NotFound));
            }
            Ok(Place::Listing(names))
        }
        [owner, name, rest @ ..] => {
            let Some(o) = offers.iter().find(|o| o.from == *owner && o.name == *name) else {
                return Err(CliError::tree(path, FsError::NotFound));
            };
            if write && !o.writable() {
                return Err(CliError::Invalid(format!(
                    "{path}: {owner} shares {name} with you read-only"
                )));
            }
            // A writer's overwrites keep the versions they replace, as
            // the owner's do (in the owner's tree, freed by the owner).
            let vault = Vault::new(
                Arc::new(RemoteStore::new(&target.addr, target.keys.clone())),
                o.identity(&me.keyring),
            );
            Ok(Place::Tree(vault, format!("/{}", rest.join("/"))))
        }
    }
}

/// `peerstore share PATH --with USER [--write]`.
pub async fn run_share(
    target: &Target,
    path: &str,
    with: &str,
    write: bool,
) -> Result<(), CliError> {
    let me = need_session()?;
    let vault = open_vault(target, me.identity())?;
    if shared_parts(path).is_some() {
        return Err(CliError::Invalid(format!(
            "{path}: only folders of your own tree can be shared"
        )));
    }
    let (link, _) = vault.resolve(path).await.map_err(err(path))?;
    if link.kind != Kind::Dir {
        return Err(CliError::Invalid(format!(
            "{path}: not a folder (share the folder that holds it)"
        )));
    }
    let Some(name) = path.split('/').rfind(|p| !p.is_empty()) else {
        return Err(CliError::Invalid(
            "share a folder, not the whole tree".into(),
        ));
    };
    let store = RemoteStore::new(&target.addr, target.keys.clone());
    if with == me.name {
        return Err(crate::account::records::AccountError::SelfShare.into());
    }
    let scope = if write {
        // The folder's scope if it has one (shared for writing before),
        // else a new one; every record under it is tagged with it.
        let key = me.identity().record_key(&link.name);
        let held = vault.store.get_versions(key).await.map_err(err(path))?;
        let scope = held
            .first()
            .and_then(|h| h.scope())
            .unwrap_or_else(rand::random);
        let n = vault.retag(&link, scope).await.map_err(err(path))?;
        vault.settle_all().await.map_err(err(path))?;
        log::info!("{path}: {n} records tagged for writers");
        Some(scope)
    } else {
        None
    };
    shares::offer(&store, &me, with, name, &link, scope).await?;
    shares::note_given(
        &store,
        &me.identity(),
        Given {
            path: path.to_string(),
            to: with.to_string(),
            write,
            time_ms: crate::ownership::now_ms(),
        },
    )
    .await?;
    let how = if write { "read-write" } else { "read-only" };
    println!(
        "shared {path} with {with} ({how}): {with} sees it as /{SHARED}/{}/{name}",
        me.name
    );
    Ok(())
}

/// `peerstore unshare PATH --from USER [--eager]`: revokes `USER`'s access
/// to the folder. The folder is copied to new names and keys (every
/// directory, file and link; file content re-encrypted now with `eager`,
/// else at each file's next write) and tagged with a new scope, the copy
/// takes the folder's place, the old records are deleted, and the other
/// grantees are sent the new keys (and writers new grants).
pub async fn run_unshare(
    target: &Target,
    path: &str,
    from: &str,
    eager: bool,
) -> Result<(), CliError> {
    let me = need_session()?;
    let vault = open_vault(target, me.identity())?;
    let store = RemoteStore::new(&target.addr, target.keys.clone());
    let (given, _) = shares::given(&store, &me.identity()).await?;
    if !given.iter().any(|g| g.path == path && g.to == from) {
        return Err(CliError::Invalid(format!(
            "{path} is not shared with {from} (see `peerstore shares`)"
        )));
    }
    let remaining: Vec<Given> = given
        .into_iter()
        .filter(|g| g.path == path && g.to != from)
        .collect();
    let (link, _) = vault.resolve(path).await.map_err(err(path))?;
    let (parent_path, name) = match path.trim_end_matches('/').rsplit_once('/') {
        Some((p, n)) if !n.is_empty() => (if p.is_empty() { "/" } else { p }, n),
        _ => return Err(CliError::Invalid(format!("{path}: not a shared folder"))),
    };
    let (parent, _) = vault.resolve(parent_path).await.map_err(err(parent_path))?;
    let scope = remaining
        .iter()
        .any(|g| g.write)
        .then(rand::random::<crate::grant::Scope>);
    let started = std::time::Instant::now();
    let (new, done) = vault.rekey(&link, scope, eager).await.map_err(err(path))?;
    vault.settle_all().await.map_err(err(path))?;
    vault
        .swap_entry(&parent, name.as_bytes(), &link, &new)
        .await
        .map_err(err(path))?;
    vault.settle_all().await.map_err(err(path))?;
    vault.delete_old(&done.old).await;
    shares::forget_given(&store, &me.identity(), path, from).await?;
    for g in &remaining {
        shares::offer(
            &store,
            &me,
            &g.to,
            name,
            &new,
            g.write.then_some(scope).flatten(),
        )
        .await?;
        shares::note_given(&store, &me.identity(), g.clone()).await?;
    }
    println!(
        "{path}: {from}'s access revoked in {:.1} s ({} folders and {} files under new keys, {} bytes re-encrypted, {} files' content at their next write; {} other grantees sent the new keys)",
        started.elapsed().as_secs_f64(),
        done.dirs,
        done.files,
        done.bytes,
        done.lazy,
        remaining.len()
    );
    Ok(())
}

/// `peerstore shares [--json]`: what the logged-in account shares, and
/// what is shared with it.
pub async fn run_shares(target: &Target, json: bool) -> Result<(), CliError> {
    let me = need_session()?;
    let store = RemoteStore::new(&target.addr, target.keys.clone());
    let (given, _) = shares::given(&store, &me.identity()).await?;
    // Reading the inbox is when its owner drops what it has no use for.
    let (received, removed) = shares::tidy(&store, &me).await?;
    if removed > 0 {
        log::info!("removed {removed} spent entries from the inbox");
    }
    let shared_path = |o: &Offer| format!("/{SHARED}/{}/{}", o.from, o.name);
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            given: &'a [Given],
            received: Vec<serde_json::Value>,
        }
        let received = received
            .iter()
            .map(|o| {
                serde_json::json!({
                    "from": o.from,
                    "name": o.name,
                    "path": shared_path(o),
                    "write": o.writable(),
                })
            })
            .collect();
        return print_json(&Out {
            given: &given,
            received,
        });
    }
    println!("shared by {}:", me.name);
    if given.is_empty() {
        println!("  (nothing)");
    }
    for g in &given {
        let how = if g.write { "read-write" } else { "read-only" };
        println!("  {}  with {}  ({how})", g.path, g.to);
    }
    println!("shared with {}:", me.name);
    if received.is_empty() {
        println!("  (nothing)");
    }
    for o in &received {
        let how = if o.writable() {
            "read-write"
        } else {
            "read-only"
        };
        println!("  {}  from {}  ({how})", shared_path(o), o.from);
    }
    Ok(())
}

/// Runs `f` on the tree and path `path` leads to, or prints a `/shared`
/// listing (folders, one per line, as `ls` prints them).
pub async fn with_place<F, Fut>(
    args: &VaultArgs,
    path: &str,
    write: bool,
    f: F,
) -> Result<(), CliError>
where
    F: FnOnce(Arc<Vault<RemoteStore>>, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    match place(args, path, write).await? {
        Place::Tree(v, p) => f(v, p).await,
        Place::Listing(names) => {
            for n in names {
                println!("d0555 {:>12} {:>12} {n}", 0, 0);
            }
            Ok(())
        }
    }
}
