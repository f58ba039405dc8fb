//! Accounts against real node processes: users created on the ring, logged
//! in from other machines (each a configuration directory of its own, as
//! `~/.config` is per machine), a node mounting the logged-in account's
//! tree, password changes, and the refusals: a taken name, bad names and
//! passwords, a missing identity file, and forged, replayed and stale
//! writes sent straight to the replicas.

mod common;

use common::{NodeGuard, NodeOpts, addr, stderr};
use ed25519_dalek::SigningKey;
use peerstore::account::session;
use peerstore::account_record::{self, AccountBody, KdfParams, SealedKeyring};
use peerstore::id::Id;
use peerstore::net::{NetConfig, Pool};
use peerstore::record::{Record, account_key};
use peerstore::wire::{RemoteError, ReplicaRequest, ReplicaResponse, Request, Response};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK_MACHINES: u8 = 133;
const BLOCK_REFUSALS: u8 = 134;
const CALL: Duration = Duration::from_secs(10);

/// One machine: its `~/.config` (the session lives there).
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            dir: tempfile::Builder::new()
                .prefix("peerstore-machine-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn config(&self) -> &Path {
        self.dir.path()
    }

    /// `peerstore ARGS --peer PEER` on this machine, acting as whoever is
    /// logged in here (no identity file given; `whoami` and `logout` take
    /// no peer).
    async fn run(&self, peer: &str, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        if !matches!(args[0], "whoami" | "logout") {
            all.extend(["--peer", peer]);
        }
        let ticket = common::test_ticket(peer);
        let cfg = self.config().to_str().unwrap().to_string();
        common::cli_with(
            &all,
            &[
                ("PEERSTORE_TICKET", &ticket),
                ("XDG_CONFIG_HOME", &cfg),
                // Removed: act as the session's account.
                ("PEERSTORE_IDENTITY", ""),
            ],
        )
        .await
    }

    /// Like [`Machine::run`], for a command that must succeed; its stdout.
    async fn ok(&self, peer: &str, args: &[&str]) -> String {
        let o = self.run(peer, args).await;
        assert!(o.status.success(), "peerstore {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The logged-in session's signing key, as the owner of records.
    fn owner(&self) -> [u8; 32] {
        let s = session::load(&self.config().join("peerstore/session"))
            .expect("session file")
            .expect("logged in");
        s.identity().owner()
    }

    fn session(&self) -> session::Session {
        session::load(&self.config().join("peerstore/session"))
            .expect("session file")
            .expect("logged in")
    }
}

/// One machine per name, each logged in as a new account of that name
/// (created through `peer`).
async fn users<const N: usize>(peer: &str, names: [&str; N]) -> [Machine; N] {
    let mut out = Vec::with_capacity(N);
    for name in names {
        let m = Machine::new();
        let p = secret_file(
            m.config(),
            "password",
            format!("{name}'s password").as_bytes(),
        );
        m.ok(peer, &["user", "create", name, "--password-file", s(&p)])
            .await;
        out.push(m);
    }
    out.try_into().unwrap_or_else(|_| unreachable!())
}

/// A file holding `text`, in `dir`.
fn secret_file(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one error line a command printed.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {e}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_across_machines() {
    common::with_timeout(Duration::from_secs(240), async {
        let mut nodes = common::start_ring(
            BLOCK_MACHINES,
            4,
            NodeOpts::new(&addr(BLOCK_MACHINES, 1), None),
        )
        .await;
        let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
        let pw = tempfile::tempdir().unwrap();
        let alice_pw = secret_file(pw.path(), "alice", b"alice's long passphrase\n");
        let alice_new = secret_file(pw.path(), "alice-new", b"a new passphrase for alice");
        let bob_pw = secret_file(pw.path(), "bob", b"bob's passphrase");
        let (laptop, desktop, bobs, spare) = (
            Machine::new(),
            Machine::new(),
            Machine::new(),
            Machine::new(),
        );

        // Alice creates her account on her laptop and stores a file.
        let out = laptop
            .ok(
                &a,
                &["user", "create", "alice", "--password-file", s(&alice_pw)],
            )
            .await;
        assert!(out.contains("logged in as alice"), "{out}");
        assert!(
            laptop
                .ok(&a, &["whoami"])
                .await
                .starts_with("account alice")
        );
        let work = tempfile::tempdir().unwrap();
        let notes = secret_file(work.path(), "notes", b"alice's notes\n");
        laptop.ok(&a, &["put", s(&notes), "/notes.txt"]).await;

        // Bob's tree is his own: the same path is another file.
        bobs.ok(
            &b,
            &["user", "create", "bob", "--password-file", s(&bob_pw)],
        )
        .await;
        let bobs_file = secret_file(work.path(), "bobs", b"bob's notes\n");
        bobs.ok(&b, &["put", s(&bobs_file), "/notes.txt"]).await;
        assert_ne!(laptop.owner(), bobs.owner());

        // A wrong password and an unknown name: the same single line.
        let t = Instant::now();
        let wrong = desktop
            .run(&b, &["login", "alice", "--password-file", s(&bob_pw)])
            .await;
        let t_wrong = t.elapsed();
        let t = Instant::now();
        let unknown = desktop
            .run(&b, &["login", "alicia", "--password-file", s(&alice_pw)])
            .await;
        let t_unknown = t.elapsed();
        assert_eq!(error_line(&wrong), error_line(&unknown));
        assert_eq!(
            error_line(&wrong),
            "error: login failed: wrong name or password"
        );
        eprintln!("login failure took {t_wrong:?} (wrong password), {t_unknown:?} (unknown name)");
        assert!(
            desktop
                .run(&b, &["whoami"])
                .await
                .stdout
                .starts_with(b"not logged in")
        );

        // Alice logs in on her desktop; its node mounts her tree.
        desktop
            .ok(&b, &["login", "alice", "--password-file", s(&alice_pw)])
            .await;
        assert_eq!(desktop.owner(), laptop.owner());
        nodes.push(
            NodeGuard::start(NodeOpts::mounted_as(
                &addr(BLOCK_MACHINES, 5),
                Some(&a),
                desktop.config(),
            ))
            .await,
        );
        let mnt = nodes[4].mount_dir().to_path_buf();
        let (got, _) = common::wait_until("alice's notes in the mount", CALL, || {
            let p = mnt.join("notes.txt");
            async move { std::fs::read(&p).map_err(|e| e.to_string()) }
        })
        .await;
        assert_eq!(got, b"alice's notes\n");
        std::fs::write(mnt.join("from-desktop.txt"), b"written on the desktop").unwrap();
        let (got, _) = common::wait_until("the desktop's file on the laptop", CALL, || {
            let out = work.path().join("back");
            let laptop = &laptop;
            let a = a.clone();
            async move {
                let o = laptop.run(&a, &["get", "/from-desktop.txt", s(&out)]).await;
                if o.status.success() {
                    // The name may reach the ring just before the bytes
                    // (write-back sends the create, then the save).
                    match std::fs::read(&out).map_err(|e| e.to_string())? {
                        b if b == b"written on the desktop" => Ok(b),
                        b => Err(format!("{} bytes so far", b.len())),
                    }
                } else {
                    Err(stderr(&o))
                }
            }
        })
        .await;
        assert_eq!(got, b"written on the desktop");
        let bob_ls = bobs.ok(&b, &["ls", "/"]).await;
        assert!(
            !bob_ls.contains("from-desktop"),
            "bob sees alice's file: {bob_ls}"
        );

        // A password change: the old one stops working, the tree stays.
        laptop
            .ok(
                &a,
                &[
                    "passwd",
                    "--password-file",
                    s(&alice_pw),
                    "--new-password-file",
                    s(&alice_new),
                ],
            )
            .await;
        let old = spare
            .run(&a, &["login", "alice", "--password-file", s(&alice_pw)])
            .await;
        assert_eq!(
            error_line(&old),
            "error: login failed: wrong name or password"
        );
        spare
            .ok(&a, &["login", "alice", "--password-file", s(&alice_new)])
            .await;
        let ls = spare.ok(&a, &["ls", "/"]).await;
        assert!(
            ls.contains("notes.txt") && ls.contains("from-desktop.txt"),
            "{ls}"
        );
        assert_eq!(spare.owner(), laptop.owner());
        // The logged-out machine acts as its own identity again.
        assert!(
            spare
                .ok(&a, &["logout"])
                .await
                .contains("logged out of alice")
        );
        let ls = spare.ok(&a, &["ls", "/"]).await;
        assert!(!ls.contains("notes.txt"), "{ls}");

        // An identity file's tree moves into an account.
        let id_file = work.path().join("old-identity");
        common::ensure_identity(&id_file);
        spare
            .ok(
                &a,
                &["put", "--identity", s(&id_file), s(&notes), "/kept.txt"],
            )
            .await;
        spare
            .ok(
                &a,
                &[
                    "user",
                    "create",
                    "dave",
                    "--identity",
                    s(&id_file),
                    "--password-file",
                    s(&bob_pw),
                ],
            )
            .await;
        assert!(spare.ok(&a, &["ls", "/"]).await.contains("kept.txt"));

        // Bad input: one clear line each, nothing changed.
        let missing = work.path().join("no-such-identity");
        for (args, want) in [
            (
                vec!["user", "create", "alice", "--password-file", s(&bob_pw)],
                "the account name alice is taken",
            ),
            (
                vec!["user", "create", "Eve!", "--password-file", s(&bob_pw)],
                "account name \"Eve!\"",
            ),
            (
                vec!["ls", "/", "--identity", s(&missing)],
                "no identity file there",
            ),
            (
                vec![
                    "user",
                    "create",
                    "erin",
                    "--identity",
                    s(&missing),
                    "--password-file",
                    s(&bob_pw),
                ],
                "no identity file there",
            ),
        ] {
            let line = error_line(&spare.run(&a, &args).await);
            assert!(line.contains(want), "{args:?}: {line}");
        }
        let empty = secret_file(pw.path(), "empty", b"\n");
        let long = secret_file(pw.path(), "long", &[b'x'; 1025]);
        for (f, want) in [
            (&empty, "the password is empty"),
            (&long, "longer than 1024"),
        ] {
            let line = error_line(
                &spare
                    .run(&a, &["user", "create", "frank", "--password-file", s(f)])
                    .await,
            );
            assert!(line.contains(want), "{line}");
        }
        // Neither erin nor frank exists.
        for name in ["erin", "frank"] {
            let o = spare
                .run(&a, &["login", name, "--password-file", s(&bob_pw)])
                .await;
            assert_eq!(
                error_line(&o),
                "error: login failed: wrong name or password"
            );
        }
        // The mounting node never saw a password: it acted on the session.
        assert!(
            nodes[4]
                .log()
                .contains("mounting the tree of account alice")
        );
    })
    .await;
}

/// A pool that speaks as ring member `node` (its own key), to send
/// replica requests as a buggy or hostile member would.
fn member_pool(node: &NodeGuard) -> Pool {
    Pool::new(
        NetConfig {
            rpc_timeout: CALL,
            connect_timeout: CALL,
            local_ip: None,
        },
        peerstore::net::LinkKeys {
            key: peerstore::node::identity::load_or_create(node.data_dir()).expect("node key"),
            secret: common::test_secret(),
        },
    )
}

/// The nodes holding record `key`, with their versions.
async fn holders(pool: &Pool, nodes: &[NodeGuard], key: Id) -> Vec<(String, Vec<Record>)> {
    let mut out = Vec::new();
    for n in nodes {
        let r = pool
            .call(
                &n.addr,
                Request::Replica(ReplicaRequest::FetchRecord { key }),
            )
            .await
            .unwrap_or_else(|e| panic!("fetch from {}: {e}", n.addr));
        if let Response::Replica(ReplicaResponse::Versions(v)) = r {
            out.push((n.addr.clone(), v));
        }
    }
    out
}

/// Sends `record` straight to every holder; how many refused it, and the
/// first refusal.
async fn send_to(pool: &Pool, to: &[(String, Vec<Record>)], record: &Record) -> (usize, String) {
    let mut refused = 0;
    let mut why = String::new();
    for (addr, _) in to {
        let r = pool
            .call(
                addr,
                Request::Replica(ReplicaRequest::StoreRecord {
                    record: record.clone(),
                    expected_seq: None,
                    durable: true,
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("store to {addr}: {e}"));
        match r {
            Response::Error(e) => {
                refused += 1;
                if why.is_empty() {
                    why = e.to_string();
                }
                assert!(
                    matches!(
                        e,
                        RemoteError::Invalid(_)
                            | RemoteError::Stale { .. }
                            | RemoteError::BadSignature
                    ),
                    "{addr}: {e}"
                );
            }
            other => panic!("{addr} accepted {record:?}: {other:?}"),
        }
    }
    (refused, why)
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_refuse_forged_replayed_and_stale_writes() {
    common::with_timeout(Duration::from_secs(240), async {
        let nodes = common::start_ring(
            BLOCK_REFUSALS,
            5,
            NodeOpts::new(&addr(BLOCK_REFUSALS, 1), None),
        )
        .await;
        let a = nodes[0].addr.clone();
        let pw = tempfile::tempdir().unwrap();
        let pw1 = secret_file(pw.path(), "1", b"first machine's password");
        let pw2 = secret_file(pw.path(), "2", b"second machine's password");

        // Two machines create one name at once: exactly one account.
        let (m1, m2) = (Machine::new(), Machine::new());
        let args1 = ["user", "create", "carol", "--password-file", s(&pw1)];
        let args2 = ["user", "create", "carol", "--password-file", s(&pw2)];
        let (o1, o2) = tokio::join!(
            m1.run(&nodes[1].addr, &args1),
            m2.run(&nodes[3].addr, &args2),
        );
        let won = [o1.status.success(), o2.status.success()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "exactly one create wins: {} / {}",
            stderr(&o1),
            stderr(&o2)
        );
        let loser = if won[0] { &o2 } else { &o1 };
        assert!(error_line(loser).contains("is taken"));
        let winner = if won[0] { &m1 } else { &m2 };
        let pool = member_pool(&nodes[2]);
        let key = account_key(b"carol");
        let held = holders(&pool, &nodes, key).await;
        assert!(held.len() >= 3, "carol's account on {} nodes", held.len());
        for (addr, v) in &held {
            assert_eq!(v.len(), 1, "{addr} holds {} versions", v.len());
            assert_eq!(
                v[0].owner,
                winner.owner(),
                "{addr} holds another owner's carol"
            );
        }
        let v1 = held[0].1[0].clone();

        // Carol stores a file, then changes her password (account v2).
        let work = tempfile::tempdir().unwrap();
        let f = secret_file(work.path(), "f", b"carol's file");
        winner.ok(&a, &["put", s(&f), "/f.txt"]).await;
        let winner_pw = if won[0] { &pw1 } else { &pw2 };
        let new_pw = secret_file(pw.path(), "new", b"carol's new password");
        winner
            .ok(
                &a,
                &[
                    "passwd",
                    "--password-file",
                    s(winner_pw),
                    "--new-password-file",
                    s(&new_pw),
                ],
            )
            .await;
        let held = holders(&pool, &nodes, key).await;
        assert!(held.iter().all(|(_, v)| v.len() == 1 && v[0].seq == 2));

        let mut refusals = 0;
        let mut expect = 0;
        // 1. A forged account: another key takes the name, at a higher
        //    sequence number and with valid-looking contents.
        let mallory = SigningKey::from_bytes(&rand::random());
        let body = AccountBody {
            name: "carol".into(),
            box_key: [1; 32],
            keyring: SealedKeyring {
                salt: [0; 16],
                params: KdfParams::DEFAULT,
                sealed: vec![0; 64],
            },
            created_ms: 0,
        };
        let forged = Record::sign(
            &mallory,
            &account_record::record_name("carol"),
            9,
            Some(body.encode()),
        );
        let (n, why) = send_to(&pool, &held, &forged).await;
        assert!(why.contains("belongs to another key"), "{why}");
        refusals += n;
        expect += held.len();
        // 2. Carol's own first version replayed after the change.
        let (n, why) = send_to(&pool, &held, &v1).await;
        assert!(why.contains("not newer"), "{why}");
        refusals += n;
        expect += held.len();
        // 3. Carol's key, weakened parameters (a record anyone could brute
        //    force): refused below the floor even from the owner.
        let identity = winner.session().identity();
        let mut weak = body.clone();
        weak.keyring.params = KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        };
        let weakened = identity.sign(
            &account_record::record_name("carol"),
            3,
            Some(weak.encode()),
        );
        let (n, why) = send_to(&pool, &held, &weakened).await;
        assert!(why.contains("below the floor"), "{why}");
        refusals += n;
        expect += held.len();

        // 4. Her tree's root: a version signed by another key under her
        //    name (forged), and her own older version (stale).
        let root_key = identity.record_key(&identity.root_name());
        let before = holders(&pool, &nodes, root_key).await;
        assert!(before.len() >= 3);
        let old_root = before[0].1[0].clone();
        let g = secret_file(work.path(), "g", b"another file");
        winner.ok(&a, &["put", s(&g), "/g.txt"]).await;
        let after = holders(&pool, &nodes, root_key).await;
        assert!(
            after.iter().all(|(_, v)| v[0] != old_root),
            "the root changed"
        );
        let mut fake = Record::sign(&mallory, &identity.root_name(), old_root.seq + 10, None);
        fake.owner = identity.owner();
        let (n, why) = send_to(&pool, &after, &fake).await;
        assert!(why.contains("signature"), "{why}");
        refusals += n;
        expect += after.len();
        let (n, why) = send_to(&pool, &after, &old_root).await;
        assert!(why.contains("not newer"), "{why}");
        refusals += n;
        expect += after.len();

        assert_eq!(refusals, expect);
        eprintln!("{refusals} forged, replayed and stale writes refused by every replica");
        // Nothing changed: the account and the tree are as they were.
        let held2 = holders(&pool, &nodes, key).await;
        assert!(held2.iter().all(|(_, v)| v.len() == 1 && v[0].seq == 2));
        let out = work.path().join("out");
        winner.ok(&a, &["get", "/f.txt", s(&out)]).await;
        assert_eq!(std::fs::read(&out).unwrap(), b"carol's file");
        assert!(
            winner
                .ok(&a, &["login", "carol", "--password-file", s(&new_pw)])
                .await
                .contains("logged in as carol")
        );
    })
    .await;
}

const BLOCK_SHARES: u8 = 135;

#[tokio::test(flavor = "multi_thread")]
async fn read_shares_between_accounts() {
    common::with_timeout(Duration::from_secs(240), async {
        // Four nodes, and bob's mounting node makes five.
        let nodes =
            common::start_ring(BLOCK_SHARES, 4, NodeOpts::new(&addr(BLOCK_SHARES, 1), None)).await;
        let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
        let [alice, bob, carol, dave] = users(&a, ["alice", "bob", "carol", "dave"]).await;
        // Alice's photos, shared with bob and carol.
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("photos/2026")).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.path().join("photos/2026/big.raw"), &big).unwrap();
        std::fs::write(src.path().join("photos/a.jpg"), b"jpeg bytes").unwrap();
        std::fs::write(src.path().join("private.txt"), b"not shared").unwrap();
        alice
            .ok(&a, &["backup", s(&src.path().join("photos")), "/photos"])
            .await;
        alice
            .ok(
                &a,
                &["put", s(&src.path().join("private.txt")), "/private.txt"],
            )
            .await;
        for who in ["bob", "carol"] {
            let out = alice.ok(&a, &["share", "/photos", "--with", who]).await;
            assert!(out.contains("/shared/alice/photos"), "{out}");
        }
        let listed = alice.ok(&a, &["shares"]).await;
        assert!(
            listed.contains("/photos  with bob") && listed.contains("/photos  with carol"),
            "{listed}"
        );

        // Bob and carol read it, through any node.
        let work = tempfile::tempdir().unwrap();
        for (m, peer) in [(&bob, &b), (&carol, &a)] {
            let shares = m.ok(peer, &["shares", "--json"]).await;
            let v: serde_json::Value = serde_json::from_str(&shares).unwrap();
            assert_eq!(v["received"][0]["path"], "/shared/alice/photos", "{shares}");
            assert!(m.ok(peer, &["ls", "/shared"]).await.contains("alice"));
            assert!(
                m.ok(peer, &["ls", "/shared/alice"])
                    .await
                    .contains("photos")
            );
            let ls = m.ok(peer, &["ls", "/shared/alice/photos"]).await;
            assert!(ls.contains("a.jpg") && ls.contains("2026"), "{ls}");
            let out = work.path().join("big");
            m.ok(peer, &["get", "/shared/alice/photos/2026/big.raw", s(&out)])
                .await;
            assert!(
                std::fs::read(&out).unwrap() == big,
                "the shared file reads back whole"
            );
            // Read-only, and nothing outside the folder.
            let line = error_line(
                &m.run(peer, &["put", s(&out), "/shared/alice/photos/new.raw"])
                    .await,
            );
            assert!(line.contains("read-only"), "{line}");
            let line = error_line(&m.run(peer, &["ls", "/shared/alice/private.txt"]).await);
            assert!(line.contains("no such file"), "{line}");
        }
        // Bob's machine mounts his tree: alice's folder is under /shared,
        // readable, and every write there fails with EACCES.
        let http = format!("127.0.{BLOCK_SHARES}.5:{}", common::port() + 80);
        let mut opts = NodeOpts::mounted_as(&addr(BLOCK_SHARES, 5), Some(&a), bob.config());
        opts.extra.extend(["--http".to_string(), http.clone()]);
        let bob_node = NodeGuard::start(opts).await;
        let mnt = bob_node.mount_dir().to_path_buf();
        let shared = mnt.join("shared/alice/photos");
        let (got, took) = common::wait_until("alice's folder in bob's mount", CALL, || {
            let p = shared.join("2026/big.raw");
            async move {
                tokio::task::spawn_blocking(move || std::fs::read(&p).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())?
            }
        })
        .await;
        assert!(got == big, "the shared file reads back whole in the mount");
        eprintln!("alice's folder readable in bob's mount after {took:?}");
        // The dashboard of bob's node lists what is shared with him.
        let status = common::http_get(&format!("http://{http}/api/status"))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(
            v["shares"]["received"],
            serde_json::json!([["/shared/alice/photos", "alice", false]]),
            "{status}"
        );
        let (mnt2, shared2) = (mnt.clone(), shared.clone());
        tokio::task::spawn_blocking(move || {
            let names = |p: &Path| -> Vec<String> {
                let mut v: Vec<String> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            };
            assert!(names(&mnt2).contains(&"shared".to_string()));
            assert_eq!(names(&mnt2.join("shared")), vec!["alice"]);
            assert_eq!(names(&mnt2.join("shared/alice")), vec!["photos"]);
            assert_eq!(names(&shared2), vec!["2026", "a.jpg"]);
            assert_eq!(std::fs::read(shared2.join("a.jpg")).unwrap(), b"jpeg bytes");
            let denied = |r: std::io::Result<()>, what: &str| match r {
                Err(e) => assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied,
                    "{what}: {e}"
                ),
                Ok(()) => panic!("{what} succeeded in a read-only share"),
            };
            denied(std::fs::write(shared2.join("new.txt"), b"x"), "create");
            denied(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(shared2.join("a.jpg"))
                    .map(|_| ()),
                "open for writing",
            );
            denied(std::fs::remove_file(shared2.join("a.jpg")), "unlink");
            denied(std::fs::create_dir(shared2.join("d")), "mkdir");
            denied(
                std::fs::rename(shared2.join("a.jpg"), mnt2.join("stolen.jpg")),
                "rename out",
            );
            denied(std::fs::remove_dir(mnt2.join("shared")), "rmdir /shared");
            // Bob's own tree works as ever beside it.
            std::fs::write(mnt2.join("mine.txt"), b"bob's").unwrap();
            assert_eq!(std::fs::read(shared2.join("a.jpg")).unwrap(), b"jpeg bytes");
        })
        .await
        .unwrap();
        drop(bob_node);

        // Dave was given nothing and sees nothing.
        assert_eq!(dave.ok(&a, &["ls", "/shared"]).await.trim(), "");
        let line = error_line(&dave.run(&a, &["ls", "/shared/alice/photos"]).await);
        assert!(line.contains("no such file"), "{line}");

        // Bad input: one line each, nothing shared.
        for (args, want) in [
            (
                vec!["share", "/photos", "--with", "nobody"],
                "no account named nobody",
            ),
            (
                vec!["share", "/photos", "--with", "alice"],
                "cannot share with yourself",
            ),
            (vec!["share", "/nothere", "--with", "bob"], "no such file"),
            (
                vec!["share", "/private.txt", "--with", "bob"],
                "not a folder",
            ),
            (vec!["share", "/", "--with", "bob"], "not the whole tree"),
        ] {
            let line = error_line(&alice.run(&a, &args).await);
            assert!(line.contains(want), "{args:?}: {line}");
        }
        // An inbox flooded past its bound: the next share is refused with
        // a clear line, and the inbox holds no more than the bound.
        let store = peerstore::cli::RemoteStore::new(&a, common::test_keys());
        let dave_owner = dave.owner();
        let mut flooded = 0;
        loop {
            let r = peerstore::account::shares::append(
                &store,
                "dave",
                &dave_owner,
                peerstore::inbox_record::Entry(vec![7; 100]),
            )
            .await;
            match r {
                Ok(()) => flooded += 1,
                Err(e) => {
                    assert!(e.to_string().contains("inbox of dave is full"), "{e}");
                    break;
                }
            }
            assert!(
                flooded <= peerstore::inbox_record::MAX_INBOX_ENTRIES,
                "no bound"
            );
        }
        assert_eq!(flooded, peerstore::inbox_record::MAX_INBOX_ENTRIES);
        let line = error_line(&alice.run(&a, &["share", "/photos", "--with", "dave"]).await);
        assert!(line.contains("inbox of dave is full"), "{line}");
        // A node refuses the 65th entry whoever sends it.
        let pool = member_pool(&nodes[2]);
        let key = peerstore::record::inbox_key(&dave_owner);
        let held = holders(&pool, &nodes, key).await;
        let head = held[0].1[0].clone();
        let mut body =
            peerstore::inbox_record::InboxBody::decode(head.value.as_deref().unwrap()).unwrap();
        body.entries
            .push(peerstore::inbox_record::Entry(vec![1; 10]));
        let extra = Record::sign(
            &SigningKey::from_bytes(&rand::random()),
            &peerstore::inbox_record::record_name(&dave_owner),
            head.seq + 1,
            Some(body.encode()),
        );
        let (n, why) = send_to(&pool, &held, &extra).await;
        assert_eq!(n, held.len());
        assert!(why.contains("full"), "{why}");
    })
    .await;
}

const BLOCK_WRITE: u8 = 136;

#[tokio::test(flavor = "multi_thread")]
async fn write_shares_between_accounts() {
    common::with_timeout(Duration::from_secs(240), async {
        // Four nodes, and bob's mounting node makes five.
        let nodes =
            common::start_ring(BLOCK_WRITE, 4, NodeOpts::new(&addr(BLOCK_WRITE, 1), None)).await;
        let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
        let [alice, bob, carol] = users(&a, ["alice", "bob", "carol"]).await;
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("team");
        std::fs::create_dir_all(src.join("notes")).unwrap();
        std::fs::write(src.join("doc.txt"), b"alice's draft").unwrap();
        std::fs::write(src.join("notes/n1.txt"), b"note one").unwrap();
        alice.ok(&a, &["backup", s(&src), "/team"]).await;
        let private = secret_file(work.path(), "private", b"alice only");
        alice.ok(&a, &["put", s(&private), "/private.txt"]).await;
        let out = alice
            .ok(&a, &["share", "/team", "--with", "bob", "--write"])
            .await;
        assert!(out.contains("read-write"), "{out}");
        alice.ok(&a, &["share", "/team", "--with", "carol"]).await;
        let listed = alice.ok(&a, &["shares"]).await;
        assert!(listed.contains("with bob  (read-write)"), "{listed}");
        assert!(listed.contains("with carol  (read-only)"), "{listed}");

        // Bob writes through the command line: a new file and an
        // overwrite. Alice and carol read them.
        let from_bob = secret_file(work.path(), "from-bob", b"bob was here");
        bob.ok(
            &b,
            &["put", s(&from_bob), "/shared/alice/team/from-bob.txt"],
        )
        .await;
        let edit = secret_file(work.path(), "edit", b"bob's edit of the draft");
        bob.ok(&b, &["put", s(&edit), "/shared/alice/team/doc.txt"])
            .await;
        let back = work.path().join("back");
        for (m, path) in [
            (&alice, "/team/from-bob.txt"),
            (&carol, "/shared/alice/team/from-bob.txt"),
        ] {
            m.ok(&a, &["get", path, s(&back)]).await;
            assert_eq!(std::fs::read(&back).unwrap(), b"bob was here", "{path}");
        }
        alice.ok(&a, &["get", "/team/doc.txt", s(&back)]).await;
        assert_eq!(std::fs::read(&back).unwrap(), b"bob's edit of the draft");
        // Alice's own draft is a kept version of it.
        let versions = alice.ok(&a, &["versions", "/team/doc.txt"]).await;
        assert!(versions.lines().count() >= 2, "{versions}");
        // Carol may not write; bob may not write outside the folder.
        let line = error_line(
            &carol
                .run(&a, &["put", s(&edit), "/shared/alice/team/doc.txt"])
                .await,
        );
        assert!(line.contains("read-only"), "{line}");
        // A file alice makes in the folder later is bob's to change too.
        let later = secret_file(work.path(), "later", b"alice, later");
        alice
            .ok(&a, &["put", s(&later), "/team/notes/later.txt"])
            .await;
        bob.ok(&b, &["put", s(&edit), "/shared/alice/team/notes/later.txt"])
            .await;
        alice
            .ok(&a, &["get", "/team/notes/later.txt", s(&back)])
            .await;
        assert_eq!(std::fs::read(&back).unwrap(), b"bob's edit of the draft");
        // Bob removes a file alice wrote.
        bob.ok(&b, &["rm", "/shared/alice/team/notes/n1.txt"]).await;
        let ls = alice.ok(&a, &["ls", "/team/notes"]).await;
        assert!(!ls.contains("n1.txt") && ls.contains("later.txt"), "{ls}");

        // Bob's mount: writes in the shared folder land in alice's tree.
        let mut bob_node = NodeGuard::start(NodeOpts::mounted_as(
            &addr(BLOCK_WRITE, 5),
            Some(&a),
            bob.config(),
        ))
        .await;
        let team = bob_node.mount_dir().join("shared/alice/team");
        common::wait_until("alice's team folder in bob's mount", CALL, || {
            let p = team.join("doc.txt");
            async move {
                tokio::task::spawn_blocking(move || std::fs::read(&p).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())?
            }
        })
        .await;
        let t2 = team.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::write(t2.join("mounted.txt"), b"written in bob's mount").unwrap();
            std::fs::create_dir(t2.join("made-by-bob")).unwrap();
            std::fs::write(t2.join("made-by-bob/deep.txt"), b"deep").unwrap();
            // A rename between bob's tree and the shared folder is a copy.
            let e = std::fs::rename(t2.join("mounted.txt"), t2.join("../../../x.txt")).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
        })
        .await
        .unwrap();
        bob_node.settle().await;
        // Unmounted as a user would: what bob wrote is stored (a close
        // does not wait for a new file's entry; unmount does).
        assert!(bob_node.terminate().await.success());
        for (path, want) in [
            ("/team/mounted.txt", &b"written in bob's mount"[..]),
            ("/team/made-by-bob/deep.txt", b"deep"),
        ] {
            alice.ok(&a, &["get", path, s(&back)]).await;
            assert_eq!(std::fs::read(&back).unwrap(), want, "{path}");
        }

        // Straight to the replicas: bob's grant used on alice's record
        // outside the folder (her root), and a grant bob made himself.
        let pool = member_pool(&nodes[2]);
        let store = peerstore::cli::RemoteStore::new(&a, common::test_keys());
        let offers = peerstore::account::shares::received(&store, &bob.session())
            .await
            .unwrap();
        let grant = offers[0].grant.clone().expect("a write grant");
        let alice_id = alice.session().identity();
        let root = alice_id.root_name();
        let held = holders(&pool, &nodes, alice_id.record_key(&root)).await;
        let head = &held[0].1[0];
        let bob_key = SigningKey::from_bytes(&bob.session().keyring.identity);
        let outside = Record::sign_granted(
            &bob_key,
            alice_id.owner(),
            &grant,
            &root,
            head.seq + 1,
            head.clock.next(77),
            None,
        );
        let (n1, why) = send_to(&pool, &held, &outside).await;
        assert!(why.contains("not for this record's folder"), "{why}");
        let self_made = peerstore::grant::Grant::sign(&bob_key, grant.writer, grant.scope);
        let forged = Record::sign_granted(
            &bob_key,
            alice_id.owner(),
            &self_made,
            &root,
            head.seq + 1,
            head.clock.next(77),
            None,
        );
        let (n2, why) = send_to(&pool, &held, &forged).await;
        assert!(why.contains("grant"), "{why}");
        assert_eq!(n1 + n2, 2 * held.len());
        eprintln!(
            "{} writes outside the grant refused by every replica",
            n1 + n2
        );
        alice.ok(&a, &["get", "/private.txt", s(&back)]).await;
        assert_eq!(std::fs::read(&back).unwrap(), b"alice only");
    })
    .await;
}

