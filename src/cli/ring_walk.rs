//! `peerstore ring`: walk the ring from one node along successor pointers
//! and print every member with the fingerprint of the static key it proved
//! on the link (a member whose key does not hash to its ID is refused).

use super::client::{call_client, client_pool};
use super::{CliError, Target};
use crate::net::{Pool, fingerprint, peer_id};
use crate::rpc::ClientInfo;
use crate::wire::NodeInfo;
use std::collections::HashSet;

/// One ring member as the walk found it.
#[derive(Debug, Clone)]
pub struct Member {
    /// What the member says about itself.
    pub info: NodeInfo,
    /// The static public key it proved (its ID is the hash of it).
    pub key: [u8; 32],
}

/// Members visited at most (a guard against a broken ring).
const MAX_MEMBERS: usize = 100_000;

/// Visits the ring in successor order starting at `peer`. A member that
/// does not answer is skipped by trying the next entry of the last answering
/// member's successor list.
pub async fn walk_ring(target: &Target) -> Result<Vec<Member>, CliError> {
    let pool = client_pool(target);
    let first = info(&pool, &target.addr).await?;
    let start = first.info.me.id;
    let mut seen = HashSet::from([start]);
    let mut out = vec![first];
    while out.len() < MAX_MEMBERS {
        let Some(last) = out.last() else {
            break;
        };
        let mut next = None;
        for s in &last.info.succs {
            if s.id == start {
                break;
            }
            match info(&pool, &s.addr).await {
                Ok(i) => {
                    next = Some(i);
                    break;
                }
                Err(e) => log::warn!("{}: {e}; trying the next successor", s.addr),
            }
        }
        match next {
            Some(i) if !seen.contains(&i.info.me.id) => {
                seen.insert(i.info.me.id);
                out.push(i);
            }
            _ => break,
        }
    }
    Ok(out)
}

/// Asks the node at `addr` about itself and checks that the key it proved
/// on the link is the key of the ID it claims.
async fn info(pool: &Pool, addr: &str) -> Result<Member, CliError> {
    let info = call_client(pool, addr, "node", ClientInfo).await?;
    let key = pool
        .remote_key(addr)
        .await
        .map_err(|e| CliError::of_call(addr, "node", e.into()))?;
    if peer_id(&key) != info.me.id {
        return Err(CliError::Invalid(format!(
            "{addr} claims ID {} but proved the key of {}",
            info.me.id.short(),
            peer_id(&key).short()
        )));
    }
    Ok(Member { info, key })
}

/// `peerstore ring [--json]`.
pub async fn run_ring(target: &Target, json: bool) -> Result<(), CliError> {
    let members = walk_ring(target).await?;
    if json {
        let list: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                let n = &m.info;
                serde_json::json!({
                    "id": n.me.id.to_hex(),
                    "public_key": hex::encode(m.key),
                    "fingerprint": fingerprint(&m.key),
                    "addr": n.me.addr,
                    "predecessor": n.pred.as_ref().map(|p| p.id.to_hex()),
                    "predecessor_addr": n.pred.as_ref().map(|p| p.addr.clone()),
                    "successors": n.succs.iter().map(|p| p.id.to_hex()).collect::<Vec<_>>(),
                    "successor_addrs": n.succs.iter().map(|p| p.addr.clone()).collect::<Vec<_>>(),
                    "fingers": n.fingers.len(),
                    "blocks": n.blocks,
                    "records": n.records,
                    "bytes": n.bytes,
                    "replicas": n.replicas,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "nodes": list }));
        return Ok(());
    }
    println!(
        "{:<16}  {:<16}  {:<21}  {:<16}  {:>7}  {:>7}  {:>12}  successors",
        "id", "key", "address", "predecessor", "blocks", "records", "bytes"
    );
    for m in &members {
        let n = &m.info;
        println!(
            "{:<16}  {:<16}  {:<21}  {:<16}  {:>7}  {:>7}  {:>12}  {}",
            &n.me.id.to_hex()[..16],
            fingerprint(&m.key),
            n.me.addr,
            n.pred
                .as_ref()
                .map(|p| p.id.to_hex()[..16].to_string())
                .unwrap_or_else(|| "-".into()),
            n.blocks,
            n.records,
            n.bytes,
            n.succs
                .iter()
                .map(|p| p.id.to_hex()[..8].to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    println!("{} members", members.len());
    Ok(())
}
