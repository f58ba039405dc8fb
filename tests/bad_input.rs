//! Bad input against real node processes: each gets its clear refusal, and
//! the node keeps serving everyone else.
//!
//! Bytes that are not a link handshake (plaintext frames, garbage) are
//! refused before any frame is read. Inside a secure link, broken frames
//! (garbage, a 4 GiB length prefix, truncated and stalled frames, a
//! response sent to the server) close that connection only, with a warning
//! naming the peer. Well-framed but wrong requests (a
//! block whose bytes do not hash to its key, forged, stale or foreign
//! records, an oversized block) are answered with the matching
//! `RemoteError` and change nothing.

mod common;

use common::{NodeGuard, NodeOpts, addr, get_file, put_file};
use ed25519_dalek::SigningKey;
use peerstore::fs::Identity;
use peerstore::id::Id;
use peerstore::net::{Connection, NetConfig, Pool, SecureStream, handshake};
use peerstore::record::Record;
use peerstore::wire::{
    self, ClientRequest, ClientResponse, Frame, MAX_BLOCK, RemoteError, ReplicaRequest,
    ReplicaResponse, Request, Response,
};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Loopback blocks of the tests in this file.
const BLOCK_FRAMES: u8 = 103;
const BLOCK_REQUESTS: u8 = 104;

/// How long the node may take to close a connection it refuses.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// The server's frame timeout (`ServerConfig::default().frame_timeout`) plus
/// slack.
const STALL_CLOSE_WITHIN: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(10);

/// Opens a raw connection to `to` from the loopback address `from` (port
/// chosen by the system), so the node's log names a known peer.
async fn raw_connect(from: &str, to: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let to: SocketAddr = to.parse().unwrap();
    tokio::time::timeout(CLOSE_WITHIN, sock.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// A secured link to `to` from `from`, on which the test writes raw bytes.
async fn secure_connect(from: &str, to: &str) -> SecureStream<TcpStream> {
    let tcp = raw_connect(from, to).await;
    handshake::initiate(tcp, &common::test_keys(), None, CLOSE_WITHIN)
        .await
        .expect("handshake with the node")
        .stream
}

/// Waits until the peer closes `s`: a read returns end of stream or a reset.
/// Fails if the node answers anything or keeps the connection open.
async fn assert_closed<S: AsyncRead + Unpin>(s: &mut S, within: Duration, what: &str) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => panic!(
            "{what}: the node answered {n} bytes instead of closing: {:?}",
            &buf[..n]
        ),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{what}: unexpected error {e}"
        ),
        Err(_) => panic!("{what}: the connection is still open after {within:?}"),
    }
}

/// Waits until the node's log has a warning about the connection from
/// `peer` containing `reason`.
async fn assert_logged(node: &NodeGuard, peer: SocketAddr, reason: &str) {
    assert_logged_as(node, &format!("closing connection from {peer}: "), reason).await
}

/// Waits until the node's log has a warning line containing `want` and
/// `reason`.
async fn assert_logged_as(node: &NodeGuard, want: &str, reason: &str) {
    common::wait_until(
        &format!("log line {want}…{reason}"),
        CLOSE_WITHIN,
        || async {
            let log = node.log();
            match log.lines().find(|l| l.contains(want)) {
                Some(l) if l.contains(reason) && l.contains("WARN") => Ok(()),
                Some(l) => Err(format!("the line is {l:?}")),
                None => Err("no such line".into()),
            }
        },
    )
    .await;
}

/// A normal `block put` and `block get` through the CLI.
async fn put_get_works(peer: &str, rng: &mut StdRng, dir: &std::path::Path, tag: &str) {
    let len = 1000 + (rng.next_u32() % 5000) as usize;
    let data = common::random_bytes(rng, len);
    let path = dir.join(format!("{tag}.in"));
    std::fs::write(&path, &data).unwrap();
    let key = put_file(peer, &path)
        .await
        .unwrap_or_else(|e| panic!("put after {tag}: {e}"));
    assert_eq!(key, Id::of_block(&data).to_hex());
    let got = get_file(peer, &key, &dir.join(format!("{tag}.out")))
        .await
        .unwrap_or_else(|e| panic!("get after {tag}: {e}"));
    assert!(got == data, "block read back after {tag} differs");
}

