//! What the dashboard shows, as one value (`/api/status` is its JSON):
//! this node and its key range, every member the survey knows with its
//! counts and state, whether the data is safe, this node's levels, its
//! mount's conflicts and the account's shares.

use super::survey::Seen;
use crate::metrics::Levels;
use crate::wire::{MountStatus, RepairState};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A repair pass counts as having run after a member went down if it
/// ended at least this long after.
const REPAIR_SETTLE: Duration = Duration::from_secs(1);

/// The dashboard's content.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node's ID (hex), address, and whether it is a ring member.
    pub id: String,
    pub addr: String,
    pub member: bool,
    /// The keys this node owns: `(from, to]` (hex), if it knows its
    /// predecessor.
    pub range: Option<(String, String)>,
    /// Copies kept of every item.
    pub replicas: u32,
    /// The members, in ring order.
    pub members: Vec<Member>,
    pub safety: Safety,
    pub levels: Levels,
    pub mount: Option<MountStatus>,
    pub shares: Option<Shares>,
}

/// One member, as the survey saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub addr: String,
    /// Whether it answered the last probe.
    pub up: bool,
    pub me: bool,
    /// Its counts as of its last answer.
    pub blocks: u64,
    pub records: u64,
    pub bytes: u64,
    /// Its successors' IDs (hex), first first.
    pub succs: Vec<String>,
    pub repair: Option<RepairState>,
    /// Milliseconds since it last answered (none: never).
    pub last_ok_ms: Option<u64>,
}

/// Whether every item is at r copies, as far as the members tell.
#[derive(Debug, Clone, Serialize)]
pub struct Safety {
    pub safe: bool,
    /// Why not (empty when safe).
    pub reasons: Vec<String>,
}

/// The account's shares (when the node mounts an account's tree).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shares {
    /// `(path, to, write)` for each folder shared.
    pub given: Vec<(String, String, bool)>,
    /// `(path, from, write)` for each folder shared with the account.
    pub received: Vec<(String, String, bool)>,
}

/// The members as the dashboard shows them, from the survey's view.
pub fn members(seen: &[Seen], me: crate::id::Id, now: Instant) -> Vec<Member> {
    seen.iter()
        .map(|s| {
            let h = s.health.as_ref();
            Member {
                id: s.peer.id.to_hex(),
                addr: s.peer.addr.clone(),
                up: s.up,
                me: s.peer.id == me,
                blocks: h.map_or(0, |h| h.info.blocks),
                records: h.map_or(0, |h| h.info.records),
                bytes: h.map_or(0, |h| h.info.bytes),
                succs: h.map_or(Vec::new(), |h| {
                    h.info.succs.iter().map(|p| p.id.to_hex()).collect()
                }),
                repair: h.and_then(|h| h.repair),
                last_ok_ms: s.last_ok.map(|t| now.duration_since(t).as_millis() as u64),
            }
        })
        .collect()
}

