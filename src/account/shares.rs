//! Sharing a folder with another account: an offer signed by the sharer,
//! sealed to the recipient's box key, appended to the recipient's inbox on
//! the ring; the recipient opens and checks it. The sharer keeps a private
//! list of what it shares.
//!
//! - An offer holds the sharer's account name and key, the recipient's
//!   name, the folder's name as the recipient sees it (`/shared/FROM/NAME`)
//!   and the capability: the folder's record name and key in the sharer's
//!   tree. It is signed by the sharer's identity and sealed with a libsodium
//!   sealed box (RustCrypto `crypto_box`, X25519 + XSalsa20-Poly1305), so a
//!   storage node sees neither sender nor content, and the inbox version
//!   carrying it is signed by a throwaway key.
//! - The recipient accepts an offer only if it opens with its box key, is
//!   addressed to it, verifies under the key it names, and that key is the
//!   one the sharer's account record publishes.

use super::keyring::Keyring;
use super::records::{self, AccountError};
use super::session::Session;
use crate::fs::crypto::{SecretKey, open, seal};
use crate::fs::vault::CAS_ATTEMPTS;
use crate::fs::{BlockStore, Durability, FsError, Identity, retry};
use crate::grant::Grant;
use crate::inbox_record::{Entry, InboxBody, MAX_INBOX_ENTRIES, MAX_INBOX_ENTRY, record_name};
use crate::record::{Record, inbox_key};
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Domain separation of an offer's signature.
const OFFER_CONTEXT: &[u8] = b"peerstore share offer v1";
/// Associated-data prefix of the sharer's list of shares.
const LIST_AAD: &[u8] = b"peerstore shares v1";

/// A folder offered to another account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The sharer's account name.
    pub from: String,
    /// The sharer's public signing key (the owner of the folder's tree).
    pub owner: [u8; 32],
    /// The recipient's account name.
    pub to: String,
    /// The folder's name under `/shared/FROM/`.
    pub name: String,
    /// The folder's record name in the sharer's tree.
    #[serde(with = "serde_bytes")]
    pub dir_name: Vec<u8>,
    /// The folder's key.
    pub dir_key: [u8; 32],
    /// When it was offered (ms since the epoch, the sharer's clock).
    pub time_ms: u64,
    /// With write access: the sharer's grant to the recipient's key for
    /// the folder's scope.
    pub grant: Option<Grant>,
}

impl Offer {
    /// A reader's identity for the shared folder.
    pub fn reader(&self) -> Identity {
        Identity::shared(self.owner, self.dir_name.clone(), SecretKey(self.dir_key))
    }

    /// The identity the recipient (holding `me`) uses for the folder: a
    /// writer's if the offer grants write access to its key, else a
    /// reader's.
    pub fn identity(&self, me: &Keyring) -> Identity {
        let mine = Identity::from_secret(me.identity).owner();
        match &self.grant {
            Some(g) if g.writer == mine => Identity::shared_writer(
                self.owner,
                self.dir_name.clone(),
                SecretKey(self.dir_key),
                me.identity,
                g.clone(),
            ),
            _ => self.reader(),
        }
    }

    /// Whether the recipient may write in the folder.
    pub fn writable(&self) -> bool {
        self.grant.is_some()
    }
}

#[derive(Serialize, Deserialize)]
struct SignedOffer {
    offer: Offer,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

fn signed_bytes(offer: &Offer) -> Vec<u8> {
    let mut b = OFFER_CONTEXT.to_vec();
    b.extend(postcard::to_stdvec(offer).unwrap_or_default());
    b
}

/// One entry of the sharer's list: what it shares with whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Given {
    /// The folder's path in the sharer's tree.
    pub path: String,
    /// The recipient.
    pub to: String,
    /// Whether with write access.
    pub write: bool,
    /// When.
    pub time_ms: u64,
}

/// Seals `offer`, signed by `sharer`, to the box key `to_box`.
pub fn seal_offer(
    offer: &Offer,
    sharer: &Keyring,
    to_box: &[u8; 32],
) -> Result<Entry, AccountError> {
    let key = SigningKey::from_bytes(&sharer.identity);
    let signed = SignedOffer {
        sig: key.sign(&signed_bytes(offer)).to_bytes().to_vec(),
        offer: offer.clone(),
    };
    let plain = postcard::to_stdvec(&signed)
        .map_err(|e| AccountError::Store(FsError::Invalid(e.to_string())))?;
    let pk = crypto_box::PublicKey::from(*to_box);
    let sealed = pk
        .seal(&mut rand::rngs::OsRng, &plain)
        .map_err(|_| AccountError::Store(FsError::Invalid("sealing the offer failed".into())))?;
    if sealed.len() > MAX_INBOX_ENTRY {
        return Err(AccountError::Store(FsError::Invalid(
            "the offer is too large for an inbox entry".into(),
        )));
    }
    Ok(Entry(sealed))
}

