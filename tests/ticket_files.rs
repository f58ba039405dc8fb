//! Tickets kept off command lines, against real processes: `invite --qr`
//! prints the ticket, then its QR code; a node joins with
//! `--ticket-file` and its command line holds no secret; client commands
//! take `--ticket-file`, `--ticket @FILE` and `PEERSTORE_TICKET_FILE`; a
//! missing, open or malformed ticket file is a one-line error (exit 1); a
//! file in systemd's credentials directory is read whatever its mode; and a
//! node restarted with an empty ticket file (the systemd unit's fallback
//! when no ticket is installed) starts from the secret it kept and finds
//! its ring again.

mod common;

use common::{NodeGuard, NodeOpts, addr, cli_with, stderr, stdout};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Loopback block of the tests in this file.
const BLOCK: u8 = 139;

/// Writes `text` to `dir/name` with `mode`.
fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// `peerstore ARGS` with `env` only; must fail with exit 1 and one line
/// on stderr containing every one of `want`.
async fn refused(args: &[&str], env: &[(&str, &str)], want: &[&str]) {
    let o = cli_with(args, env).await;
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
    }
}

/// Members of the ring as `ring --json` with `args` and `env` sees it.
async fn members(args: &[&str], env: &[(&str, &str)]) -> Result<usize, String> {
    let mut all = vec!["ring", "--json"];
    all.extend_from_slice(args);
    let o = cli_with(&all, env).await;
    if !o.status.success() {
        return Err(stderr(&o));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    Ok(v["nodes"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread")]
async fn tickets_from_files_join_nodes_and_admit_clients() {
    common::with_timeout(Duration::from_secs(240), async {
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let first = NodeGuard::start(NodeOpts {
            own_network: true,
            ..NodeOpts::new(&addr(BLOCK, 1), None)
        })
        .await;
        let data1 = first.data_dir().to_str().unwrap().to_string();

        // invite --qr: the ticket line, a blank line, the same as a QR code.
        let o = cli_with(&["invite", "--data", &data1, "--qr"], &[]).await;
        assert!(o.status.success(), "invite --qr: {}", stderr(&o));
        let out = stdout(&o);
        let (ticket, qr) = out
            .split_once("\n\n")
            .expect("a ticket line, then the code");
        peerstore::network::Ticket::parse(ticket).expect("the first line is the ticket");
        // The ticket's code as the renderer draws it (its unit test decodes
        // that with rqrr).
        assert_eq!(qr, peerstore::cli::qr::render(ticket).unwrap());
        assert!(qr.lines().count() > 10, "no QR code:\n{qr}");
        let o = cli_with(&["invite", "--data", &data1], &[]).await;
        assert_eq!(
            stdout(&o),
            format!("{ticket}\n"),
            "without --qr: the line alone"
        );

        // A node joins with --ticket-file; no secret on its command line.
        let ticket_file = write_mode(dir, "ticket", &format!("{ticket}\n"), 0o600);
        let node_ticket = write_mode(dir, "node2.ticket", ticket, 0o600);
        let mut opts = NodeOpts::new(&addr(BLOCK, 2), None);
        opts.own_network = true;
        opts.extra.extend([
            "--ticket-file".to_string(),
            node_ticket.to_str().unwrap().to_string(),
        ]);
        let second = NodeGuard::start(opts).await;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", second.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("--ticket-file"), "{cmdline}");
        assert!(
            !cmdline.contains("psk1"),
            "a ticket on the command line: {cmdline}"
        );

        // Clients: --ticket-file, --ticket @FILE, PEERSTORE_TICKET_FILE.
        let tf = ticket_file.to_str().unwrap();
        let at = format!("@{tf}");
        common::wait_until("2 members", Duration::from_secs(30), || async {
            match members(&["--ticket-file", tf], &[]).await? {
                2 => Ok(()),
                n => Err(format!("{n} members")),
            }
        })
        .await;
        assert_eq!(members(&["--ticket", &at], &[]).await, Ok(2));
        assert_eq!(members(&[], &[("PEERSTORE_TICKET_FILE", tf)]).await, Ok(2));

        // Refusals: one line, exit 1, naming the file.
        let missing = dir.join("missing.ticket");
        let missing = missing.to_str().unwrap();
        let open = write_mode(dir, "open.ticket", ticket, 0o644);
        let open = open.to_str().unwrap();
        let bad = write_mode(dir, "bad.ticket", "psk1notaticket", 0o600);
        let bad = bad.to_str().unwrap();
        refused(
            &["ring", "--ticket-file", missing],
            &[],
            &[missing, "No such file"],
        )
        .await;
        refused(&["ring", "--ticket-file", open], &[], &[open, "chmod 600"]).await;
        refused(
            &["ring", "--ticket", &format!("@{open}")],
            &[],
            &["chmod 600"],
        )
        .await;
        refused(
            &["ring", "--ticket-file", bad],
            &[],
            &[bad, "not a join ticket"],
        )
        .await;
        refused(
            &["ring", "--ticket-file", tf],
            &[("PEERSTORE_TICKET", ticket)],
            &["give the ticket once"],
        )
        .await;
        let fresh = tempfile::tempdir().unwrap();
        let fresh = fresh.path().to_str().unwrap();
        for file in [missing, open, bad] {
            let node = ["node", "--listen", &addr(BLOCK, 9), "--data", fresh];
            refused(
                &[&node[..], &["--ticket-file", file]].concat(),
                &[],
                &[file],
            )
            .await;
            let at = format!("@{file}");
            refused(&[&node[..], &["--join", &at]].concat(), &[], &[file]).await;
        }
        let empty = write_mode(dir, "empty.ticket", "", 0o600);
        let empty = empty.to_str().unwrap();
        refused(
            &[
                "node",
                "--listen",
                &addr(BLOCK, 9),
                "--data",
                fresh,
                "--ticket-file",
                empty,
            ],
            &[],
            &["is empty", "peerstore init"],
        )
        .await;
        assert!(
            !Path::new(fresh).join("network.secret").exists(),
            "a refused node created a network"
        );

        // systemd's credentials directory: read whatever the mode (systemd
        // may grant the service's user access by an ACL, shown as 0440).
        let creds = tempfile::tempdir().unwrap();
        let cred = write_mode(creds.path(), "ticket", ticket, 0o440);
        let cred = cred.to_str().unwrap();
        let creds_env = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
        assert_eq!(members(&["--ticket-file", cred], &creds_env).await, Ok(2));
        refused(&["ring", "--ticket-file", cred], &[], &["chmod 600"]).await;

        // Restarted with an empty ticket file (the unit's fallback when no
        // ticket is installed): it starts from the secret it kept, and
        // finds its ring again through the members it remembers, which it
        // saved when it stopped (however soon after joining).
        let mut second = second;
        let seen = second.data_dir().join("seen");
        assert_eq!(second.terminate().await.code(), Some(0));
        let saved = std::fs::read_to_string(&seen).unwrap_or_default();
        assert!(
            saved.contains(&first.addr),
            "members saved at the stop: {saved:?}"
        );
        std::fs::write(&node_ticket, "").unwrap();
        let second = second.restart(None).await;
        common::wait_until("the ring found again", Duration::from_secs(60), || async {
            match members(&["--ticket-file", tf], &[]).await? {
                2 => Ok(()),
                n => Err(format!("{n} members")),
            }
        })
        .await;
        // Secrets never reach the logs.
        for (who, log) in [("first", first.log()), ("second", second.log())] {
            assert!(!log.contains(ticket), "{who} logged the ticket");
        }
    })
    .await;
}
