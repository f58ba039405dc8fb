//! Where a command gets its join ticket.
//!
//! Client commands: `--ticket TICKET` or `--ticket @FILE`
//! (`PEERSTORE_TICKET`), or `--ticket-file FILE` (`PEERSTORE_TICKET_FILE`).
//! A node: `--join TICKET`, `--join @FILE` or `--ticket-file FILE`, with
//! `--join ADDR` to join through another member than the ticket names.
//! A ticket in a file stays off the command line, which every user of the
//! machine can read (`ps`). An empty ticket file counts as no ticket (the
//! network secret of the data directory is used): that is what the
//! systemd unit passes when `/etc/peerstore/USER.ticket` does not exist.

use super::CliError;
use crate::network::{self, Ticket};
use std::path::Path;

/// The ticket given as `ticket` (a ticket, or `@FILE`) or in
/// `ticket_file`: `None` if neither is given or the file is empty.
pub fn given_ticket(
    ticket: Option<&str>,
    ticket_file: Option<&Path>,
) -> Result<Option<Ticket>, CliError> {
    match (ticket, ticket_file) {
        (Some(_), Some(_)) => Err(CliError::Invalid(
            "give the ticket once: --ticket (or PEERSTORE_TICKET) and --ticket-file (or PEERSTORE_TICKET_FILE) are both set".into(),
        )),
        (Some(t), None) => ticket_or_file(t),
        (None, Some(f)) => Ok(network::read_ticket_file(f)?),
        (None, None) => Ok(None),
    }
}

/// A ticket, or `@FILE` for the ticket in FILE (`None` if it is empty).
fn ticket_or_file(arg: &str) -> Result<Option<Ticket>, CliError> {
    match arg.strip_prefix('@') {
        Some(file) => Ok(network::read_ticket_file(Path::new(file))?),
        None => Ok(Some(Ticket::parse(arg)?)),
    }
}