/// Opens an entry with `box_secret` and checks its signature: the offer,
/// or `None` if it is not a valid offer for this key.
pub fn open_offer(entry: &Entry, box_secret: &[u8; 32]) -> Option<Offer> {
    let sk = crypto_box::SecretKey::from(*box_secret);
    let plain = sk.unseal(&entry.0).ok()?;
    let signed: SignedOffer = match postcard::take_from_bytes(&plain) {
        Ok((s, [])) => s,
        _ => return None,
    };
    let vk = crate::record::verifying_key(&signed.offer.owner)?;
    let sig = Signature::from_slice(&signed.sig).ok()?;
    vk.verify_strict(&signed_bytes(&signed.offer), &sig).ok()?;
    Some(signed.offer)
}

/// Appends `entry` to the inbox of the account whose key is `owner`,
/// signed by a throwaway key. Another sender's append at the same moment
/// makes this one retry on the new version.
pub async fn append<S: BlockStore>(
    store: &S,
    to: &str,
    owner: &[u8; 32],
    entry: Entry,
) -> Result<(), AccountError> {
    let key = inbox_key(owner);
    for attempt in 0..CAS_ATTEMPTS {
        let held = store.get_versions(key).await.map_err(AccountError::Store)?;
        let (seq, mut body) = match held.first() {
            Some(h) => (
                h.seq,
                h.value
                    .as_deref()
                    .and_then(InboxBody::decode)
                    .unwrap_or_default(),
            ),
            None => (0, InboxBody::default()),
        };
        if body.entries.len() >= MAX_INBOX_ENTRIES {
            return Err(AccountError::InboxFull(to.to_string()));
        }
        body.entries.push(entry.clone());
        let signer = SigningKey::generate(&mut rand::rngs::OsRng);
        let rec = Record::sign(&signer, &record_name(owner), seq + 1, Some(body.encode()));
        match store.put_record(rec, Some(seq), Durability::Now).await {
            Ok(()) => return Ok(()),
            Err(FsError::Conflict(current)) => {
                retry::after_lost_swap(store, key, current, seq, attempt).await;
            }
            Err(e) => return Err(AccountError::Store(e)),
        }
    }
    Err(AccountError::Changed(format!("inbox of {to}")))
}

/// Offers the folder `dir` (its path `path` in the sharer's tree, shown to
/// the recipient as `name`) to the account `to`.
pub async fn offer<S: BlockStore>(
    store: &S,
    sharer: &Session,
    to: &str,
    name: &str,
    dir: &crate::fs::Link,
    scope: Option<crate::grant::Scope>,
) -> Result<Offer, AccountError> {
    if to == sharer.name {
        return Err(AccountError::SelfShare);
    }
    let account = records::fetch(store, to)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(to.to_string()))?;
    let offer = Offer {
        from: sharer.name.clone(),
        owner: sharer.identity().owner(),
        to: to.to_string(),
        name: name.to_string(),
        dir_name: dir.name.clone(),
        dir_key: dir.key.0,
        time_ms: crate::ownership::now_ms(),
        grant: scope.map(|sc| sharer.identity().grant(account.owner(), sc)),
    };
    let entry = seal_offer(&offer, &sharer.keyring, &account.body.box_key)?;
    append(store, to, &account.owner(), entry).await?;
    Ok(offer)
}

/// What was shared with the logged-in account: every valid offer in its
/// inbox whose sharer's account publishes the key that signed it, the
/// newest per sharer and folder name, sorted by sharer and name.
pub async fn received<S: BlockStore>(store: &S, me: &Session) -> Result<Vec<Offer>, AccountError> {
    Ok(scan(store, me).await?.offers)
}

/// An inbox as its owner reads it.
struct Scan {
    /// The valid offers ([`received`]).
    offers: Vec<Offer>,
    /// The held version's sequence number and entries, and which of them
    /// are of no use: they do not open with the owner's key, are not
    /// addressed to it, or a newer offer of the same folder replaces them.
    seq: u64,
    entries: Vec<Entry>,
    useless: Vec<bool>,
}

