//! A ring member that lies, to show that no single liar costs acknowledged
//! data (DESIGN.md, "Threat model").
//!
//! The liar runs the ring protocol for itself, but answers others with:
//! - forged lookup answers: `Found`, naming itself or a random member as
//!   the owner, with random members as the nodes after it;
//! - a forged state: a random predecessor and a successor list of random
//!   members (in ring order, the most believable forgery);
//! - false "I hold it" claims: every store is acknowledged and dropped,
//!   every missing-list question answered "nothing missing", every proof
//!   challenge answered with random bytes; reads find nothing.

use super::Sim;
use crate::rpc::{CallError, Reply};
use crate::wire::{
    ChordRequest, ChordResponse, Peer, Proof, RemoteError, ReplicaRequest, ReplicaResponse,
    Request, Response,
};
use rand::Rng;

impl Sim {
    /// Up to `n` random live members other than `liar`, in ring order
    /// after it.
    fn random_members(&mut self, liar: usize, n: usize) -> Vec<Peer> {
        let me = self.nodes[liar].chord.me().id;
        let members: Vec<usize> = self
            .live_members()
            .into_iter()
            .filter(|&j| j != liar)
            .collect();
        let mut out: Vec<Peer> = Vec::new();
        for _ in 0..n {
            if members.is_empty() {
                break;
            }
            let p = self.nodes[members[self.rng.gen_range(0..members.len())]]
                .chord
                .me()
                .clone();
            if !out.iter().any(|q| q.id == p.id) {
                out.push(p);
            }
        }
        out.sort_by_key(|p| me.distance_to(p.id));
        out
    }

    /// A lying answer to a ring request.
    pub(super) fn lie_chord(&mut self, liar: usize, req: ChordRequest) -> ChordResponse {
        match req {
            ChordRequest::FindSuccessor(_) => {
                let mut next = self.random_members(liar, 4);
                let owner = if self.rng.gen_bool(0.5) || next.is_empty() {
                    self.nodes[liar].chord.me().clone()
                } else {
                    next.remove(0)
                };
                ChordResponse::Found { owner, next }
            }
            ChordRequest::GetState => {
                let pred = self.random_members(liar, 1).pop();
                let succs = self.random_members(liar, 6);
                ChordResponse::State {
                    pred,
                    succs,
                    whole: false,
                }
            }
            other => self.nodes[liar].chord.handle_request(other),
        }
    }

    /// A lying answer to a request machine's call.
    pub(super) fn lie_request(&mut self, liar: usize, req: Request) -> Reply {
        match req {
            Request::Chord(r) => {
                let resp = self.lie_chord(liar, r);
                self.pump(liar);
                Ok(Response::Chord(resp))
            }
            Request::Replica(r) => match r {
                ReplicaRequest::StoreBlock { .. }
                | ReplicaRequest::StoreRecord { .. }
                | ReplicaRequest::Sync => Ok(Response::Replica(ReplicaResponse::Stored)),
                ReplicaRequest::FetchBlock { .. } | ReplicaRequest::FetchRecord { .. } => {
                    Err(CallError::Refused(RemoteError::NotFound))
                }
                ReplicaRequest::Missing { .. } => {
                    Ok(Response::Replica(ReplicaResponse::Missing(Vec::new())))
                }
                ReplicaRequest::Release(_) => Ok(Response::Replica(ReplicaResponse::Freed(
                    crate::wire::Freed::default(),
                ))),
                ReplicaRequest::Owned { .. } => {
                    Ok(Response::Replica(ReplicaResponse::Owned(Vec::new())))
                }
                ReplicaRequest::Space { .. } => Ok(Response::Replica(ReplicaResponse::Space(
                    crate::wire::NodeSpace::default(),
                ))),
                ReplicaRequest::Prove { items, .. } => {
                    let proofs = items
                        .iter()
                        .map(|_| {
                            let mut h = [0u8; 32];
                            self.rng.fill(&mut h);
                            Proof::Held(h)
                        })
                        .collect();
                    Ok(Response::Replica(ReplicaResponse::Proofs(proofs)))
                }
            },
            Request::Client(_) => Err(CallError::Unexpected),
        }
    }
}
