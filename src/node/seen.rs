//! The ring members this node has seen, kept in its data directory.
//!
//! A partition can leave each side a ring of its own that looks whole;
//! the sides find each other again through members they remember
//! ([`crate::chord::ChordNode::probe_merge`]). So that a node restarted
//! during a partition (or a node restarted without `--join`) still knows
//! where its ring was, the list is saved as `seen` in the data directory
//! (one `<hex id> <address>` line per member, newest first, at most
//! [`SEEN_MAX`] lines, written atomically) whenever it changed, at most
//! every [`SAVE_EVERY`], and given back to the ring at start.

use super::ring::Ring;
use crate::chord::SEEN_MAX;
use crate::id::Id;
use crate::wire::Peer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// File name of the list inside the data directory.
pub const SEEN_FILE: &str = "seen";

/// How often the list is saved if it changed.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Longest address accepted from the file.
const ADDR_MAX: usize = 256;

/// The members saved in `dir` (none if there is no file). Lines that do
/// not parse are skipped: the list is a hint, checked by every use.
pub fn load(dir: &Path) -> Vec<Peer> {
    let Ok(text) = std::fs::read_to_string(dir.join(SEEN_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, addr) = l.trim().split_once(' ')?;
            let id: Id = id.parse().ok()?;
            let addr = addr.trim();
            (!addr.is_empty() && addr.len() <= ADDR_MAX && !addr.contains(char::is_whitespace))
                .then(|| Peer {
                    id,
                    addr: addr.to_string(),
                })
        })
        .take(SEEN_MAX)
        .collect()
}

/// Saves `peers` (the first [`SEEN_MAX`]) in `dir`, atomically.
pub fn save(dir: &Path, peers: &[Peer]) -> Result<(), crate::keyfile::KeyFileError> {
    let text: String = peers
        .iter()
        .take(SEEN_MAX)
        .map(|p| format!("{} {}\n", p.id.to_hex(), p.addr))
        .collect();
    crate::keyfile::write_key(&dir.join(SEEN_FILE), text.as_bytes())
}

/// Saves the ring's list in `dir` whenever it changed (`saved`: what the
/// file holds now), checking every [`SAVE_EVERY`], until `stop` (the last
/// save is [`save_now`]'s, which the node's shutdown waits for).
pub async fn save_loop(
    ring: Arc<Ring>,
    dir: PathBuf,
    mut saved: Vec<Peer>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SAVE_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let now = ring.with(|c| c.seen());
        if now != saved {
            let (d, list) = (dir.clone(), now.clone());
            match tokio::task::spawn_blocking(move || save(&d, &list)).await {
                Ok(Ok(())) => saved = now,
                Ok(Err(e)) => log::warn!("ring members seen could not be saved: {e}"),
                Err(e) => log::warn!("saving the ring members seen failed: {e}"),
            }
        }
    }
}

/// Saves the ring's list in `dir` now, and waits until it is on disk.
pub async fn save_now(ring: &Ring, dir: PathBuf) {
    let list = ring.view(|c| c.seen());
    match tokio::task::spawn_blocking(move || save(&dir, &list)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("ring members seen could not be saved: {e}"),
        Err(e) => log::warn!("saving the ring members seen failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> Peer {
        Peer {
            id: Id::hash(&[i]),
            addr: format!("127.0.0.{i}:7400"),
        }
    }

    #[test]
    fn saved_list_loads_back_bounded_and_bad_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).is_empty());
        let peers: Vec<Peer> = (1..=3).map(peer).collect();
        save(d.path(), &peers).unwrap();
        assert_eq!(load(d.path()), peers);
        let many: Vec<Peer> = (0..=200).map(peer).collect();
        save(d.path(), &many).unwrap();
        assert_eq!(load(d.path()), many[..SEEN_MAX].to_vec());
        let good = format!("{} 127.0.0.9:1\n", Id::hash(b"x").to_hex());
        std::fs::write(
            d.path().join(SEEN_FILE),
            format!(
                "garbage\nzz 1.2.3.4:5\n{good}{} \n",
                Id::hash(b"y").to_hex()
            ),
        )
        .unwrap();
        assert_eq!(
            load(d.path()),
            vec![Peer {
                id: Id::hash(b"x"),
                addr: "127.0.0.9:1".into()
            }]
        );
    }
}
