//! `block put`, `block get` and `lookup`: one request to one node.

use super::Target;
use crate::id::Id;
use crate::net::{NetConfig, Pool};
use crate::wire::{ClientRequest, ClientResponse, MAX_BLOCK, Request, Response};
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

/// Sends one client request to `peer` and returns its answer, or a
/// one-line error.
pub async fn call_client(
    pool: &Pool,
    peer: &str,
    req: ClientRequest,
) -> Result<ClientResponse, String> {
    match pool.call(peer, Request::Client(req)).await {
        Ok(Response::Client(r)) => Ok(r),
        Ok(Response::Error(crate::wire::RemoteError::NoSpace(m))) => {
            Err(format!("no space left on the ring ({m})"))
        }
        Ok(Response::Error(e)) => Err(e.to_string()),
        Ok(_) => Err(format!("{peer} sent an unexpected answer")),
        Err(e) => Err(format!("cannot reach node at {peer}: {e}")),
    }
}

fn parse_key(s: &str) -> Result<Id, String> {
    s.parse::<Id>().map_err(|e| e.to_string())
}

/// `peerstore block put`: prints the key.
pub async fn run_block_put(target: &Target, file: &Path) -> Result<(), String> {
    let peer = target.addr.as_str();
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if meta.len() > MAX_BLOCK as u64 {
        return Err(format!(
            "{}: {} bytes is larger than the 1 MiB block limit",
            file.display(),
            meta.len()
        ));
    }
    let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let pool = client_pool(target);
    match call_client(&pool, peer, ClientRequest::PutBlock { data }).await? {
        ClientResponse::Put { key, .. } => {
            println!("{key}");
            Ok(())
        }
        _ => Err(format!("{peer} sent an unexpected answer")),
    }
}

/// `peerstore block get`: writes the block to stdout or `output`.
pub async fn run_block_get(
    target: &Target,
    key: &str,
    output: Option<&Path>,
) -> Result<(), String> {
    let peer = target.addr.as_str();
    let key = parse_key(key)?;
    let pool = client_pool(target);
    let data = match call_client(&pool, peer, ClientRequest::GetBlock { key }).await {
        Ok(ClientResponse::Block(d)) => d,
        Ok(_) => return Err(format!("{peer} sent an unexpected answer")),
        Err(e) if e == crate::wire::RemoteError::NotFound.to_string() => {
            return Err(format!("block {key} not found"));
        }
        Err(e) => return Err(e),
    };
    if Id::hash(&data) != key {
        return Err(format!("block {key}: received bytes do not match the key"));
    }
    match output {
        Some(path) => std::fs::write(path, &data).map_err(|e| format!("{}: {e}", path.display())),
        None => std::io::stdout()
            .write_all(&data)
            .and_then(|_| std::io::stdout().flush())
            .map_err(|e| format!("stdout: {e}")),
    }
}

/// `peerstore lookup`: prints owner ID, address and hops.
pub async fn run_lookup(target: &Target, key: &str) -> Result<(), String> {
    let peer = target.addr.as_str();
    let key = parse_key(key)?;
    let pool = client_pool(target);
    match call_client(&pool, peer, ClientRequest::Lookup { key }).await? {
        ClientResponse::Lookup { owner, hops, .. } => {
            println!("owner {}\naddress {}\nhops {hops}", owner.id, owner.addr);
            Ok(())
        }
        _ => Err(format!("{peer} sent an unexpected answer")),
    }
}
