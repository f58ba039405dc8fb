//! `block put`, `block get` and `lookup`: one request to one node.

use super::CliError;
use super::Target;
use crate::id::Id;
use crate::net::{NetConfig, Pool};
use crate::rpc::{self, Rpc};
use crate::wire::MAX_BLOCK;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// A pool for client commands, opening links with the target's keys.
pub fn client_pool(target: &Target) -> Pool {
    Pool::new(
        NetConfig {
            rpc_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            local_ip: None,
        },
        target.keys.clone(),
    )
}

/// Calls `rpc` on the node at `peer`; `what` names the item asked for
/// (for "not found").
pub async fn call_client<R: Rpc>(
    pool: &Pool,
    peer: &str,
    what: &str,
    rpc: R,
) -> Result<R::Ok, CliError> {
    rpc::call_addr(pool, peer, rpc, None)
        .await
        .map_err(|e| CliError::of_call(peer, what, e))
}

fn parse_key(s: &str) -> Result<Id, CliError> {
    s.parse::<Id>()
        .map_err(|e| CliError::Invalid(format!("{s}: {e}")))
}

/// `peerstore block put`: prints the key.
pub async fn run_block_put(
    target: &Target,
    owner: &crate::fs::Identity,
    file: &Path,
) -> Result<(), CliError> {
    let peer = target.addr.as_str();
    let meta = std::fs::metadata(file).map_err(|e| CliError::file(file, e))?;
    if meta.len() > MAX_BLOCK as u64 {
        return Err(CliError::Invalid(format!(
            "{}: {} bytes is larger than the 1 MiB block limit",
            file.display(),
            meta.len()
        )));
    }
    let data = std::fs::read(file).map_err(|e| CliError::file(file, e))?;
    let claim = owner.claim(Id::of_block(&data));
    let pool = client_pool(target);
    let (key, _) = call_client(&pool, peer, "block", rpc::ClientPutBlock(data, claim)).await?;
    println!("{key}");
    Ok(())
}

/// `peerstore block get`: writes the block to stdout or `output`.
pub async fn run_block_get(
    target: &Target,
    key: &str,
    output: Option<&Path>,
) -> Result<(), CliError> {
    let peer = target.addr.as_str();
    let key = parse_key(key)?;
    let pool = client_pool(target);
    let what = format!("block {key}");
    let data = call_client(&pool, peer, &what, rpc::ClientGetBlock(key)).await?;
    if !key.names(&data) {
        return Err(CliError::Invalid(format!(
            "block {key}: received bytes do not match the key"
        )));
    }
    match output {
        Some(path) => std::fs::write(path, &data).map_err(|e| CliError::file(path, e)),
        None => std::io::stdout()
            .write_all(&data)
            .and_then(|_| std::io::stdout().flush())
            .map_err(|e| CliError::file(Path::new("stdout"), e)),
    }
}

/// `peerstore lookup`: prints owner ID, address and hops.
pub async fn run_lookup(target: &Target, key: &str) -> Result<(), CliError> {
    let peer = target.addr.as_str();
    let key = parse_key(key)?;
    let pool = client_pool(target);
    let a = call_client(&pool, peer, "owner", rpc::ClientLookup(key)).await?;
    println!(
        "owner {}\naddress {}\nhops {}",
        a.owner.id, a.owner.addr, a.hops
    );
    Ok(())
}
