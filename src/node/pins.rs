//! `peerstore pin PATH` and `unpin`: subtrees of the mount kept in this
//! machine's caches, so they read offline.
//!
//! The pinned paths are saved in the data directory (`pins`, one path per
//! line, written atomically). A refresh walks each pinned subtree through
//! the vault: every record read on the way is noted (and kept in the record
//! cache, as every read is), and every block the subtree refers to is
//! fetched into the block cache unless it is there. The two caches then
//! keep exactly those records and blocks through eviction. The walk runs
//! when a path is pinned or unpinned, at start, and every
//! [`REFRESH_EVERY`], so files added under a pinned path are pinned too. A
//! walk that fails (offline, say) keeps what the last one pinned.

use crate::cache::BlockCache;
use crate::cache::records::RecordCache;
use crate::fs::crypto::{SecretKey, open, seal};
use crate::fs::{BlockStore, FsError, Vault};
use crate::id::Id;
use crate::journal::JournalStore;
use futures::StreamExt;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// File name of the pinned paths inside the data directory.
pub const PINS_FILE: &str = "pins";
/// What the pins file's seal is bound to.
const PINS_AAD: &[u8] = b"peerstore pinned paths v1";

/// Paths pinned at most.
const MAX_PINS: usize = 1024;

/// Time between refreshes.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// Blocks fetched at once by a walk.
const FETCH_AT_ONCE: usize = 8;

/// The pinned subtrees of one mount.
pub struct Pins<S: BlockStore> {
    file: PathBuf,
    paths: Mutex<BTreeSet<String>>,
    vault: Arc<Vault<JournalStore<S>>>,
    blocks: Arc<BlockCache>,
    records: Arc<RecordCache>,
    /// What the last walk pinned, kept when a walk fails.
    kept: Mutex<(HashSet<Id>, HashSet<Id>)>,
    /// One walk at a time.
    walking: tokio::sync::Mutex<()>,
}

