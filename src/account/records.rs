//! Creating, fetching, opening and re-sealing account records, over any
//! vault store ([`BlockStore`]): the command-line client runs them through
//! one node, tests in memory.
//!
//! - [`create`]: a compare-and-swap on an absent record, judged by the
//!   owner node of the name's key first, so of two concurrent creates of
//!   one name exactly one wins; the loser is told the name is taken.
//! - [`login`]: fetch, derive, open. A name with no account and a wrong
//!   password give the same error after the same work (a derivation with
//!   the default parameters stands in for the missing record's).
//! - [`change_password`]: re-seal the same keyring under a new password
//!   and a fresh salt, signed by the account's key, as the next version.

use super::keyring::{Keyring, KeyringError, derive_in_vain, open_keyring, seal_keyring};
use super::session::Session;
use crate::account_record::{AccountBody, KdfParams, NameError, check_name, check_version};
use crate::fs::vault::CAS_ATTEMPTS;
use crate::fs::{BlockStore, Durability, FsError, Identity, retry};
use crate::record::{Record, account_key};

/// Why an account operation failed; its `Display` is the one line shown.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A wrong name or a wrong password: one error for both.
    #[error("login failed: wrong name or password")]
    LoginFailed,
    /// The password given to `passwd` as the current one is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the account name {0} is taken")]
    Taken(String),
    #[error("no account named {0}")]
    NoSuchUser(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Keyring(KeyringError),
    /// The record found does not hold what an account record must.
    #[error("the account record of {name} is damaged or forged: {why}")]
    Forged { name: String, why: String },
    /// The account changed between reading and writing it.
    #[error("the account {0} changed meanwhile; try again")]
    Changed(String),
    #[error(
        "the inbox of {0} is full: they must read it (`peerstore shares`) before more can be shared with them"
    )]
    InboxFull(String),
    #[error("you cannot share with yourself")]
    SelfShare,
    #[error("{0}")]
    Store(FsError),
}

impl From<KeyringError> for AccountError {
    fn from(e: KeyringError) -> AccountError {
        match e {
            KeyringError::WrongPassword => AccountError::LoginFailed,
            e => AccountError::Keyring(e),
        }
    }
}

/// A fresh keyring: `identity` (an existing identity's secret, adopted)
/// or a new signing key, and a new box key.
pub fn new_keyring(identity: Option<[u8; 32]>) -> Keyring {
    let identity = identity
        .unwrap_or_else(|| ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).to_bytes());
    Keyring {
        identity,
        box_secret: x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng).to_bytes(),
    }
}

/// The public box key of `keyring`.
pub fn box_public(keyring: &Keyring) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(keyring.box_secret);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// An account as fetched: its current version and what it holds.
#[derive(Debug, Clone)]
pub struct Account {
    pub record: Record,
    pub body: AccountBody,
}

impl Account {
    /// The account's public signing key (the owner of its tree).
    pub fn owner(&self) -> [u8; 32] {
        self.record.owner
    }
}

/// The account `name`, if there is one. A record that breaks the account
/// rules (which storage nodes check too) is an error, never an account.
pub async fn fetch<S: BlockStore>(store: &S, name: &str) -> Result<Option<Account>, AccountError> {
    check_name(name)?;
    let key = account_key(name.as_bytes());
    let versions = store.get_versions(key).await.map_err(AccountError::Store)?;
    let Some(record) = versions.into_iter().next() else {
        return Ok(None);
    };
    let forged = |why: String| AccountError::Forged {
        name: name.to_string(),
        why,
    };
    if record.key() != key {
        return Err(forged("it is stored under another key".into()));
    }
    record.verify().map_err(|e| forged(e.to_string()))?;
    let body = check_version(&record).map_err(forged)?;
    Ok(Some(Account { record, body }))
}

/// Creates the account `name` holding `keyring`, sealed under `password`
/// with `params`. Fails with [`AccountError::Taken`] if the name has an
/// account, whoever created it and however close in time.
pub async fn create<S: BlockStore>(
    store: &S,
    name: &str,
    password: &[u8],
    keyring: &Keyring,
    params: KdfParams,
) -> Result<Account, AccountError> {
    check_name(name)?;
    if fetch(store, name).await?.is_some() {
        return Err(AccountError::Taken(name.to_string()));
    }
    let body = AccountBody {
        name: name.to_string(),
        box_key: box_public(keyring),
        keyring: seal_keyring(keyring, name, password, params)?,
        created_ms: crate::ownership::now_ms(),
    };
    let identity = Identity::from_secret(keyring.identity);
    let record = identity.sign(
        &crate::account_record::record_name(name),
        1,
        Some(body.encode()),
    );
    match store
        .put_record(record.clone(), Some(0), Durability::Now)
        .await
    {
        Ok(()) => {}
        Err(FsError::Conflict(_)) => return Err(AccountError::Taken(name.to_string())),
        Err(e) => return Err(AccountError::Store(e)),
    }
    // Read it back: the name is ours only if our version is the one kept.
    match fetch(store, name).await? {
        Some(a) if a.record == record => Ok(a),
        _ => Err(AccountError::Taken(name.to_string())),
    }
}

/// Logs in as `name` with `password`: the account's opened keyring.
pub async fn login<S: BlockStore>(
    store: &S,
    name: &str,
    password: &[u8],
) -> Result<Session, AccountError> {
    super::keyring::check_password(password)?;
    let account = match fetch(store, name).await {
        Ok(Some(a)) => a,
        Ok(None) | Err(AccountError::Name(_)) => {
            derive_in_vain(password, KdfParams::DEFAULT);
            return Err(AccountError::LoginFailed);
        }
        Err(e) => return Err(e),
    };
    let keyring = open_keyring(&account.body.keyring, name, password)?;
    check_keyring(name, &account, &keyring)?;
    Ok(Session {
        name: name.to_string(),
        keyring,
    })
}