/// The address a node joins through, from `--join` (a ticket, `@FILE` or
/// a member's address) and `--ticket-file`. A ticket's secret is kept in
/// the data directory (which must not belong to another network); a plain
/// address needs the secret there already. `None`: start a ring (see
/// `node::start`; without a ticket file a data directory with no network
/// gets a new one, with an empty ticket file it is refused).
pub fn join_address(
    data: &Path,
    join: Option<&str>,
    ticket_file: Option<&Path>,
) -> Result<Option<String>, CliError> {
    let join_is_ticket = join.is_some_and(|j| j.starts_with('@') || Ticket::looks_like(j));
    let (ticket, via, from_file) = match join {
        Some(_) if join_is_ticket && ticket_file.is_some() => {
            return Err(CliError::Invalid(
                "give the ticket once: --join TICKET (or @FILE), or --ticket-file FILE with --join ADDR".into(),
            ));
        }
        Some(j) if join_is_ticket => {
            if !j.starts_with('@') {
                log::warn!(
                    "the join ticket is on the command line, where every user of this machine can read it (ps): prefer --ticket-file FILE or --join @FILE"
                );
            }
            (ticket_or_file(j)?, None, j.strip_prefix('@').map(Path::new))
        }
        via => (
            given_ticket(None, ticket_file)?,
            via.map(str::to_string),
            ticket_file,
        ),
    };
    if let Some(t) = ticket {
        network::adopt(data, &t)?;
        return Ok(Some(via.unwrap_or(t.addr)));
    }
    if network::load_secret(data)?.is_some() {
        return Ok(via);
    }
    match (via, from_file) {
        (Some(addr), _) => Err(CliError::Invalid(format!(
            "--join {addr}: {} holds no network secret; join with a ticket from `peerstore invite` instead",
            data.display()
        ))),
        (None, Some(file)) => Err(CliError::Invalid(format!(
            "ticket file {} is empty and {} holds no network secret: put a ticket from `peerstore invite` in it, or create a network with `peerstore init --data {}`",
            file.display(),
            data.display(),
            data.display()
        ))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetworkSecret;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn ticket(addr: &str) -> Ticket {
        Ticket {
            secret: NetworkSecret::generate(),
            addr: addr.into(),
        }
    }

    fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn client_ticket_from_argument_at_file_or_ticket_file() {
        let d = tempfile::tempdir().unwrap();
        let t = ticket("192.0.2.1:7400");
        let f = private_file(d.path(), "t", &t.encode());
        let at = format!("@{}", f.display());
        assert_eq!(
            given_ticket(Some(&t.encode()), None).unwrap(),
            Some(t.clone())
        );
        assert_eq!(given_ticket(Some(&at), None).unwrap(), Some(t.clone()));
        assert_eq!(given_ticket(None, Some(&f)).unwrap(), Some(t.clone()));
        assert_eq!(given_ticket(None, None).unwrap(), None);
        let empty = private_file(d.path(), "empty", "");
        assert_eq!(given_ticket(None, Some(&empty)).unwrap(), None);
        let e = given_ticket(Some(&t.encode()), Some(&f)).unwrap_err();
        assert!(e.to_string().contains("give the ticket once"), "{e}");
        let e = given_ticket(Some("@/nonexistent/ticket"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ticket"), "{e}");
    }

    #[test]
    fn node_joins_through_ticket_file_or_join_argument() {
        let d = tempfile::tempdir().unwrap();
        let t = ticket("192.0.2.1:7400");
        let f = private_file(d.path(), "t", &t.encode());
        let at = format!("@{}", f.display());
        // A ticket file: its address, and its secret kept.
        let data = d.path().join("a");
        assert_eq!(
            join_address(&data, None, Some(&f)).unwrap().as_deref(),
            Some("192.0.2.1:7400")
        );
        assert_eq!(network::load_secret(&data).unwrap(), Some(t.secret.clone()));
        // --join @FILE, and --join ADDR with the file: through ADDR.
        let data = d.path().join("b");
        assert_eq!(
            join_address(&data, Some(&at), None).unwrap().as_deref(),
            Some("192.0.2.1:7400")
        );
        let data = d.path().join("c");
        assert_eq!(
            join_address(&data, Some("192.0.2.9:1"), Some(&f))
                .unwrap()
                .as_deref(),
            Some("192.0.2.9:1")
        );
        assert_eq!(network::load_secret(&data).unwrap(), Some(t.secret.clone()));
        // The ticket twice.
        let e = join_address(&data, Some(&t.encode()), Some(&f)).unwrap_err();
        assert!(e.to_string().contains("give the ticket once"), "{e}");
    }

    #[test]
    fn empty_ticket_file_needs_a_secret_already() {
        let d = tempfile::tempdir().unwrap();
        let empty = private_file(d.path(), "empty", "\n");
        let fresh = d.path().join("fresh");
        let e = join_address(&fresh, None, Some(&empty)).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("is empty") && e.contains("peerstore init"),
            "{e}"
        );
        assert!(network::load_secret(&fresh).unwrap().is_none());
        let e = join_address(&fresh, Some(&format!("@{}", empty.display())), None).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        // With the secret: no join (the node rejoins through the members it
        // remembers), or the address given.
        let member = d.path().join("member");
        network::init(&member).unwrap();
        assert_eq!(join_address(&member, None, Some(&empty)).unwrap(), None);
        assert_eq!(
            join_address(&member, Some("192.0.2.9:1"), Some(&empty))
                .unwrap()
                .as_deref(),
            Some("192.0.2.9:1")
        );
        // Without any ticket a plain address needs the secret.
        let e = join_address(&fresh, Some("192.0.2.9:1"), None).unwrap_err();
        assert!(e.to_string().contains("holds no network secret"), "{e}");
        assert_eq!(join_address(&fresh, None, None).unwrap(), None);
    }
}