async fn scan<S: BlockStore>(store: &S, me: &Session) -> Result<Scan, AccountError> {
    let held = store
        .get_versions(inbox_key(&me.identity().owner()))
        .await
        .map_err(AccountError::Store)?;
    let seq = held.first().map_or(0, |h| h.seq);
    let entries = held
        .first()
        .and_then(|h| h.value.as_deref())
        .and_then(InboxBody::decode)
        .unwrap_or_default()
        .entries;
    let mut useless = vec![false; entries.len()];
    // (offer, its entry's index), the newest per sharer and name.
    let mut out: Vec<(Offer, usize)> = Vec::new();
    let mut owners: std::collections::HashMap<String, Option<[u8; 32]>> = Default::default();
    for (i, e) in entries.iter().enumerate() {
        let Some(o) = open_offer(e, &me.keyring.box_secret).filter(|o| o.to == me.name) else {
            useless[i] = true;
            continue;
        };
        let owner = match owners.get(&o.from) {
            Some(k) => *k,
            None => {
                let k = records::fetch(store, &o.from)
                    .await
                    .ok()
                    .flatten()
                    .map(|a| a.owner());
                owners.insert(o.from.clone(), k);
                k
            }
        };
        if owner != Some(o.owner) {
            // Kept in the inbox: the account may have been out of reach.
            log::warn!(
                "an offer claiming to come from {} is not signed by its key: ignored",
                o.from
            );
            continue;
        }
        match out
            .iter_mut()
            .find(|(x, _)| x.from == o.from && x.name == o.name)
        {
            Some((x, j)) if x.time_ms <= o.time_ms => {
                useless[*j] = true;
                *x = o;
                *j = i;
            }
            Some(_) => useless[i] = true,
            None => out.push((o, i)),
        }
    }
    let mut offers: Vec<Offer> = out.into_iter().map(|(o, _)| o).collect();
    offers.sort_by(|a, b| (&a.from, &a.name).cmp(&(&b.from, &b.name)));
    Ok(Scan {
        offers,
        seq,
        entries,
        useless,
    })
}

/// Removes the entries of the logged-in account's inbox that are of no
/// use (see [`Scan::useless`]), signed by the account's key (only the
/// owner may remove). Returns the offers ([`received`]) and how many
/// entries were removed; a sender appending at the same moment makes it
/// remove none this time (a failure to store is logged: the offers are
/// read all the same).
pub async fn tidy<S: BlockStore>(
    store: &S,
    me: &Session,
) -> Result<(Vec<Offer>, usize), AccountError> {
    let scan = scan(store, me).await?;
    let removed = scan.useless.iter().filter(|u| **u).count();
    if removed == 0 {
        return Ok((scan.offers, 0));
    }
    let body = InboxBody {
        entries: scan
            .entries
            .into_iter()
            .zip(&scan.useless)
            .filter(|(_, u)| !**u)
            .map(|(e, _)| e)
            .collect(),
    };
    let owner = me.identity().owner();
    let rec = me
        .identity()
        .sign(&record_name(&owner), scan.seq + 1, Some(body.encode()));
    match store.put_record(rec, Some(scan.seq), Durability::Now).await {
        Ok(()) => Ok((scan.offers, removed)),
        Err(FsError::Conflict(_)) => Ok((scan.offers, 0)),
        Err(e) => {
            log::warn!("could not tidy the inbox: {e}");
            Ok((scan.offers, 0))
        }
    }
}

/// The sharer's list of what it shares, and the list record's sequence
/// number (0: none yet).
pub async fn given<S: BlockStore>(
    store: &S,
    me: &Identity,
) -> Result<(Vec<Given>, u64), AccountError> {
    let name = me.shares_name();
    let held = store
        .get_versions(me.record_key(&name))
        .await
        .map_err(AccountError::Store)?;
    let Some(head) = held.first() else {
        return Ok((Vec::new(), 0));
    };
    let Some(value) = &head.value else {
        return Ok((Vec::new(), head.seq));
    };
    let plain = open(&me.shares_key(), value, &[LIST_AAD, &name].concat()).map_err(|_| {
        AccountError::Store(FsError::Corrupt("the list of shares does not open".into()))
    })?;
    let list = postcard::from_bytes(&plain).map_err(|_| {
        AccountError::Store(FsError::Corrupt("the list of shares is malformed".into()))
    })?;
    Ok((list, head.seq))
}

/// Adds `g` to the sharer's list (replacing an entry for the same path
/// and recipient).
pub async fn note_given<S: BlockStore>(
    store: &S,
    me: &Identity,
    g: Given,
) -> Result<(), AccountError> {
    change_given(store, me, move |list| {
        list.retain(|x| !(x.path == g.path && x.to == g.to));
        list.push(g.clone());
    })
    .await
}

