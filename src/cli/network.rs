//! `peerstore init` and `peerstore invite`: creating a network and
//! handing out join tickets.

use super::CliError;
use crate::network::{self, Ticket};
use std::path::Path;

/// `peerstore init --data DIR`.
pub fn run_init(data: &Path) -> Result<(), CliError> {
    let s = network::init(data)?;
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

/// `peerstore invite --data DIR [--addr ADDR] [--qr]`: prints the ticket
/// (a line scripts can read), then with `qr` the same as a QR code.
pub fn run_invite(data: &Path, addr: Option<&str>, qr: bool) -> Result<(), CliError> {
    let secret = network::load_secret(data)?.ok_or_else(|| {
        CliError::Invalid(format!(
            "{} has no network: run `peerstore init --data {}` or start a node there first",
            data.display(),
            data.display()
        ))
    })?;
    let addr = match addr {
        Some(a) => a.to_string(),
        None => network::load_address(data).ok_or_else(|| {
            CliError::Invalid(format!(
                "no member address known in {}: start its node first, or give --addr",
                data.display()
            ))
        })?,
    };
    let ticket = Ticket { secret, addr }.encode();
    println!("{ticket}");
    if qr {
        println!();
        print!("{}", super::qr::render(&ticket)?);
    }
    Ok(())
}