const BLOCK_REVOKE: u8 = 137;

/// Every object (link) under directory `top` of `vault`'s tree.
async fn all_links<S: peerstore::fs::BlockStore>(
    vault: &peerstore::fs::Vault<S>,
    top: peerstore::fs::Link,
) -> Vec<peerstore::fs::Link> {
    let mut out = vec![top.clone()];
    let mut stack = vec![top];
    while let Some(d) = stack.pop() {
        let v = vault.load(&d).await.expect("load a directory");
        for e in v.obj.entries().expect("a directory").values() {
            out.push(e.link.clone());
            if e.link.kind == peerstore::fs::Kind::Dir {
                stack.push(e.link.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_share() {
    common::with_timeout(Duration::from_secs(240), async {
        let nodes =
            common::start_ring(BLOCK_REVOKE, 5, NodeOpts::new(&addr(BLOCK_REVOKE, 1), None)).await;
        let a = nodes[0].addr.clone();
        let [alice, bob, carol] = users(&a, ["alice", "bob", "carol"]).await;
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("team");
        for d in 0..10 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..10 {
                std::fs::write(src.join(format!("d{d}/f{f}.txt")), format!("file {d}/{f}"))
                    .unwrap();
            }
        }
        // Two files whose content is in blocks (the rest is inline).
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.join("big1.bin"), &big).unwrap();
        std::fs::write(src.join("big2.bin"), &big).unwrap();
        alice.ok(&a, &["backup", s(&src), "/team"]).await;
        alice
            .ok(&a, &["share", "/team", "--with", "bob", "--write"])
            .await;
        alice.ok(&a, &["share", "/team", "--with", "carol"]).await;

        // Every name and key carol could ever learn: the whole folder as
        // her share showed it.
        let store = Arc::new(peerstore::cli::RemoteStore::new(&a, common::test_keys()));
        let carol_s = carol.session();
        let offers = peerstore::account::shares::received(store.as_ref(), &carol_s)
            .await
            .unwrap();
        let carol_view =
            peerstore::fs::Vault::new(Arc::clone(&store), offers[0].identity(&carol_s.keyring));
        let held = all_links(&carol_view, carol_view.root()).await;
        assert_eq!(held.len(), 1 + 10 + 100 + 2);
        let root = carol_view.load(&carol_view.root()).await.unwrap().obj;
        let old_big1 = root.entry(b"big1.bin").unwrap();
        let old_big2 = root.entry(b"big2.bin").unwrap();
        let old_blocks = carol_view.load(&old_big1).await.unwrap().obj.blocks();
        let old_blocks2 = carol_view.load(&old_big2).await.unwrap().obj.blocks();
        assert!(!old_blocks.is_empty() && !old_blocks2.is_empty());
        let out = work.path().join("out");
        carol
            .ok(&a, &["get", "/shared/alice/team/d3/f4.txt", s(&out)])
            .await;

        // Revoke carol.
        let t = Instant::now();
        let said = alice.ok(&a, &["unshare", "/team", "--from", "carol"]).await;
        let took = t.elapsed();
        eprintln!("unshare of 100 files in 10 folders: {took:?}: {said}");
        assert!(said.contains("carol's access revoked"), "{said}");
        // By default file content gets its new key at its next write.
        assert!(
            said.contains("0 bytes re-encrypted, 2 files' content at their next write"),
            "{said}"
        );
        let listed = alice.ok(&a, &["shares"]).await;
        assert!(
            listed.contains("with bob") && !listed.contains("with carol"),
            "{listed}"
        );

        // Written after: by alice, and by bob (who keeps write access with
        // no action on his side).
        let after = secret_file(work.path(), "after", b"written after the revocation");
        alice.ok(&a, &["put", s(&after), "/team/d3/f4.txt"]).await;
        alice.ok(&a, &["put", s(&after), "/team/new.txt"]).await;
        bob.ok(&a, &["put", s(&after), "/shared/alice/team/d5/by-bob.txt"])
            .await;
        alice.ok(&a, &["get", "/team/d5/by-bob.txt", s(&out)]).await;
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"written after the revocation"
        );
        alice.ok(&a, &["get", "/team/d1/f1.txt", s(&out)]).await;
        assert_eq!(std::fs::read(&out).unwrap(), b"file 1/1");

        // Carol's old names lead to nothing readable, and none of her old
        // keys opens any record of the folder as it is now.
        let alice_s = alice.session();
        let alice_view = peerstore::fs::Vault::new(Arc::clone(&store), alice_s.identity());
        let (team, _) = alice_view.resolve("/team").await.unwrap();
        let now = all_links(&alice_view, team.clone()).await;
        assert_eq!(now.len(), 1 + 10 + 100 + 2 + 2);
        let old_names: std::collections::HashSet<_> = held.iter().map(|l| l.name.clone()).collect();
        assert!(
            now.iter().all(|l| !old_names.contains(&l.name)),
            "a record kept its name"
        );
        let mut tried = 0;
        for new in &now {
            for old in &held {
                if old.kind != new.kind {
                    continue;
                }
                let probe = peerstore::fs::Link {
                    kind: new.kind,
                    name: new.name.clone(),
                    key: old.key.clone(),
                };
                assert!(
                    alice_view.load(&probe).await.is_err(),
                    "an old key opens a record written after the revocation"
                );
                tried += 1;
            }
        }
        // Read again with a fresh view (no cached copies): every old
        // record is deleted.
        let carol_after =
            peerstore::fs::Vault::new(Arc::clone(&store), offers[0].identity(&carol_s.keyring));
        for old in &held {
            match carol_after.load(old).await {
                Err(_) => {}
                Ok(_) => panic!("an old record still reads: {:?}", old.kind),
            }
        }
        eprintln!("{tried} (new record, old key) pairs tried: none opens");

        // big1's content is where it was (the bytes carol could read)
        // until its next write, which seals all of it under a new key.
        let dir = alice_view.load(&team).await.unwrap().obj;
        let big1 = dir.entry(b"big1.bin").unwrap();
        assert_eq!(
            alice_view.load(&big1).await.unwrap().obj.blocks(),
            old_blocks
        );
        let mut f = peerstore::fs::OpenFile::open(&alice_view, big1.clone())
            .await
            .unwrap();
        f.write(&alice_view, 7, b"NEW").await.unwrap();
        f.flush(&alice_view, peerstore::fs::Durability::Now)
            .await
            .unwrap();
        let fresh = peerstore::fs::Vault::new(Arc::clone(&store), alice_s.identity());
        let written = fresh.load(&big1).await.unwrap().obj;
        let content = written.content().unwrap();
        assert!(content.priors.is_empty());
        assert!(written.blocks().is_disjoint(&old_blocks));
        for b in content.extents.blocks() {
            assert!(
                fresh.under_prior(&old_big1, &[], b).await.is_err(),
                "carol's old key opens a block written after the revocation"
            );
        }
        alice.ok(&a, &["get", "/team/big1.bin", s(&out)]).await;
        let mut want = big.clone();
        want[7..10].copy_from_slice(b"NEW");
        assert!(std::fs::read(&out).unwrap() == want, "big1 reads wrong");
        // big2, not written, still reads (through its earlier key).
        bob.ok(&a, &["get", "/shared/alice/team/big2.bin", s(&out)])
            .await;
        assert!(std::fs::read(&out).unwrap() == big, "big2 reads wrong");
        let line = error_line(
            &carol
                .run(&a, &["get", "/shared/alice/team/d3/f4.txt", s(&out)])
                .await,
        );
        assert!(line.contains("no such file"), "{line}");
        // Bad input: not shared with that account.
        let line = error_line(
            &alice
                .run(&a, &["unshare", "/team", "--from", "carol"])
                .await,
        );
        assert!(line.contains("not shared with carol"), "{line}");

        // Revoking the writer: its grant is refused by every replica of
        // the folder as it is now, and its path leads nowhere.
        let bob_s = bob.session();
        let bob_offers = peerstore::account::shares::received(store.as_ref(), &bob_s)
            .await
            .unwrap();
        let bob_grant = bob_offers[0].grant.clone().expect("bob's grant");
        let said = alice
            .ok(&a, &["unshare", "/team", "--from", "bob", "--eager"])
            .await;
        assert!(
            said.contains(" 0 files' content at their next write"),
            "{said}"
        );
        let fresh = peerstore::fs::Vault::new(Arc::clone(&store), alice_s.identity());
        let (team, _) = fresh.resolve("/team").await.unwrap();
        // --eager: big2's content is under its new key at once.
        let big2 = fresh
            .load(&team)
            .await
            .unwrap()
            .obj
            .entry(b"big2.bin")
            .unwrap();
        let now2 = fresh.load(&big2).await.unwrap().obj;
        assert!(now2.content().unwrap().priors.is_empty());
        assert!(now2.blocks().is_disjoint(&old_blocks2));
        for b in now2.content().unwrap().extents.blocks() {
            assert!(fresh.under_prior(&old_big2, &[], b).await.is_err());
        }
        alice.ok(&a, &["get", "/team/big2.bin", s(&out)]).await;
        assert!(std::fs::read(&out).unwrap() == big, "big2 reads wrong");
        let pool = member_pool(&nodes[2]);
        let key = alice_s.identity().record_key(&team.name);
        let held = holders(&pool, &nodes, key).await;
        let head = held[0].1[0].clone();
        let bob_key = SigningKey::from_bytes(&bob_s.keyring.identity);
        let late = Record::sign_granted(
            &bob_key,
            alice_s.identity().owner(),
            &bob_grant,
            &team.name,
            head.seq + 1,
            head.clock.next(99),
            None,
        );
        let (n, why) = send_to(&pool, &held, &late).await;
        assert_eq!(n, held.len());
        assert!(why.contains("not for this record's folder"), "{why}");
        let line = error_line(
            &bob.run(&a, &["put", s(&after), "/shared/alice/team/late.txt"])
                .await,
        );
        assert!(
            line.contains("no such file") || line.contains("not found"),
            "{line}"
        );
        eprintln!("the revoked writer's grant was refused by all {n} replicas");
    })
    .await;
}

const BLOCK_REVOKE_LARGE: u8 = 138;

/// The measure: revoking a folder of 1000 files in 100 folders
/// (and 32 MiB in 32 files of 1 MiB) on a 5-node loopback ring, lazily
/// and with `--eager`. Run by hand (`--ignored`); it prints the times.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn revoking_a_large_share() {
    common::with_timeout(Duration::from_secs(600), async {
        let nodes = common::start_ring(
            BLOCK_REVOKE_LARGE,
            5,
            NodeOpts::new(&addr(BLOCK_REVOKE_LARGE, 1), None),
        )
        .await;
        let a = nodes[0].addr.clone();
        let [alice, bob, _carol] = users(&a, ["alice", "bob", "carol"]).await;
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("big");
        for d in 0..100 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..10 {
                std::fs::write(src.join(format!("d{d}/f{f}.txt")), vec![b'x'; 4096]).unwrap();
            }
        }
        std::fs::create_dir_all(src.join("media")).unwrap();
        for f in 0..32u8 {
            std::fs::write(src.join(format!("media/m{f}.bin")), vec![f; 1 << 20]).unwrap();
        }
        alice.ok(&a, &["backup", s(&src), "/big"]).await;
        let t = Instant::now();
        alice
            .ok(&a, &["share", "/big", "--with", "bob", "--write"])
            .await;
        let share_took = t.elapsed();
        alice.ok(&a, &["share", "/big", "--with", "carol"]).await;
        let t = Instant::now();
        let said = alice.ok(&a, &["unshare", "/big", "--from", "carol"]).await;
        eprintln!(
            "share --write (tagging 1134 records): {share_took:?}; unshare: {:?}: {said}",
            t.elapsed()
        );
        let out = work.path().join("out");
        bob.ok(&a, &["get", "/shared/alice/big/d99/f9.txt", s(&out)])
            .await;
        assert_eq!(std::fs::read(&out).unwrap().len(), 4096);
        alice.ok(&a, &["share", "/big", "--with", "carol"]).await;
        let t = Instant::now();
        let said = alice
            .ok(&a, &["unshare", "/big", "--from", "carol", "--eager"])
            .await;
        eprintln!("unshare --eager: {:?}: {said}", t.elapsed());
        bob.ok(&a, &["get", "/shared/alice/big/media/m31.bin", s(&out)])
            .await;
        assert!(std::fs::read(&out).unwrap() == vec![31u8; 1 << 20]);
    })
    .await;
}
