//! Secure links and ring admission against real node processes: tickets
//! admit, strangers get nothing, nobody can speak for another node's ID,
//! a capture of the traffic shows no plaintext, and hostile connections do
//! not stop the ring from serving.

mod common;

use common::{NodeGuard, NodeOpts, addr, cli, cli_with, stderr, stdout};
use peerstore::id::Id;
use peerstore::net::{NetConfig, NetError, Pool, peer_id};
use peerstore::wire::{
    ChordRequest, ClientRequest, ClientResponse, Peer, RemoteError, Request, Response,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Loopback blocks of the tests in this file.
const BLOCK_TICKETS: u8 = 112;
const BLOCK_IMPERSONATE: u8 = 113;
const BLOCK_CAPTURE: u8 = 114;
const BLOCK_HOSTILE: u8 = 115;

const CALL: Duration = Duration::from_secs(10);

/// A process this test started; killed (by PID) and reaped on drop.
struct ProcGuard(Child);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A client pool in the test network.
fn member_pool() -> Pool {
    Pool::new(
        NetConfig {
            rpc_timeout: CALL,
            connect_timeout: CALL,
            local_ip: None,
        },
        common::test_keys(),
    )
}

/// Waits until `node`'s log has a line containing every one of `parts`.
async fn assert_logged(node: &NodeGuard, parts: &[&str]) {
    common::wait_until(
        &format!("a log line with {parts:?}"),
        Duration::from_secs(10),
        || async {
            let log = node.log();
            match log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                Some(_) => Ok(()),
                None => Err("no such line".to_string()),
            }
        },
    )
    .await;
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread")]
async fn tickets_admit_members_and_strangers_get_nothing() {
    common::with_timeout(Duration::from_secs(180), async {
        let files = tempfile::tempdir().unwrap();
        // The first node creates a network of its own.
        let first = NodeGuard::start(NodeOpts {
            own_network: true,
            ..NodeOpts::new(&addr(BLOCK_TICKETS, 1), None)
        })
        .await;
        let data1 = first.data_dir().to_str().unwrap().to_string();
        let secret = std::fs::read(first.data_dir().join("network.secret")).unwrap();
        assert_eq!(secret.len(), 32);

        // `invite` prints a ticket naming the first node.
        let o = cli(&["invite", "--data", &data1]).await;
        assert!(o.status.success(), "invite: {}", stderr(&o));
        let ticket = stdout(&o).trim().to_string();
        let parsed = peerstore::network::Ticket::parse(&ticket).unwrap();
        assert_eq!(parsed.addr, first.addr);
        assert_eq!(parsed.secret.as_bytes().as_slice(), secret.as_slice());

        // A second node joins with the ticket alone.
        let second = NodeGuard::start(NodeOpts {
            own_network: true,
            ..NodeOpts::new(&addr(BLOCK_TICKETS, 2), Some(&ticket))
        })
        .await;
        let kept = std::fs::read(second.data_dir().join("network.secret")).unwrap();
        assert_eq!(kept, secret, "the joined node keeps the network secret");
        common::wait_until("2-node ring", Duration::from_secs(30), || async {
            let o = cli_with(&["ring", "--json", "--ticket", &ticket], &[]).await;
            if !o.status.success() {
                return Err(stderr(&o));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() != 2 {
                return Err(format!("{} members", nodes.len()));
            }
            // Every member shows its key, and its ID is the key's hash.
            for n in &nodes {
                let key = hex::decode(n["public_key"].as_str().unwrap_or("")).unwrap_or_default();
                let key: [u8; 32] = key.try_into().map_err(|_| "no public key".to_string())?;
                assert_eq!(peer_id(&key).to_hex(), n["id"].as_str().unwrap());
                assert_eq!(n["fingerprint"].as_str().unwrap(), &hex::encode(key)[..16]);
            }
            Ok(())
        })
        .await;

        // A client with the ticket (no --peer: the ticket's address) stores
        // and fetches a block.
        let block = files.path().join("block");
        write_file(&block, b"admitted client block");
        let o = cli_with(
            &["block", "put", block.to_str().unwrap()],
            &[("PEERSTORE_TICKET", &ticket)],
        )
        .await;
        assert!(o.status.success(), "put with ticket: {}", stderr(&o));
        let key = stdout(&o).trim().to_string();

        // A client with another network's ticket gets nothing, and the node
        // logs why.
        let wrong = peerstore::network::Ticket {
            secret: peerstore::net::NetworkSecret::generate(),
            addr: first.addr.clone(),
        }
        .encode();
        let out = files.path().join("out");
        let o = cli_with(
            &["block", "get", &key, "-o", out.to_str().unwrap()],
            &[("PEERSTORE_TICKET", &wrong)],
        )
        .await;
        assert!(!o.status.success(), "a stranger read a block");
        assert!(!out.exists());
        assert!(
            stderr(&o).contains("secure link failed"),
            "stranger's error: {}",
            stderr(&o)
        );
        assert_logged(
            &first,
            &[
                "refusing connection from",
                "does not hold this network's secret",
            ],
        )
        .await;
        // No secret at all: a clear error, no connection.
        let empty = tempfile::tempdir().unwrap();
        let o = cli_with(&["ls", "--data", empty.path().to_str().unwrap()], &[]).await;
        assert!(!o.status.success());
        assert!(stderr(&o).contains("no network secret"), "{}", stderr(&o));

        // A node with another network's ticket cannot join: it is never a
        // member, and the member logs why.
        let stranger_data = tempfile::tempdir().unwrap();
        let stranger_log = std::fs::File::create(files.path().join("stranger.err")).unwrap();
        let stranger = ProcGuard(
            Command::new(env!("CARGO_BIN_EXE_peerstore"))
                .args(["node", "--listen", &addr(BLOCK_TICKETS, 3), "--data"])
                .arg(stranger_data.path())
                .args(["--join", &wrong])
                .args(common::FAST)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stranger_log)
                .spawn()
                .expect("spawn stranger"),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let o = cli_with(&["ring", "--json", "--ticket", &ticket], &[]).await;
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{v}");
        assert!(
            nodes
                .iter()
                .all(|n| n["addr"] != addr(BLOCK_TICKETS, 3).as_str())
        );
        let stranger_text = std::fs::read_to_string(files.path().join("stranger.err")).unwrap();
        assert!(
            stranger_text.contains("join through"),
            "the stranger's log: {stranger_text}"
        );
        drop(stranger);

        // Secrets never reach logs or help text.
        let secret_hex = hex::encode(&secret);
        for (who, text) in [
            ("first", first.log()),
            ("second", second.log()),
            ("stranger", stranger_text),
        ] {
            assert!(!text.contains(&secret_hex), "{who} logged the secret");
            assert!(!text.contains(&ticket), "{who} logged the ticket");
        }
        let o = cli_with(
            &["block", "put", "--help"],
            &[("PEERSTORE_TICKET", &ticket)],
        )
        .await;
        assert!(stdout(&o).contains("PEERSTORE_TICKET"));
        assert!(!stdout(&o).contains(&ticket), "--help shows the ticket");

        // A key file others can read is refused with a clear error.
        let secret_file = first.data_dir().join("network.secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = cli_with(
            &[
                "ls",
                "--data",
                secret_file.parent().unwrap().to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert!(!o.status.success());
        assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_speaks_for_another_node() {
    common::with_timeout(Duration::from_secs(120), async {
        let first = addr(BLOCK_IMPERSONATE, 1);
        let nodes = common::start_ring(BLOCK_IMPERSONATE, 3, NodeOpts::new(&first, None)).await;
        let victim = Peer {
            id: nodes[1].id.parse::<Id>().unwrap(),
            addr: "127.0.113.250:7400".into(),
        };
        // A member of the network (it holds the secret) with its own key
        // claims to be node 2: as predecessor, and as leaving.
        let pool = member_pool();
        for req in [
            ChordRequest::Notify(victim.clone()),
            ChordRequest::Leaving {
                peer: victim.clone(),
                succs: vec![],
            },
        ] {
            let r = pool.call(&nodes[0].addr, Request::Chord(req.clone())).await;
            match r {
                Ok(Response::Error(RemoteError::Invalid(why))) => {
                    assert!(why.contains("claims node ID"), "{why}")
                }
                other => panic!("{req:?} answered {other:?}"),
            }
        }
        assert_logged(
            &nodes[0],
            &["refusing a ring message from", "claims node ID"],
        )
        .await;
        // The ring is unchanged: node 2 is still there, at its address.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let members = common::ring_members(&nodes[2].addr).await.unwrap();
        assert_eq!(members.len(), 3);
        assert!(
            members
                .iter()
                .any(|m| m.id == nodes[1].id && m.addr == nodes[1].addr)
        );

        // Calling node 2 at node 1's address: node 1 cannot prove node 2's
        // key, so nothing is sent.
        let posing = Peer {
            id: victim.id,
            addr: nodes[0].addr.clone(),
        };
        let r = member_pool()
            .call_peer(&posing, Request::Chord(ChordRequest::Ping))
            .await;
        assert!(matches!(r, Err(NetError::WrongPeer { .. })), "{r:?}");
    })
    .await;
}

/// `tcpdump` on the loopback interface, writing `net`'s packets to a file;
/// stopped (SIGINT, by PID) by [`Capture::finish`] or on drop.
struct Capture {
    proc: ProcGuard,
    file: std::path::PathBuf,
}

impl Capture {
    async fn start(dir: &Path, net: &str) -> Capture {
        let file = dir.join("links.pcap");
        let err = dir.join("tcpdump.err");
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-n", "-s", "0", "-w"])
            .arg(&file)
            .args(["net", net])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump (apt-get install -y tcpdump) must be installed");
        let proc = ProcGuard(child);
        common::wait_until("tcpdump listening", Duration::from_secs(20), || async {
            let t = std::fs::read_to_string(&err).unwrap_or_default();
            if t.contains("listening on") {
                Ok(())
            } else {
                Err(t)
            }
        })
        .await;
        Capture { proc, file }
    }

    /// Stops the capture and returns the bytes captured.
    async fn finish(mut self) -> Vec<u8> {
        let pid = self.proc.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let start = Instant::now();
        while let Ok(None) = self.proc.0.try_wait() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tcpdump did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read(&self.file).unwrap()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn captured_traffic_has_no_plaintext() {
    common::with_timeout(Duration::from_secs(180), async {
        let work = tempfile::tempdir().unwrap();
        let identity = work.path().join("identity");
        let capture = Capture::start(work.path(), &format!("127.0.{BLOCK_CAPTURE}.0/24")).await;
        let first = addr(BLOCK_CAPTURE, 1);
        let nodes =
            common::start_ring(BLOCK_CAPTURE, 3, NodeOpts::mounted(&first, None, &identity)).await;
        let marker = b"PEERSTORE-CAPTURE-MARKER-5c1d";
        let name = "capture-marker-name-5c1d.txt";
        let mut content = Vec::new();
        while content.len() < (1 << 20) {
            content.extend_from_slice(marker);
            content.extend_from_slice(b" some text between the markers\n");
        }
        // A file through the mount, made durable.
        let path = nodes[0].mount_dir().join(name);
        let c = content.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&c).unwrap();
            f.sync_all().unwrap();
        })
        .await
        .unwrap();
        // A raw block (not encrypted by the file layer, only by the link)
        // through another node: without secure links it would show.
        let raw = work.path().join("raw");
        write_file(&raw, &content[..64 * 1024]);
        let key = common::put_file(&nodes[1].addr, &raw).await.unwrap();
        let back = common::get_file(&nodes[2].addr, &key, &work.path().join("back"))
            .await
            .unwrap();
        assert_eq!(back, content[..64 * 1024]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pcap = capture.finish().await;
        println!("captured {} bytes of loopback traffic", pcap.len());
        assert!(
            pcap.len() > 1 << 20,
            "only {} bytes captured: the capture missed the traffic",
            pcap.len()
        );
        assert!(!contains(&pcap, marker), "the marker is in the capture");
        assert!(
            !contains(&pcap, name.as_bytes()),
            "the file name is in the capture"
        );
        assert!(!contains(&pcap, b"some text between the markers"));
    })
    .await;
}

/// Opens a TCP connection to `to` from `from`.
async fn connect_from(from: &str, to: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let to: SocketAddr = to.parse().unwrap();
    tokio::time::timeout(CALL, sock.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends the first handshake message (with the right secret), reads the
/// node's answer, and stalls: the node has done its Diffie-Hellman work and
/// waits for the third message that never comes.
async fn half_handshake(from: &str, to: &str) -> TcpStream {
    let mut s = connect_from(from, to).await;
    let secret = common::test_secret();
    let key = peerstore::net::StaticKey::generate().secret_bytes();
    let mut hs = snow::Builder::new(peerstore::net::handshake::PATTERN.parse().unwrap())
        .local_private_key(&key)
        .unwrap()
        .psk(0, secret.as_bytes())
        .unwrap()
        .prologue(b"peerstore link v1")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = hs.write_message(&[], &mut buf).unwrap();
    s.write_all(&(n as u16).to_be_bytes()).await.unwrap();
    s.write_all(&buf[..n]).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(CALL, s.read_exact(&mut len))
        .await
        .expect("the node answers the first message")
        .unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).await.unwrap();
    hs.read_message(&msg, &mut buf)
        .expect("the node's answer is a valid second message");
    s
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Puts and gets `n` 16 KiB blocks through `to`; the slowest round trip.
async fn serve_check(to: &str, n: usize, tag: u8) -> Duration {
    let pool = member_pool();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let data = vec![tag.wrapping_add(i as u8); 16 * 1024];
        let t = Instant::now();
        let key = match pool
            .call(
                to,
                Request::Client(ClientRequest::PutBlock {
                    data: data.clone(),
                    claim: peerstore::fs::Identity::generate().claim(Id::hash(&data)),
                }),
            )
            .await
        {
            Ok(Response::Client(ClientResponse::Put { key, copies })) => {
                assert!(copies >= 2, "only {copies} copies");
                key
            }
            other => panic!("put {i}: {other:?}"),
        };
        match pool
            .call(to, Request::Client(ClientRequest::GetBlock { key }))
            .await
        {
            Ok(Response::Client(ClientResponse::Block(b))) => assert_eq!(b, data),
            other => panic!("get {i}: {other:?}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_connections_do_not_stop_the_ring() {
    common::with_timeout(Duration::from_secs(180), async {
        let first = addr(BLOCK_HOSTILE, 1);
        // A longer handshake timeout than the default 5 s, so the checks
        // below surely run while every hostile connection is still open.
        let mut opts = NodeOpts::new(&first, None);
        opts.extra.extend(["--handshake-timeout-ms".into(), "15000".into()]);
        let nodes = common::start_ring(BLOCK_HOSTILE, 3, opts).await;
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let pid = nodes[0].pid();
        let before = serve_check(&first, 20, 1).await;
        let rss_before = rss_kib(pid);

        // 300 idle connections from 10 addresses, and 50 half-finished
        // handshakes from 5 more, all against the first node.
        let opened = Instant::now();
        let mut idle = Vec::new();
        for i in 0..300 {
            idle.push(connect_from(&format!("127.0.{BLOCK_HOSTILE}.{}", 100 + i / 30), &first).await);
        }
        let mut stalled = Vec::new();
        for i in 0..50 {
            stalled.push(
                half_handshake(&format!("127.0.{BLOCK_HOSTILE}.{}", 120 + i / 10), &first).await,
            );
        }
        let during = serve_check(&first, 20, 2).await;
        let members = common::ring_members(&addrs[1]).await.unwrap();
        let rss_during = rss_kib(pid);
        println!(
            "node memory: {} KiB before, {} KiB with 300 idle + 50 stalled connections; slowest put+get {:?} before, {:?} during",
            rss_before, rss_during, before, during
        );
        assert_eq!(members.len(), 3);
        assert!(
            during < Duration::from_secs(2),
            "put+get took {during:?} under the flood"
        );
        assert!(
            rss_during < rss_before + 64 * 1024,
            "memory grew from {rss_before} KiB to {rss_during} KiB"
        );
        assert!(
            opened.elapsed() < Duration::from_secs(14),
            "the checks took too long to mean anything"
        );

        // The node cuts them all off at its handshake timeout.
        let deadline = Duration::from_secs(30);
        for (what, conns) in [("idle", &mut idle), ("stalled", &mut stalled)] {
            for s in conns.iter_mut() {
                let mut b = [0u8; 16];
                match tokio::time::timeout(deadline, s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {}
                    Ok(Ok(n)) => panic!("{what} connection got {n} bytes"),
                    Err(_) => panic!("{what} connection still open after {deadline:?}"),
                }
            }
        }
        assert_logged(&nodes[0], &["refusing connection from", "handshake not finished within"]).await;
        let after = serve_check(&first, 5, 3).await;
        println!(
            "node memory after they were cut off: {} KiB; slowest put+get {:?}",
            rss_kib(pid),
            after
        );
    })
    .await;
}