/// Removes the entry for `path` and `to` from the sharer's list.
pub async fn forget_given<S: BlockStore>(
    store: &S,
    me: &Identity,
    path: &str,
    to: &str,
) -> Result<(), AccountError> {
    change_given(store, me, |list| {
        list.retain(|x| !(x.path == path && x.to == to));
    })
    .await
}

/// Read-modify-write of the sharer's list.
async fn change_given<S: BlockStore>(
    store: &S,
    me: &Identity,
    f: impl Fn(&mut Vec<Given>),
) -> Result<(), AccountError> {
    let key = me.record_key(&me.shares_name());
    for attempt in 0..CAS_ATTEMPTS {
        let (mut list, seq) = given(store, me).await?;
        f(&mut list);
        let name = me.shares_name();
        let plain = postcard::to_stdvec(&list)
            .map_err(|e| AccountError::Store(FsError::Invalid(e.to_string())))?;
        let value = seal(&me.shares_key(), &plain, &[LIST_AAD, &name].concat());
        match store
            .put_record(
                me.sign(&name, seq + 1, Some(value)),
                Some(seq),
                Durability::Now,
            )
            .await
        {
            Ok(()) => return Ok(()),
            Err(FsError::Conflict(current)) => {
                retry::after_lost_swap(store, key, current, seq, attempt).await;
            }
            Err(e) => return Err(AccountError::Store(e)),
        }
    }
    Err(AccountError::Changed("the list of shares".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::records::{create, new_keyring};
    use crate::account_record::KdfParams;
    use crate::fs::mem_store::MemStore;
    use crate::fs::{Kind, Link};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    async fn user(store: &MemStore, name: &str) -> Session {
        let kr = new_keyring(None);
        create(store, name, b"pw", &kr, KdfParams::FLOOR)
            .await
            .unwrap();
        Session {
            name: name.into(),
            keyring: kr,
        }
    }

    #[test]
    fn an_offer_reaches_its_recipient_only() {
        rt().block_on(async {
            let store = MemStore::default();
            let (alice, bob, carol) = (
                user(&store, "alice").await,
                user(&store, "bob").await,
                user(&store, "carol").await,
            );
            let dir = Link::fresh(Kind::Dir);
            let o = offer(&store, &alice, "bob", "photos", &dir, None)
                .await
                .unwrap();
            assert!(matches!(
                offer(&store, &alice, "alice", "photos", &dir, None).await,
                Err(AccountError::SelfShare)
            ));
            assert!(matches!(
                offer(&store, &alice, "nobody", "photos", &dir, None).await,
                Err(AccountError::NoSuchUser(_))
            ));
            let got = received(&store, &bob).await.unwrap();
            assert_eq!(got, vec![o.clone()]);
            assert_eq!(got[0].reader().root_name(), dir.name);
            assert!(received(&store, &carol).await.unwrap().is_empty());
            // Sealed to bob: carol's key does not open it, and a forged
            // offer (signed by carol, claiming alice) is ignored.
            let mut forged = o.clone();
            forged.dir_key = [9; 32];
            let bob_box = records::box_public(&bob.keyring);
            let e = seal_offer(&forged, &carol.keyring, &bob_box).unwrap();
            assert!(open_offer(&e, &carol.keyring.box_secret).is_none());
            append(&store, "bob", &bob.identity().owner(), e)
                .await
                .unwrap();
            // Junk, and an older offer of the same folder.
            append(&store, "bob", &bob.identity().owner(), Entry(vec![0; 80]))
                .await
                .unwrap();
            let newer = offer(&store, &alice, "bob", "photos", &dir, None)
                .await
                .unwrap();
            assert_eq!(received(&store, &bob).await.unwrap(), vec![newer.clone()]);
            // Bob tidies: the forged offer (its signature does not verify
            // under the key it names), the junk and the replaced offer go.
            assert_eq!(tidy(&store, &bob).await.unwrap().1, 3);
            assert_eq!(tidy(&store, &bob).await.unwrap().1, 0);
            assert_eq!(received(&store, &bob).await.unwrap(), vec![newer]);
            let _ = o;
        });
    }

    #[test]
    fn a_flooded_inbox_refuses_with_a_clear_error() {
        rt().block_on(async {
            let store = MemStore::default();
            let bob = user(&store, "bob").await;
            let owner = bob.identity().owner();
            for i in 0..MAX_INBOX_ENTRIES {
                append(&store, "bob", &owner, Entry(vec![i as u8; 10]))
                    .await
                    .unwrap();
            }
            let e = append(&store, "bob", &owner, Entry(vec![1; 10]))
                .await
                .unwrap_err();
            assert!(matches!(e, AccountError::InboxFull(_)), "{e}");
            assert!(e.to_string().contains("inbox of bob is full"), "{e}");
        });
    }
}
