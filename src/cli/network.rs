//! `peerstore init` and `peerstore invite`: creating a network and
//! handing out join tickets.

use crate::network::{self, Ticket};
use std::path::Path;

/// `peerstore init --data DIR`.
pub fn run_init(data: &Path) -> Result<(), String> {
    let s = network::init(data).map_err(|e| e.to_string())?;
    println!(
        "created network {} in {} (secret in {})",
        s.network_id(),
        data.display(),
        data.join(network::SECRET_FILE).display()
    );
    println!(
        "start its first node with: peerstore node --data {}",
        data.display()
    );
    Ok(())
}

/// `peerstore invite --data DIR [--addr ADDR]`: prints the ticket.
pub fn run_invite(data: &Path, addr: Option<&str>) -> Result<(), String> {
    let secret = network::load_secret(data)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} has no network: run `peerstore init --data {}` or start a node there first",
                data.display(),
                data.display()
            )
        })?;
    let addr = match addr {
        Some(a) => a.to_string(),
        None => network::load_address(data).ok_or_else(|| {
            format!(
                "no member address known in {}: start its node first, or give --addr",
                data.display()
            )
        })?,
    };
    println!("{}", Ticket { secret, addr }.encode());
    Ok(())
}