/// An `Info` call over `conn`, which must still be open.
async fn info_on(conn: &Connection, expect_addr: &str) {
    assert!(!conn.is_closed(), "the well-behaved connection was closed");
    match conn.call(Request::Client(ClientRequest::Info), CALL).await {
        Ok(Response::Client(ClientResponse::Info(i))) => assert_eq!(i.me.addr, expect_addr),
        other => panic!("Info: {other:?}"),
    }
}

fn frame_bytes(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(f, &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_frames_close_only_their_connection() {
    common::with_timeout(Duration::from_secs(120), async {
        let mut rng =
            StdRng::seed_from_u64(common::seed("broken_frames_close_only_their_connection"));
        let files = tempfile::tempdir().unwrap();
        let mut node = NodeGuard::start(NodeOpts::new(&addr(BLOCK_FRAMES, 1), None)).await;
        let target = node.addr.clone();
        let from = format!("127.0.{BLOCK_FRAMES}.200");

        // A well-behaved connection open across everything below.
        let tcp = TcpStream::connect(&target).await.unwrap();
        let link = handshake::initiate(tcp, &common::test_keys(), None, CLOSE_WITHIN)
            .await
            .unwrap();
        let good = Connection::secured(link, target.clone());
        info_on(&good, &target).await;

        // Without a handshake nothing is read as a frame: a well-formed
        // plaintext request and garbage are both refused unanswered.
        let info = frame_bytes(&Frame::Request {
            id: 1,
            body: Request::Client(ClientRequest::Info),
        });
        let plain: [(&str, Vec<u8>, &str); 2] = [
            (
                "plaintext Info request",
                info,
                "is not a PeerStore handshake",
            ),
            (
                "plaintext HTTP",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "is not a PeerStore handshake",
            ),
        ];
        for (what, bytes, reason) in plain {
            let mut s = raw_connect(&from, &target).await;
            let peer = s.local_addr().unwrap();
            s.write_all(&bytes).await.unwrap();
            assert_closed(&mut s, CLOSE_WITHIN, what).await;
            assert_logged_as(&node, &format!("refusing connection from {peer}: "), reason).await;
            info_on(&good, &target).await;
        }

        // A frame started but never finished: closed after the frame timeout.
        // Runs alongside the cases below.
        let mut stalled = secure_connect(&from, &target).await;
        let stalled_peer = stalled.get_ref().local_addr().unwrap();
        stalled
            .write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .await
            .unwrap();
        stalled.flush().await.unwrap();
        let stall_check = tokio::spawn(async move {
            let t = std::time::Instant::now();
            assert_closed(&mut stalled, STALL_CLOSE_WITHIN, "stalled frame").await;
            t.elapsed()
        });

        let response = frame_bytes(&Frame::Response {
            id: 1,
            body: Response::Error(RemoteError::Busy),
        });
        let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
            // (what, bytes, then shut down our write side, logged reason)
            (
                "HTTP garbage",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                false,
                "exceeds the maximum",
            ),
            (
                "4 GiB length prefix",
                vec![0xff; 4],
                false,
                "frame of 4294967295 bytes exceeds the maximum",
            ),
            ("empty frame", vec![0, 0, 0, 0], false, "empty frame"),
            (
                "wrong version",
                vec![0, 0, 0, 3, 99, 0, 0],
                false,
                "unsupported protocol version 99",
            ),
            (
                "garbage body",
                vec![0, 0, 0, 5, wire::VERSION, 0xff, 0xff, 0xff, 0xff],
                false,
                "malformed frame body",
            ),
            (
                "truncated frame",
                [&[0, 0, 0, 100][..], &[7; 10]].concat(),
                true,
                "connection closed mid-frame",
            ),
            (
                "response sent to the server",
                response,
                false,
                "it sent a response",
            ),
        ];
        for (what, bytes, shut, reason) in cases {
            let mut s = secure_connect(&from, &target).await;
            let peer = s.get_ref().local_addr().unwrap();
            s.write_all(&bytes).await.unwrap();
            s.flush().await.unwrap();
            if shut {
                s.shutdown().await.unwrap();
            }
            assert_closed(&mut s, CLOSE_WITHIN, what).await;
            assert_logged(&node, peer, reason).await;
            info_on(&good, &target).await;
            put_get_works(&target, &mut rng, files.path(), what).await;
            assert!(node.is_running(), "node died after {what}");
        }

        let took = stall_check.await.unwrap();
        assert!(
            took >= Duration::from_secs(5),
            "stalled frame closed after only {took:?}"
        );
        assert_logged(&node, stalled_peer, "frame not completed within").await;
        info_on(&good, &target).await;
        put_get_works(&target, &mut rng, files.path(), "stalled frame").await;
        assert!(node.is_running());
    })
    .await;
}

/// `call`, unwrapped to the answer (a transport failure fails the test).
async fn call(pool: &Pool, to: &str, req: Request) -> Response {
    pool.call(to, req.clone())
        .await
        .unwrap_or_else(|e| panic!("{req:?} to {to}: {e}"))
}

fn put_record(record: Record) -> Request {
    Request::Client(ClientRequest::PutRecord {
        record,
        expected_seq: None,
    })
}

fn get_record(key: Id) -> Request {
    Request::Client(ClientRequest::GetRecord { key })
}

/// The value and sequence number `GetRecord` returns, or the error.
async fn current(pool: &Pool, to: &str, key: Id) -> Result<(u64, Option<Vec<u8>>), RemoteError> {
    match call(pool, to, get_record(key)).await {
        Response::Client(ClientResponse::Record(r)) => {
            assert_eq!(r.key(), key);
            assert_eq!(r.verify(), Ok(()));
            Ok((r.seq, r.value.map(|v| v.to_vec())))
        }
        Response::Error(e) => Err(e),
        other => panic!("GetRecord: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_requests_are_refused_and_change_nothing() {
    common::with_timeout(Duration::from_secs(120), async {
        let mut rng = StdRng::seed_from_u64(common::seed(
            "wrong_requests_are_refused_and_change_nothing",
        ));
        let files = tempfile::tempdir().unwrap();
        let first = addr(BLOCK_REQUESTS, 1);
        let mut nodes = common::start_ring(BLOCK_REQUESTS, 3, NodeOpts::new(&first, None)).await;
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let pool = Pool::new(
            NetConfig {
                rpc_timeout: CALL,
                connect_timeout: CALL,
                local_ip: None,
            },
            common::test_keys(),
        );
        let a = &addrs[0];

        // Replica requests act on one node's own store: only ring members
        // may send them. A client link (a throwaway key) is refused, and
        // nothing it sent is stored. Only a `Sync` (make durable what is
        // stored) is answered: a node that has just joined needs it before
        // the ring routes its ID to it, and it changes nothing.
        let good = b"a valid block from a stranger".to_vec();
        for to in &addrs {
            for req in [
                ReplicaRequest::StoreBlock {
                    key: Id::hash(&good),
                    data: good.clone().into(),
                    claims: vec![],
                    durable: true,
                },
                ReplicaRequest::Missing { items: vec![] },
            ] {
                let r = call(&pool, to, Request::Replica(req.clone())).await;
                assert!(
                    matches!(r, Response::Error(RemoteError::NotMember(_))),
                    "{req:?} from a client link to {to}: {r:?}"
                );
            }
            let r = call(&pool, to, Request::Replica(ReplicaRequest::Sync)).await;
            assert!(
                matches!(r, Response::Replica(ReplicaResponse::Stored)),
                "Sync from a client link to {to}: {r:?}"
            );
        }
        // What follows comes from a member's own key: a buggy or hostile
        // member, whose requests are checked all the same.
        let member = Pool::new(
            NetConfig {
                rpc_timeout: CALL,
                connect_timeout: CALL,
                local_ip: None,
            },
            peerstore::net::LinkKeys {
                key: peerstore::node::identity::load_or_create(nodes[2].data_dir())
                    .expect("node 3's key"),
                secret: common::test_secret(),
            },
        );
        for to in &addrs {
            let r = call(
                &member,
                to,
                Request::Replica(ReplicaRequest::FetchBlock {
                    key: Id::hash(&good),
                }),
            )
            .await;
            assert_eq!(
                r,
                Response::Error(RemoteError::NotFound),
                "a stranger's block was stored on {to}"
            );
        }

        // A replica store whose bytes do not hash to the key.
        let data = b"the bytes actually sent".to_vec();
        let claimed = Id::hash(b"the bytes the key claims");
        for to in &addrs {
            let r = call(
                &member,
                to,
                Request::Replica(ReplicaRequest::StoreBlock {
                    key: claimed,
                    data: data.clone().into(),
                    claims: vec![],
                    durable: true,
                }),
            )
            .await;
            assert_eq!(
                r,
                Response::Error(RemoteError::BadHash),
                "StoreBlock with a wrong key to {to}"
            );
            for key in [claimed, Id::hash(&data)] {
                let r = call(
                    &member,
                    to,
                    Request::Replica(ReplicaRequest::FetchBlock { key }),
                )
                .await;
                assert_eq!(
                    r,
                    Response::Error(RemoteError::NotFound),
                    "bad block was stored on {to}"
                );
            }
        }
        let owner = Identity::generate();
        // A replica store of 1 MiB + 1 with the right key.
        let big = common::random_bytes(&mut rng, MAX_BLOCK + 1);
        let r = call(
            &member,
            a,
            Request::Replica(ReplicaRequest::StoreBlock {
                key: Id::hash(&big),
                data: big.clone().into(),
                claims: vec![],
                durable: true,
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Error(RemoteError::TooLarge(MAX_BLOCK as u64 + 1))
        );

        // A client put of 1 MiB + 1: the frame fits, the node refuses it.
        let r = call(
            &pool,
            a,
            Request::Client(ClientRequest::PutBlock {
                data: big.clone(),
                claim: owner.claim(Id::hash(&big)),
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Error(RemoteError::TooLarge(MAX_BLOCK as u64 + 1))
        );
        let r = call(
            &pool,
            a,
            Request::Client(ClientRequest::GetBlock {
                key: Id::hash(&big),
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Error(RemoteError::NotFound),
            "oversized block was stored"
        );
        // A block whose claim is forged (another key's signature over
        // this owner's name) is refused and not stored.
        let small = b"claimed by someone else".to_vec();
        let mut forged = Identity::generate().claim(Id::hash(&small));
        forged.owner = owner.owner();
        let r = call(
            &pool,
            a,
            Request::Client(ClientRequest::PutBlock {
                data: small.clone(),
                claim: forged,
            }),
        )
        .await;
        assert_eq!(r, Response::Error(RemoteError::BadSignature));
        // A release not signed by the owner is refused.
        let mut release = Identity::generate().release(vec![Id::hash(&small)]);
        release.owner = owner.owner();
        let r = call(&pool, a, Request::Client(ClientRequest::Release(release))).await;
        assert!(
            matches!(r, Response::Error(RemoteError::Invalid(_))),
            "{r:?}"
        );
        // Exactly 1 MiB is fine, on all three nodes.
        let max = common::random_bytes(&mut rng, MAX_BLOCK);
        let r = call(
            &pool,
            &addrs[1],
            Request::Client(ClientRequest::PutBlock {
                data: max.clone(),
                claim: owner.claim(Id::hash(&max)),
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Client(ClientResponse::Put {
                key: Id::hash(&max),
                copies: 3
            })
        );

        // Records.
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let owner = SigningKey::from_bytes(&seed);
        rng.fill_bytes(&mut seed);
        let other = SigningKey::from_bytes(&seed);
        let name = b"bad-input-record";
        let v1 = Record::sign(&owner, name, 1, Some(b"one".to_vec()));
        let key = v1.key();
        let r = call(&pool, a, put_record(v1.clone())).await;
        assert_eq!(r, Response::Client(ClientResponse::Put { key, copies: 3 }));
        assert_eq!(
            current(&pool, &addrs[2], key).await,
            Ok((1, Some(b"one".to_vec())))
        );

        // Signed, then the value changed.
        let mut tampered = Record::sign(&owner, name, 5, Some(b"five".to_vec()));
        tampered.value = Some(bytes::Bytes::from_static(b"FIVE"));
        assert_eq!(
            call(&pool, a, put_record(tampered)).await,
            Response::Error(RemoteError::BadSignature)
        );
        // Signed by another key, claiming the owner's.
        let mut foreign = Record::sign(&other, name, 5, Some(b"five".to_vec()));
        foreign.owner = v1.owner;
        assert_eq!(foreign.key(), key);
        assert_eq!(
            call(&pool, a, put_record(foreign)).await,
            Response::Error(RemoteError::BadSignature)
        );
        // A signature of the wrong length.
        let mut short = Record::sign(&owner, name, 5, Some(b"five".to_vec()));
        short.sig.truncate(10);
        assert_eq!(
            call(&pool, a, put_record(short)).await,
            Response::Error(RemoteError::BadSignature)
        );
        // Straight to a replica, bypassing the owner: refused too.
        let mut forged = Record::sign(&other, name, 6, None);
        forged.owner = v1.owner;
        let r = call(
            &member,
            &addrs[1],
            Request::Replica(ReplicaRequest::StoreRecord {
                record: forged,
                expected_seq: None,
                durable: true,
            }),
        )
        .await;
        assert_eq!(r, Response::Error(RemoteError::BadSignature));
        assert_eq!(
            current(&pool, a, key).await,
            Ok((1, Some(b"one".to_vec()))),
            "a refused version was stored"
        );

        // Newer, then older: Stale.
        let v2 = Record::sign(&owner, name, 2, Some(b"two".to_vec()));
        assert_eq!(
            call(&pool, a, put_record(v2.clone())).await,
            Response::Client(ClientResponse::Put { key, copies: 3 })
        );
        assert_eq!(
            call(&pool, &addrs[1], put_record(v1.clone())).await,
            Response::Error(RemoteError::Stale {
                offered: 1,
                current: 2
            })
        );
        // Another version under the same sequence number (and clock) was
        // written concurrently: a compare-and-swap refuses to leave it
        // beside the held one (repair would keep both). The very same
        // version again is an idempotent retry (store::put_record).
        let other_v2 = Record::sign(&owner, name, 2, Some(b"two, again".to_vec()));
        let r = call(
            &pool,
            a,
            Request::Client(ClientRequest::PutRecord {
                record: other_v2,
                expected_seq: Some(2),
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Error(RemoteError::Conflict { current: Some(2) })
        );
        assert_eq!(
            call(&pool, a, put_record(v2.clone())).await,
            Response::Client(ClientResponse::Put { key, copies: 3 })
        );
        // A compare-and-swap on the wrong sequence.
        let v3 = Record::sign(&owner, name, 3, Some(b"three".to_vec()));
        let r = call(
            &pool,
            a,
            Request::Client(ClientRequest::PutRecord {
                record: v3,
                expected_seq: Some(1),
            }),
        )
        .await;
        assert_eq!(
            r,
            Response::Error(RemoteError::Conflict { current: Some(2) })
        );
        assert_eq!(
            current(&pool, &addrs[2], key).await,
            Ok((2, Some(b"two".to_vec())))
        );

        // A delete by someone else than the owner: refused; the same name
        // under their own key is another record and leaves this one alone.
        let mut foreign_delete = Record::sign(&other, name, 9, None);
        foreign_delete.owner = v1.owner;
        assert_eq!(
            call(&pool, a, put_record(foreign_delete)).await,
            Response::Error(RemoteError::BadSignature)
        );
        let own_delete = Record::sign(&other, name, 9, None);
        assert_ne!(own_delete.key(), key);
        assert!(matches!(
            call(&pool, a, put_record(own_delete)).await,
            Response::Client(ClientResponse::Put { .. })
        ));
        assert_eq!(
            current(&pool, a, key).await,
            Ok((2, Some(b"two".to_vec()))),
            "someone else deleted the record"
        );

        // The owner's delete works; the record is gone and cannot come back.
        let tomb = Record::sign(&owner, name, 3, None);
        assert_eq!(
            call(&pool, &addrs[2], put_record(tomb)).await,
            Response::Client(ClientResponse::Put { key, copies: 3 })
        );
        for to in &addrs {
            assert_eq!(
                current(&pool, to, key).await,
                Err(RemoteError::NotFound),
                "deleted record via {to}"
            );
        }
        assert_eq!(
            call(&pool, a, put_record(v2)).await,
            Response::Error(RemoteError::Stale {
                offered: 2,
                current: 3
            })
        );

        // Every node still serves: Info, a normal put/get, one ring.
        for (i, to) in addrs.iter().enumerate() {
            match call(&pool, to, Request::Client(ClientRequest::Info)).await {
                Response::Client(ClientResponse::Info(info)) => {
                    assert_eq!(&info.me.addr, to);
                    assert_eq!(info.replicas, 3);
                }
                other => panic!("Info from {to}: {other:?}"),
            }
            put_get_works(to, &mut rng, files.path(), &format!("requests-{i}")).await;
        }
        for n in &mut nodes {
            assert!(n.is_running(), "node {} died", n.addr);
        }
        // What is stored is exactly what was accepted: on each node the
        // 1 MiB block and the three CLI blocks; the tombstone and the other
        // key's tombstone.
        let (ms, _) = common::wait_until("final ring", Duration::from_secs(30), || async {
            let ms = common::ring_consistent(&addrs, &addrs).await?;
            if ms.iter().all(|m| m.blocks == 4 && m.records == 2) {
                Ok(ms)
            } else {
                Err(format!("{ms:?}"))
            }
        })
        .await;
        assert_eq!(ms.len(), 3);
    })
    .await;
}
