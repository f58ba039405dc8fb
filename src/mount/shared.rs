//! The `/shared` folder of a mount acting as an account: `/shared` lists
//! the accounts that share folders with it, `/shared/OWNER` their folders,
//! and each folder is a read-only tree of its own, read through a vault
//! rooted at the shared directory of the owner's tree.
//!
//! The two upper levels are made up from the account's inbox (read again
//! at most every [`OFFERS_TTL`]); they have no vault object. Each shared
//! folder gets a tree number (1, 2, …) for as long as the mount runs.

use super::inodes::LISTING_PREFIX;
use crate::account::session::Session;
use crate::account::shares::{self, Offer};
use crate::fs::object::{Attrs, Body, Entries, Entry};
use crate::fs::{BlockStore, FsError, Kind, Link, Object, Vault, Versioned};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the offers read from the inbox are used.
pub const OFFERS_TTL: Duration = Duration::from_secs(5);

/// The shared folders one mount shows.
pub struct SharedTrees<S> {
    store: Arc<S>,
    me: Session,
    state: Mutex<State<S>>,
}

struct State<S> {
    /// The offers as last read, and when.
    offers: Vec<Offer>,
    read: Option<Instant>,
    /// Tree `i + 1`: the sharer, the folder name, its vault.
    trees: Vec<(String, String, Arc<Vault<S>>)>,
}

impl<S: BlockStore> SharedTrees<S> {
    /// The shared folders of account session `me`, read through `store`.
    pub fn new(store: Arc<S>, me: Session) -> SharedTrees<S> {
        SharedTrees {
            store,
            me,
            state: Mutex::new(State {
                offers: Vec::new(),
                read: None,
                trees: Vec::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offers, read again if older than [`OFFERS_TTL`] (the last ones
    /// if the inbox is out of reach).
    async fn offers(&self) -> Vec<Offer> {
        {
            let st = self.state();
            if st.read.is_some_and(|t| t.elapsed() < OFFERS_TTL) {
                return st.offers.clone();
            }
        }
        match shares::received(self.store.as_ref(), &self.me).await {
            Ok(o) => {
                let mut st = self.state();
                st.offers = o.clone();
                st.read = Some(Instant::now());
                o
            }
            Err(e) => {
                log::warn!("/shared: cannot read the inbox: {e}");
                self.state().offers.clone()
            }
        }
    }

    /// The vault of shared tree `tree`.
    pub fn vault(&self, tree: u32) -> Result<Arc<Vault<S>>, FsError> {
        let st = self.state();
        tree.checked_sub(1)
            .and_then(|i| st.trees.get(i as usize))
            .map(|(_, _, v)| Arc::clone(v))
            .ok_or(FsError::Stale)
    }

    /// Whether the recipient may write in shared tree `tree`.
    pub fn writable(&self, tree: u32) -> bool {
        let st = self.state();
        tree.checked_sub(1)
            .and_then(|i| st.trees.get(i as usize))
            .is_some_and(|(_, _, v)| v.identity().can_write())
    }

    /// The vaults of the shared folders opened so far.
    pub fn vaults(&self) -> Vec<Arc<Vault<S>>> {
        self.state()
            .trees
            .iter()
            .map(|(_, _, v)| Arc::clone(v))
            .collect()
    }

    /// The tree number of `offer`'s folder, made on first use.
    fn tree_of(&self, offer: &Offer) -> u32 {
        let mut st = self.state();
        if let Some(i) = st.trees.iter().position(|(f, n, v)| {
            *f == offer.from
                && *n == offer.name
                && v.root().name == offer.dir_name
                && v.identity().can_write() == offer.writable()
        }) {
            return i as u32 + 1;
        }
        let vault = Vault::new(Arc::clone(&self.store), offer.identity(&self.me.keyring));
        st.trees
            .push((offer.from.clone(), offer.name.clone(), vault));
        st.trees.len() as u32
    }

    /// The made-up folder `link` (`/shared` or `/shared/OWNER`), and the
    /// shared folders it lists with their tree numbers.
    pub async fn listing(&self, link: &Link) -> Result<(Versioned, Vec<(Vec<u8>, u32)>), FsError> {
        let rest = link
            .name
            .strip_prefix(LISTING_PREFIX)
            .ok_or(FsError::NotFound)?;
        let offers = self.offers().await;
        let mut entries = Entries::new();
        let mut roots = Vec::new();
        if rest.is_empty() {
            for o in &offers {
                entries.insert(
                    o.from.clone().into_bytes(),
                    Entry::bare(owner_link(&o.from)),
                );
            }
        } else {
            for o in offers.iter().filter(|o| o.from.as_bytes() == rest) {
                let dir = Link {
                    kind: Kind::Dir,
                    name: o.dir_name.clone(),
                    key: crate::fs::crypto::SecretKey(o.dir_key),
                };
                roots.push((o.dir_name.clone(), self.tree_of(o)));
                entries.insert(o.name.clone().into_bytes(), Entry::bare(dir));
            }
        }
        let obj = Object {
            attrs: Attrs::new(0o555, 0, 0),
            body: Body::Dir { entries },
        };
        Ok((Versioned::new(obj, 0), roots))
    }
}

/// The made-up `/shared` folder.
pub fn top_link() -> Link {
    Link {
        kind: Kind::Dir,
        name: LISTING_PREFIX.to_vec(),
        key: crate::fs::crypto::SecretKey([0; 32]),
    }
}

/// The made-up `/shared/OWNER` folder.
fn owner_link(owner: &str) -> Link {
    Link {
        kind: Kind::Dir,
        name: [LISTING_PREFIX, owner.as_bytes()].concat(),
        key: crate::fs::crypto::SecretKey([0; 32]),
    }
}