/// Whether the data is safe: at least r members up, none down since
/// before every live member's last repair pass, and no pass left items
/// short of r copies.
pub fn safety(seen: &[Seen], replicas: u32, now: Instant) -> Safety {
    let mut reasons = Vec::new();
    let up: Vec<&Seen> = seen.iter().filter(|s| s.up).collect();
    if (up.len() as u32) < replicas {
        reasons.push(format!(
            "{} member{} up: {replicas} copies of every item need {replicas}",
            up.len(),
            if up.len() == 1 { "" } else { "s" }
        ));
    }
    let last_down = seen.iter().filter_map(|s| s.down_since).max();
    for s in seen.iter().filter(|s| !s.up) {
        reasons.push(format!(
            "{} ({}) is down: its items are copied anew by the repair passes",
            s.peer.id.short(),
            s.peer.addr
        ));
    }
    for s in &up {
        let name = s.peer.id.short();
        match s.health.as_ref().and_then(|h| h.repair) {
            None => reasons.push(format!("{name}: no repair pass yet")),
            Some(r) if r.backlog > 0 => reasons.push(format!(
                "{name}: its last repair pass left {} items short of {replicas} copies",
                r.backlog
            )),
            Some(r) => {
                let ended = now.checked_sub(Duration::from_millis(r.age_ms));
                if let (Some(d), Some(e)) = (last_down, ended)
                    && e < d + REPAIR_SETTLE
                {
                    reasons.push(format!("{name}: repairing since a member went down"));
                }
            }
        }
    }
    // A down member's items are safe once every live member has repaired
    // since: then its absence is no reason.
    let repaired_since_down = last_down.is_some()
        && up.len() as u32 >= replicas
        && up.iter().all(|s| {
            s.health.as_ref().and_then(|h| h.repair).is_some_and(|r| {
                r.backlog == 0
                    && now
                        .checked_sub(Duration::from_millis(r.age_ms))
                        .zip(last_down)
                        .is_some_and(|(e, d)| e >= d + REPAIR_SETTLE)
            })
        });
    if repaired_since_down {
        reasons.retain(|r| !r.contains(" is down: "));
    }
    Safety {
        safe: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::wire::{Health, NodeInfo, Peer};

    fn seen(n: u8, up: bool, repair: Option<RepairState>, down_for: Option<u64>) -> Seen {
        let now = Instant::now();
        let peer = Peer {
            id: Id([n; 32]),
            addr: format!("127.0.0.{n}:7400"),
        };
        Seen {
            health: Some(Health {
                info: NodeInfo {
                    me: peer.clone(),
                    pred: None,
                    succs: vec![],
                    fingers: vec![],
                    blocks: 1,
                    records: 2,
                    bytes: 3,
                    replicas: 3,
                },
                member: true,
                repair,
            }),
            peer,
            up,
            last_ok: Some(now),
            down_since: down_for.map(|s| now - Duration::from_secs(s)),
        }
    }

    fn pass(age_ms: u64, backlog: u64) -> Option<RepairState> {
        Some(RepairState {
            age_ms,
            copied: 0,
            backlog,
        })
    }

    #[test]
    fn safe_only_with_r_members_up_and_repaired() {
        let now = Instant::now();
        let ok = |n| seen(n, true, pass(500, 0), None);
        assert!(safety(&[ok(1), ok(2), ok(3)], 3, now).safe);
        // Too few members for r copies.
        let s = safety(&[ok(1), ok(2)], 3, now);
        assert!(!s.safe && s.reasons[0].contains("2 members up"), "{s:?}");
        // A pass that could not copy everything.
        let s = safety(&[ok(1), ok(2), seen(3, true, pass(500, 4), None)], 3, now);
        assert!(!s.safe && s.reasons[0].contains("4 items short"), "{s:?}");
        // No pass yet.
        let s = safety(&[ok(1), ok(2), seen(3, true, None, None)], 3, now);
        assert!(!s.safe, "{s:?}");
    }

    #[test]
    fn a_down_member_is_a_risk_until_every_live_member_repaired_after() {
        let now = Instant::now();
        let down = seen(4, false, pass(0, 0), Some(10));
        // Passes that ended 0.5 s ago, 9.5 s after it went down: safe.
        let fresh = |n| seen(n, true, pass(500, 0), None);
        let s = safety(&[fresh(1), fresh(2), fresh(3), down.clone()], 3, now);
        assert!(s.safe, "{s:?}");
        // One member's last pass ended before it went down: not yet.
        let stale = seen(3, true, pass(20_000, 0), None);
        let s = safety(&[fresh(1), fresh(2), stale, down], 3, now);
        assert!(!s.safe, "{s:?}");
        assert!(s.reasons.iter().any(|r| r.contains("is down")), "{s:?}");
        assert_eq!(
            members(&[fresh(1)], Id([1; 32]), now)[0].bytes,
            3,
            "counts come from the member's answer"
        );
    }
}
