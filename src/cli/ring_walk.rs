//! `peerstore ring`: walk the ring from one node along successor pointers
//! and print every member.

use super::client::call_client;
use crate::wire::{ClientRequest, ClientResponse, NodeInfo};
use std::collections::HashSet;

/// Members visited at most (a guard against a broken ring).
const MAX_MEMBERS: usize = 100_000;

/// Visits the ring in successor order starting at `peer`. A member that
/// does not answer is skipped by trying the next entry of the last answering
/// member's successor list.
pub async fn walk_ring(peer: &str) -> Result<Vec<NodeInfo>, String> {
    let first = info(peer).await?;
    let start = first.me.id;
    let mut seen = HashSet::from([start]);
    let mut out = vec![first];
    while out.len() < MAX_MEMBERS {
        let last = out.last().ok_or("empty walk")?;
        let mut next = None;
        for s in &last.succs {
            if s.id == start {
                break;
            }
            match info(&s.addr).await {
                Ok(i) => {
                    next = Some(i);
                    break;
                }
                Err(e) => log::warn!("{}: {e}; trying the next successor", s.addr),
            }
        }
        match next {
            Some(i) if !seen.contains(&i.me.id) => {
                seen.insert(i.me.id);
                out.push(i);
            }
            _ => break,
        }
    }
    Ok(out)
}

async fn info(addr: &str) -> Result<NodeInfo, String> {
    match call_client(addr, ClientRequest::Info).await? {
        ClientResponse::Info(i) => Ok(i),
        _ => Err(format!("{addr} sent an unexpected answer")),
    }
}

/// `peerstore ring [--json]`.
pub async fn run_ring(peer: &str, json: bool) -> Result<(), String> {
    let nodes = walk_ring(peer).await?;
    if json {
        let list: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.me.id.to_hex(),
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
        "{:<16}  {:<21}  {:<16}  {:>7}  {:>7}  {:>12}  successors",
        "id", "address", "predecessor", "blocks", "records", "bytes"
    );
    for n in &nodes {
        println!(
            "{:<16}  {:<21}  {:<16}  {:>7}  {:>7}  {:>12}  {}",
            &n.me.id.to_hex()[..16],
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
    println!("{} members", nodes.len());
    Ok(())
}