/// `path` as pinned: absolute, no `.` or `..`, no trailing slash.
fn normal(path: &str) -> Result<String, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!(
            "{path}: '.' and '..' are not allowed in a pinned path"
        ));
    }
    if path.len() > 4096 || path.contains('\n') {
        return Err("path too long or not one line".into());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The pins file's bytes for `paths`, sealed under `key`.
fn sealed_list(paths: &[String], key: &SecretKey) -> Vec<u8> {
    let text: String = paths.iter().map(|p| format!("{p}\n")).collect();
    seal(key, text.as_bytes(), PINS_AAD)
}

/// The pinned paths in the pins file's bytes `b`, and whether they were
/// kept in plain text (an earlier release's list, to be sealed again).
/// Bytes that neither open under `key` nor read as text are an error: a
/// damaged list, or one sealed under another identity.
fn read_list(b: &[u8], key: &SecretKey) -> Result<(BTreeSet<String>, bool), String> {
    let (text, plain) = match open(key, b, PINS_AAD) {
        Ok(p) => (
            String::from_utf8(p).map_err(|_| "not text once opened")?,
            false,
        ),
        Err(_) => match std::str::from_utf8(b) {
            Ok(t) => (t.to_string(), true),
            Err(_) => return Err("cannot be opened with this identity's key".into()),
        },
    };
    let paths = text
        .lines()
        .filter_map(|l| normal(l).ok())
        .take(MAX_PINS)
        .collect();
    Ok((paths, plain))
}

impl<S: BlockStore> Pins<S> {
    /// The pins of the mount over `vault`, as saved in `data`.
    pub fn load(
        data: &Path,
        vault: Arc<Vault<JournalStore<S>>>,
        blocks: Arc<BlockCache>,
    ) -> Pins<S> {
        let file = data.join(PINS_FILE);
        let (paths, plain) = match std::fs::read(&file) {
            Ok(b) => read_list(&b, &vault.identity().pins_key()).unwrap_or_else(|e| {
                log::warn!("pinned paths in {}: {e}", file.display());
                (BTreeSet::new(), false)
            }),
            Err(_) => (BTreeSet::new(), false),
        };
        let records = Arc::clone(&vault.store.records);
        let pins = Pins {
            file,
            paths: Mutex::new(paths),
            vault,
            blocks,
            records,
            kept: Mutex::new((HashSet::new(), HashSet::new())),
            walking: tokio::sync::Mutex::new(()),
        };
        if plain
            && !pins.paths().is_empty()
            && let Err(e) = pins.save()
        {
            log::warn!(
                "could not seal the pinned paths in {}: {e}",
                pins.file.display()
            );
        }
        pins
    }

    fn lock_paths(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pinned paths.
    pub fn paths(&self) -> Vec<String> {
        self.lock_paths().iter().cloned().collect()
    }

    /// Bytes of pinned blocks held here.
    pub fn bytes(&self) -> u64 {
        self.blocks.pinned_bytes()
    }

    /// Writes the list, sealed under the identity's pins key.
    fn save(&self) -> Result<(), String> {
        let sealed = sealed_list(&self.paths(), &self.vault.identity().pins_key());
        crate::keyfile::write_key(&self.file, &sealed).map_err(|e| e.to_string())
    }

    /// Pins `path` (which must exist) and fetches its subtree.
    pub async fn pin(&self, path: &str) -> Result<(), String> {
        let path = normal(path)?;
        self.vault
            .resolve(&path)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        {
            let mut paths = self.lock_paths();
            if paths.len() >= MAX_PINS && !paths.contains(&path) {
                return Err(format!("at most {MAX_PINS} paths can be pinned"));
            }
            paths.insert(path.clone());
        }
        self.save()?;
        self.refresh().await.map_err(|e| format!("{path}: {e}"))
    }

    /// Unpins `path`: its records and blocks may leave the caches again.
    pub async fn unpin(&self, path: &str) -> Result<(), String> {
        let path = normal(path)?;
        if !self.lock_paths().remove(&path) {
            return Err(format!("{path} is not pinned"));
        }
        self.save()?;
        // Only what the remaining pins hold stays pinned.
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
        self.refresh().await.map_err(|e| format!("{path}: {e}"))
    }

    /// Walks every pinned subtree, fetching what the caches lack, and pins
    /// exactly what they refer to (plus what the last walk pinned, if
    /// this one failed).
    pub async fn refresh(&self) -> Result<(), FsError> {
        let _one = self.walking.lock().await;
        let store = &self.vault.store;
        store.start_recording();
        let mut blocks = HashSet::new();
        let mut failed = None;
        for path in self.paths() {
            match self.walk(&path).await {
                Ok(b) => blocks.extend(b),
                Err(e) => failed = Some(e),
            }
        }
        let mut records = store.stop_recording();
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some() {
            blocks.extend(kept.1.iter().copied());
            records.extend(kept.0.iter().copied());
        }
        self.records.set_pinned(records.clone());
        self.blocks.set_pinned(blocks.clone());
        *kept = (records, blocks);
        drop(kept);
        failed.map_or(Ok(()), Err)
    }

    /// The blocks of the subtree at `path`, each fetched into the cache.
    async fn walk(&self, path: &str) -> Result<HashSet<Id>, FsError> {
        let (link, _) = self.vault.resolve(path).await?;
        let blocks = self.vault.subtree_blocks(link).await?;
        let missing: Vec<Id> = blocks
            .iter()
            .copied()
            .filter(|k| !self.blocks.contains(*k))
            .collect();
        let store = &self.vault.store;
        // Kept here even if this node holds the block as a replica (the
        // store then leaves it out of the cache): a replica may be handed
        // to another node, a pin must stay readable offline. Each block
        // goes to the cache as it arrives, so a large pin is never in
        // memory at once.
        let results: Vec<Result<(), FsError>> = futures::stream::iter(missing)
            .map(|k| async move {
                let data = store.get_block(k).await?;
                let cache = Arc::clone(&self.blocks);
                tokio::task::spawn_blocking(move || cache.insert(k, &data))
                    .await
                    .map_err(|e| FsError::Unavailable(format!("keeping block {}: {e}", k.short())))
            })
            .buffer_unordered(FETCH_AT_ONCE)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(blocks)
    }
}

/// Refreshes the pins at start and every [`REFRESH_EVERY`], until `stop`.
pub async fn refresh_loop<S: BlockStore>(pins: Arc<Pins<S>>, mut stop: watch::Receiver<bool>) {
    loop {
        if !pins.paths().is_empty()
            && let Err(e) = pins.refresh().await
        {
            log::info!("pinned files not refreshed ({e}); what was pinned stays");
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{normal, read_list, sealed_list};
    use crate::fs::crypto::SecretKey;

    #[test]
    fn the_list_is_sealed_and_a_plain_one_is_read_for_sealing_again() {
        let key = SecretKey([3; 32]);
        let paths = vec!["/photos".to_string(), "/work/src".to_string()];
        let sealed = sealed_list(&paths, &key);
        assert!(!sealed.windows(6).any(|w| w == b"photos"), "no plain names");
        let (read, plain) = read_list(&sealed, &key).unwrap();
        assert_eq!(read.into_iter().collect::<Vec<_>>(), paths);
        assert!(!plain);
        // An earlier release's plain list is read, marked to be sealed.
        let (read, plain) = read_list(b"/photos\n/work/src\n", &key).unwrap();
        assert_eq!(read.into_iter().collect::<Vec<_>>(), paths);
        assert!(plain);
        // Sealed under another key: an error, not garbage taken as text.
        assert!(read_list(&sealed, &SecretKey([4; 32])).is_err());
    }

    #[test]
    fn pinned_paths_are_normalised_and_escapes_refused() {
        assert_eq!(normal("photos//2024/").unwrap(), "/photos/2024");
        assert_eq!(normal("/").unwrap(), "/");
        assert!(normal("/a/../b").is_err());
        assert!(normal("/a/./b").is_err());
        assert!(normal("a\nb").is_err());
    }
}
