//! Unit tests of the chord state machine on hand-driven message exchanges.

use super::*;
use crate::id::small;
use crate::wire::test_peer as peer;

#[test]
fn joining_node_answers_pings_but_not_state() {
    let mut a = ChordNode::new(peer(10), Config::default());
    a.join(peer(20));
    assert_eq!(a.handle_request(ChordRequest::Ping), ChordResponse::Pong);
    assert_eq!(
        a.handle_request(ChordRequest::GetState),
        ChordResponse::Busy
    );
    assert_eq!(
        a.handle_request(ChordRequest::FindSuccessor(small(5))),
        ChordResponse::Busy
    );
}

#[test]
fn join_takes_successor_list_from_live_successor() {
    let mut j = ChordNode::new(peer(15), Config::default());
    j.join(peer(0));
    let hop = j.poll_outgoing().unwrap();
    assert_eq!(hop.req, ChordRequest::FindSuccessor(small(15)));
    j.handle_reply(
        hop.token,
        Ok(ChordResponse::Found {
            owner: peer(20),
            next: vec![peer(30)],
        }),
    );
    assert!(!j.is_member(), "not a member before the successor answered");
    let get = j.poll_outgoing().unwrap();
    assert_eq!(get.to, peer(20));
    assert_eq!(get.req, ChordRequest::GetState);
    j.handle_reply(
        get.token,
        Ok(ChordResponse::State {
            pred: Some(peer(10)),
            succs: vec![peer(30), peer(40), peer(15)],
            whole: false,
        }),
    );
    assert!(j.is_member());
    // Entries after the successor are its word: adopted once they answer.
    assert_eq!(j.succs(), &[peer(20)]);
    let mut pinged = Vec::new();
    while let Some(o) = j.poll_outgoing() {
        if o.req == ChordRequest::Ping {
            pinged.push(o.to.clone());
            j.handle_reply(o.token, Ok(ChordResponse::Pong));
        }
    }
    assert_eq!(pinged, vec![peer(30), peer(40)]);
    // The list stops where it comes back to the joiner.
    assert_eq!(j.succs(), &[peer(20), peer(30), peer(40)]);
}

#[test]
fn a_join_answer_the_successor_does_not_confirm_walks_back() {
    let mut j = ChordNode::new(peer(15), Config::default());
    j.join(peer(0));
    let hop = j.poll_outgoing().unwrap();
    // A forged (or stale) answer names 30 as the joiner's successor.
    j.handle_reply(
        hop.token,
        Ok(ChordResponse::Found {
            owner: peer(30),
            next: vec![],
        }),
    );
    let get = j.poll_outgoing().unwrap();
    assert_eq!(get.to, peer(30));
    // 30's predecessor 20 lies between: 30 does not hold 15, 20 is asked.
    j.handle_reply(
        get.token,
        Ok(ChordResponse::State {
            pred: Some(peer(20)),
            succs: vec![peer(40)],
            whole: false,
        }),
    );
    assert!(!j.is_member());
    let get = j.poll_outgoing().unwrap();
    assert_eq!((get.to, get.req), (peer(20), ChordRequest::GetState));
}

#[test]
fn forged_successor_lists_are_cut_where_they_break_ring_order() {
    let mut n = ChordNode::new(peer(10), Config::default());
    n.create();
    n.succs = vec![peer(30)];
    n.whole = false;
    n.answered.extend([peer(40).id, peer(35).id, peer(50).id]);
    n.stabilize();
    let get = n.poll_outgoing().unwrap();
    // 35 after 40 goes backwards round the ring: the list stops there.
    n.handle_reply(
        get.token,
        Ok(ChordResponse::State {
            pred: Some(peer(10)),
            succs: vec![peer(40), peer(35), peer(50)],
            whole: true,
        }),
    );
    assert_eq!(n.succs(), &[peer(30), peer(40)]);
    assert!(!n.whole_ring(), "a cut list is not the whole ring");
}

#[test]
fn rectify_keeps_live_predecessor() {
    let mut n = ChordNode::new(peer(50), Config::default());
    n.create();
    n.handle_request(ChordRequest::Notify(peer(40)));
    assert_eq!(n.pred(), Some(&peer(40)));
    // Alone, it asks 40 for its state at once (and takes it for its
    // successor); the calls that follow are not this test's.
    let ask = n.poll_outgoing().unwrap();
    n.handle_reply(
        ask.token,
        Ok(ChordResponse::State {
            pred: Some(peer(50)),
            succs: vec![peer(50)],
            whole: true,
        }),
    );
    while n.poll_outgoing().is_some() {}
    // 30 is not in (40, 50): ping 40 first.
    n.handle_request(ChordRequest::Notify(peer(30)));
    let ping = n.poll_outgoing().unwrap();
    assert_eq!(
        (ping.to.clone(), ping.req.clone()),
        (peer(40), ChordRequest::Ping)
    );
    n.handle_reply(ping.token, Ok(ChordResponse::Pong));
    assert_eq!(n.pred(), Some(&peer(40)));
    n.handle_request(ChordRequest::Notify(peer(30)));
    let ping = n.poll_outgoing().unwrap();
    n.handle_reply(ping.token, Err(Failure::Timeout));
    assert_eq!(n.pred(), Some(&peer(30)));
    // 45 is in (30, 50): adopted at once.
    n.handle_request(ChordRequest::Notify(peer(45)));
    assert_eq!(n.pred(), Some(&peer(45)));
}

