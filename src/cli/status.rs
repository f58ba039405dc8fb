//! `peerstore status [--json]`: one node's ring contact and its mounted
//! folder's open conflicts, offline journal and pins, as a few lines or
//! one JSON object; `peerstore pin|unpin PATH` answer with the same.

use super::client::{call_client, client_pool};
use super::{CliError, Target};
use crate::rpc::{ClientPin, ClientStatus};
use crate::wire::NodeStatus;

/// Asks the node at `target` for its status and prints it.
pub async fn run_status(target: &Target, json: bool) -> Result<(), CliError> {
    let pool = client_pool(target);
    let s = call_client(&pool, &target.addr, "node", ClientStatus).await?;
    if json {
        println!("{}", status_json(&s));
    } else {
        print!("{}", status_text(&s));
    }
    Ok(())
}

/// Asks the node at `target` to pin (or unpin) `path` of its mount, and
/// prints its status after.
pub async fn run_pin(target: &Target, path: &str, pin: bool) -> Result<(), CliError> {
    let pool = client_pool(target);
    let s = call_client(
        &pool,
        &target.addr,
        "node",
        ClientPin {
            path: path.to_string(),
            pin,
        },
    )
    .await?;
    print!("{}", status_text(&s));
    Ok(())
}

/// The other members in the node's successor list (its ring contact).
fn contacts(s: &NodeStatus) -> usize {
    let mut ids: Vec<_> = s
        .info
        .succs
        .iter()
        .filter(|p| p.id != s.info.me.id)
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

fn ring_line(s: &NodeStatus) -> String {
    match (s.member, contacts(s)) {
        (false, _) => "not a ring member (joining, or cut off and rejoining)".into(),
        (true, 0) => "ring member, alone (a ring of one)".into(),
        (true, n) => format!(
            "ring member, in contact with {n} other member{}; successor {}",
            if n == 1 { "" } else { "s" },
            s.info.succs.first().map_or("-", |p| p.addr.as_str())
        ),
    }
}

/// The human-readable form.
pub fn status_text(s: &NodeStatus) -> String {
    let mut out = format!(
        "node {} at {}: {}\n",
        s.info.me.id.short(),
        s.info.me.addr,
        ring_line(s)
    );
    match &s.mount {
        None => out.push_str("no folder mounted\n"),
        Some(m) => {
            let open: Vec<_> = m.open_conflicts().collect();
            out.push_str(&format!(
                "folder {}: {} open conflict{}\n",
                m.dir,
                open.len(),
                if open.len() == 1 { "" } else { "s" }
            ));
            let l = &m.local;
            if l.online {
                out.push_str("ring in reach");
            } else {
                out.push_str("OFFLINE: cut off from the ring, writes go to the journal");
            }
            out.push_str(&format!(
                "; journal: {} write{} ({} bytes) waiting\n",
                l.journal_entries,
                if l.journal_entries == 1 { "" } else { "s" },
                l.journal_bytes
            ));
            out.push_str(&format!(
                "pinned: {} path{}, {} bytes held\n",
                l.pinned.len(),
                if l.pinned.len() == 1 { "" } else { "s" },
                l.pinned_bytes
            ));
            for p in &l.pinned {
                out.push_str(&format!("  {p}\n"));
            }
            for c in open {
                let at = jiff::Timestamp::from_second(c.at)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                out.push_str(&format!("  {}  kept as  {}  ({at})\n", c.path, c.copy));
            }
        }
    }
    out
}

/// The JSON form: one object.
pub fn status_json(s: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "node": s.info.me.id.to_hex(),
        "addr": s.info.me.addr,
        "member": s.member,
        "contacts": contacts(s),
        "successor": s.info.succs.first().map(|p| p.addr.clone()),
        "mount": s.mount.as_ref().map(|m| serde_json::json!({
            "dir": m.dir,
            "conflicts": m.open_conflicts().map(|c| serde_json::json!({
                "path": c.path,
                "copy": c.copy,
                "at": c.at,
            })).collect::<Vec<_>>(),
            "online": m.local.online,
            "journal": {
                "entries": m.local.journal_entries,
                "bytes": m.local.journal_bytes,
            },
            "pinned": m.local.pinned,
            "pinned_bytes": m.local.pinned_bytes,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::wire::{ConflictInfo, MountStatus, NodeInfo, Peer};

    fn peer(b: u8, addr: &str) -> Peer {
        Peer {
            id: Id([b; 32]),
            addr: addr.into(),
        }
    }

    #[test]
    fn open_conflicts_are_listed_and_resolved_ones_are_not() {
        let conflict = |copy: &str, present| ConflictInfo {
            path: "/a.txt".into(),
            copy: copy.into(),
            at: 1_796_306_400,
            present,
        };
        let s = NodeStatus {
            info: NodeInfo {
                me: peer(1, "127.0.0.1:7400"),
                pred: None,
                succs: vec![peer(2, "127.0.0.2:7400"), peer(1, "127.0.0.1:7400")],
                fingers: vec![],
                blocks: 0,
                records: 0,
                bytes: 0,
                replicas: 3,
            },
            member: true,
            mount: Some(MountStatus {
                dir: "/home/u/PeerStore".into(),
                conflicts: vec![
                    conflict("/a.conflict-x-1.txt", false),
                    conflict("/a.conflict-x-2.txt", true),
                ],
                local: crate::wire::LocalState {
                    online: false,
                    journal_entries: 3,
                    journal_bytes: 4096,
                    pinned: vec!["/photos".into()],
                    pinned_bytes: 1 << 20,
                },
            }),
        };
        let text = status_text(&s);
        assert!(text.contains("in contact with 1 other member;"), "{text}");
        assert!(text.contains("1 open conflict\n"), "{text}");
        assert!(
            text.contains("/a.conflict-x-2.txt") && !text.contains("x-1"),
            "{text}"
        );
        let j = status_json(&s);
        assert_eq!(j["contacts"], 1);
        assert_eq!(j["mount"]["conflicts"].as_array().unwrap().len(), 1);
        assert_eq!(j["mount"]["conflicts"][0]["copy"], "/a.conflict-x-2.txt");
        assert!(
            text.contains("OFFLINE") && text.contains("journal: 3 writes"),
            "{text}"
        );
        assert!(text.contains("  /photos\n"), "{text}");
        assert_eq!(j["mount"]["online"], false);
        assert_eq!(j["mount"]["journal"]["entries"], 3);
        assert_eq!(j["mount"]["pinned"][0], "/photos");
        assert_eq!(j["mount"]["pinned_bytes"], 1 << 20);
    }
}