/// Checks an opened keyring holds the keys its account record publishes.
fn check_keyring(name: &str, account: &Account, keyring: &Keyring) -> Result<(), AccountError> {
    if Identity::from_secret(keyring.identity).owner() != account.owner()
        || box_public(keyring) != account.body.box_key
    {
        return Err(AccountError::Forged {
            name: name.to_string(),
            why: "its keyring does not hold the keys it publishes".into(),
        });
    }
    Ok(())
}

/// Re-seals the keyring of the logged-in account under `new` (checking
/// `old` opens the current one); the old password stops working.
pub async fn change_password<S: BlockStore>(
    store: &S,
    session: &Session,
    old: &[u8],
    new: &[u8],
) -> Result<(), AccountError> {
    super::keyring::check_password(new)?;
    let name = session.name.as_str();
    let account = fetch(store, name)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))?;
    let keyring = match open_keyring(&account.body.keyring, name, old) {
        Ok(k) => k,
        Err(KeyringError::WrongPassword) => return Err(AccountError::WrongPassword),
        Err(e) => return Err(e.into()),
    };
    check_keyring(name, &account, &keyring)?;
    if keyring != session.keyring {
        return Err(AccountError::Forged {
            name: name.to_string(),
            why: "it holds other keys than this machine's session".into(),
        });
    }
    // Never lower the parameters; raise old ones to today's default.
    let old_params = account.body.keyring.params;
    let params = KdfParams {
        m_kib: old_params.m_kib.max(KdfParams::DEFAULT.m_kib),
        t: old_params.t.max(KdfParams::DEFAULT.t),
        p: old_params.p.max(KdfParams::DEFAULT.p),
    };
    let body = AccountBody {
        keyring: seal_keyring(&keyring, name, new, params)?,
        ..account.body.clone()
    };
    let seq = account.record.seq;
    let record = session.identity().sign(
        &crate::account_record::record_name(name),
        seq + 1,
        Some(body.encode()),
    );
    // The key's owner node judges the swap. One that has just joined may
    // not hold the record yet: it is handed the versions the replicas
    // hold, and the swap is tried again. A newer version is another
    // machine's change.
    let key = record.key();
    for attempt in 0..CAS_ATTEMPTS {
        match store
            .put_record(record.clone(), Some(seq), Durability::Now)
            .await
        {
            Ok(()) => return Ok(()),
            Err(FsError::Conflict(current)) if current.unwrap_or(0) < seq => {
                retry::after_lost_swap(store, key, current, seq, attempt).await;
            }
            Err(FsError::Conflict(_)) => return Err(AccountError::Changed(name.to_string())),
            Err(e) => return Err(AccountError::Store(e)),
        }
    }
    Err(AccountError::Changed(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::mem_store::MemStore;

    const PW: &[u8] = b"correct horse battery";

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn a_record_whose_keyring_does_not_match_its_keys_is_refused() {
        rt().block_on(async {
            let store = MemStore::default();
            // A record that passes every storage rule, but publishes a box
            // key its keyring does not hold (a forger's, to read shares).
            let kr = new_keyring(None);
            let body = AccountBody {
                name: "eve".into(),
                box_key: [7; 32],
                keyring: seal_keyring(&kr, "eve", PW, KdfParams::FLOOR).unwrap(),
                created_ms: 0,
            };
            let rec = Identity::from_secret(kr.identity).sign(
                &crate::account_record::record_name("eve"),
                1,
                Some(body.encode()),
            );
            store
                .put_record(rec, Some(0), Durability::Now)
                .await
                .unwrap();
            let e = login(&store, "eve", PW).await.unwrap_err();
            assert!(matches!(e, AccountError::Forged { .. }), "{e}");
            assert!(e.to_string().contains("damaged or forged"), "{e}");
        });
    }

    #[test]
    fn create_login_and_change_the_password() {
        rt().block_on(async {
            let store = MemStore::default();
            let kr = new_keyring(Some([7; 32]));
            let a = create(&store, "alice", PW, &kr, KdfParams::FLOOR)
                .await
                .unwrap();
            assert_eq!(a.owner(), Identity::from_secret([7; 32]).owner());
            // A second create of the name, with any key, is refused.
            let other = new_keyring(None);
            assert!(matches!(
                create(&store, "alice", PW, &other, KdfParams::FLOOR).await,
                Err(AccountError::Taken(_))
            ));
            let s = login(&store, "alice", PW).await.unwrap();
            assert!(s.keyring == kr);
            // Wrong password and unknown name: the same error.
            for (n, p) in [("alice", &b"wrong"[..]), ("nobody", PW), ("Bad Name", PW)] {
                let e = login(&store, n, p).await.unwrap_err();
                assert!(matches!(e, AccountError::LoginFailed), "{n}: {e}");
                assert_eq!(e.to_string(), "login failed: wrong name or password");
            }
            assert!(matches!(
                change_password(&store, &s, b"wrong", b"new password").await,
                Err(AccountError::WrongPassword)
            ));
            change_password(&store, &s, PW, b"new password")
                .await
                .unwrap();
            assert!(matches!(
                login(&store, "alice", PW).await,
                Err(AccountError::LoginFailed)
            ));
            let s2 = login(&store, "alice", b"new password").await.unwrap();
            assert!(s2.keyring == kr);
            // Parameters are raised to the default, never lowered.
            let a2 = fetch(&store, "alice").await.unwrap().unwrap();
            assert_eq!(a2.body.keyring.params, KdfParams::DEFAULT);
            assert_eq!(a2.record.seq, 2);
        });
    }
}