#[test]
fn a_lone_node_notified_by_a_joiner_asks_it_for_its_state_at_once() {
    let mut n = ChordNode::new(peer(50), Config::default());
    n.create();
    assert!(n.in_contact(), "a ring of one is not cut off");
    n.handle_request(ChordRequest::Notify(peer(40)));
    assert_eq!(n.pred(), Some(&peer(40)));
    // The round that admits it starts now, not at the next tick, and the
    // joiner is taken only once it answers.
    let ask = n.poll_outgoing().expect("a state request at once");
    assert_eq!(
        (ask.to.clone(), ask.req.clone()),
        (peer(40), ChordRequest::GetState)
    );
    assert!(n.succs().is_empty());
    n.handle_reply(
        ask.token,
        Ok(ChordResponse::State {
            pred: Some(peer(50)),
            succs: vec![peer(50)],
            whole: true,
        }),
    );
    assert_eq!(n.succs(), &[peer(40)]);
    assert!(n.in_contact());
    assert_eq!(
        n.handle_request(ChordRequest::FindSuccessor(small(45))),
        ChordResponse::Found {
            owner: peer(50),
            next: vec![peer(40)],
        }
    );
}

#[test]
fn stabilize_adopts_new_successor_only_if_it_answers() {
    let mut n = ChordNode::new(peer(10), Config::default());
    n.create();
    n.succs = vec![peer(30), peer(40)];
    n.whole = false;
    n.stabilize();
    let get = n.poll_outgoing().unwrap();
    n.handle_reply(
        get.token,
        Ok(ChordResponse::State {
            pred: Some(peer(20)),
            succs: vec![peer(40), peer(50)],
            whole: false,
        }),
    );
    let mut check = n.poll_outgoing().unwrap();
    while check.req == ChordRequest::Ping {
        // 50 is new to this node: pinged before it is adopted.
        n.handle_reply(check.token, Ok(ChordResponse::Pong));
        check = n.poll_outgoing().unwrap();
    }
    assert_eq!(check.to, peer(20));
    n.handle_reply(check.token, Err(Failure::Timeout));
    assert_eq!(n.successor(), &peer(30), "dead candidate not adopted");
    // Notify goes to the kept successor.
    let notify = n.poll_outgoing().unwrap();
    assert_eq!(
        (notify.to, notify.req),
        (peer(30), ChordRequest::Notify(peer(10)))
    );
}

#[test]
fn dead_successor_is_dropped_and_next_tried() {
    let mut n = ChordNode::new(peer(10), Config::default());
    n.create();
    n.succs = vec![peer(30), peer(40)];
    n.whole = false;
    n.stabilize();
    let get = n.poll_outgoing().unwrap();
    n.handle_reply(get.token, Err(Failure::Unreachable));
    assert_eq!(n.succs(), &[peer(40)]);
    let again = n.poll_outgoing().unwrap();
    assert_eq!((again.to, again.req), (peer(40), ChordRequest::GetState));
}

#[test]
fn lookup_routes_through_closer_nodes_and_skips_dead_ones() {
    let mut n = ChordNode::new(peer(10), Config::default());
    n.create();
    n.succs = vec![peer(20)];
    n.whole = false;
    n.fingers.set(3, peer(60));
    n.fingers.set(5, peer(100));
    while n.poll_event().is_some() {}
    let id = n.start_lookup(small(150));
    let hop = n.poll_outgoing().unwrap();
    assert_eq!(hop.to, peer(100), "closest preceding finger first");
    n.handle_reply(hop.token, Err(Failure::Timeout));
    let hop = n.poll_outgoing().unwrap();
    assert_eq!(hop.to, peer(60), "falls back to the next best");
    n.handle_reply(
        hop.token,
        Ok(ChordResponse::Next(vec![peer(140), peer(200)])),
    );
    let hop = n.poll_outgoing().unwrap();
    assert_eq!(hop.to, peer(140));
    n.handle_reply(
        hop.token,
        Ok(ChordResponse::Found {
            owner: peer(160),
            next: vec![peer(170)],
        }),
    );
    match n.poll_event() {
        Some(Event::LookupDone {
            id: got,
            result: Ok(r),
        }) => {
            assert_eq!(got, id);
            assert_eq!(r.owner, peer(160));
            assert_eq!(r.hops, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn leaving_successor_is_replaced_by_the_next() {
    let mut n = ChordNode::new(peer(10), Config::default());
    n.create();
    n.succs = vec![peer(20), peer(30)];
    n.whole = false;
    n.handle_request(ChordRequest::Leaving {
        peer: peer(20),
        succs: vec![peer(30), peer(40)],
    });
    assert_eq!(n.succs(), &[peer(30)]);
}
