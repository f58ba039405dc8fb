//! Writer grants: an owner's signed word that another key may write the
//! owner's records of one shared folder, and the signature layouts of the
//! record versions that use them (checked in [`crate::record`], judged
//! against held versions in [`crate::store`]).
//!
//! A record version's `sig` field is one of:
//! - 64 bytes: the owner's signature (every version before sharing);
//! - 64 + 16 bytes, [`Sig::Scoped`]: the owner's signature ‖ a scope, the
//!   random 16-byte tag of a folder shared with write access. The
//!   signature covers the scope: a version of a record in that folder;
//! - 64 + 16 + a [`Grant`], [`Sig::Granted`]: a writer's signature ‖ the
//!   scope ‖ the owner's grant to that writer for that scope.
//!
//! Storage nodes keep a writer's version only if the grant verifies under
//! the record's owner, names the writer whose signature the version
//! carries and the version's scope, and every version they hold of the
//! record carries that scope too. Revoking a writer is retagging the
//! folder's records with a new scope (and granting it to the others): the
//! old grant then matches no held version, so every node refuses it.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Domain separation of a grant's signature.
const GRANT_CONTEXT: &[u8] = b"peerstore grant v1";
/// A scope: the tag of one shared folder's records.
pub type Scope = [u8; 16];

/// An owner's grant: `writer` may write the owner's records tagged `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The writer's ed25519 public key.
    pub writer: [u8; 32],
    /// The folder's scope.
    pub scope: Scope,
    /// The owner's signature over the context, its key, the writer and
    /// the scope.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

fn grant_bytes(owner: &[u8; 32], writer: &[u8; 32], scope: &Scope) -> Vec<u8> {
    [GRANT_CONTEXT, owner, writer, scope].concat()
}

impl Grant {
    /// The owner `owner`'s grant to `writer` for `scope`.
    pub fn sign(owner: &SigningKey, writer: [u8; 32], scope: Scope) -> Grant {
        let o = owner.verifying_key().to_bytes();
        Grant {
            writer,
            scope,
            sig: owner
                .sign(&grant_bytes(&o, &writer, &scope))
                .to_bytes()
                .to_vec(),
        }
    }

    /// Whether `owner` signed this grant.
    pub fn verify(&self, owner: &[u8; 32]) -> bool {
        let (Ok(vk), Ok(sig)) = (
            ed25519_dalek::VerifyingKey::from_bytes(owner),
            Signature::from_slice(&self.sig),
        ) else {
            return false;
        };
        vk.verify_strict(&grant_bytes(owner, &self.writer, &self.scope), &sig)
            .is_ok()
    }
}

/// A version's `sig` field, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sig {
    /// The owner's signature.
    Owner([u8; 64]),
    /// The owner's signature, over the version and a scope.
    Scoped([u8; 64], Scope),
    /// A writer's signature over the version and the scope, with the
    /// owner's grant.
    Granted([u8; 64], Scope, Grant),
}

impl Sig {
    /// Parses a `sig` field; `None` if it is none of the layouts.
    pub fn parse(bytes: &[u8]) -> Option<Sig> {
        let sig: [u8; 64] = bytes.get(..64)?.try_into().ok()?;
        let rest = &bytes[64..];
        if rest.is_empty() {
            return Some(Sig::Owner(sig));
        }
        let scope: Scope = rest.get(..16)?.try_into().ok()?;
        let rest = &rest[16..];
        if rest.is_empty() {
            return Some(Sig::Scoped(sig, scope));
        }
        match postcard::take_from_bytes::<Grant>(rest) {
            Ok((g, [])) => Some(Sig::Granted(sig, scope, g)),
            _ => None,
        }
    }

    /// The field's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Sig::Owner(s) => s.to_vec(),
            Sig::Scoped(s, scope) => [&s[..], scope].concat(),
            Sig::Granted(s, scope, g) => {
                let mut out = [&s[..], scope].concat();
                out.extend(postcard::to_stdvec(g).unwrap_or_default());
                out
            }
        }
    }

    /// The scope the version is tagged with, if any.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Sig::Owner(_) => None,
            Sig::Scoped(_, s) | Sig::Granted(_, s, _) => Some(*s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_layouts() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let o = owner.verifying_key().to_bytes();
        let g = Grant::sign(&owner, [2; 32], [3; 16]);
        assert!(g.verify(&o));
        assert!(!g.verify(&[9; 32]));
        let mut other = g.clone();
        other.scope = [4; 16];
        assert!(
            !other.verify(&o),
            "a grant for one scope is not one for another"
        );
        for s in [
            Sig::Owner([5; 64]),
            Sig::Scoped([5; 64], [6; 16]),
            Sig::Granted([5; 64], [6; 16], g.clone()),
        ] {
            assert_eq!(Sig::parse(&s.encode()), Some(s.clone()));
        }
        assert_eq!(Sig::parse(&[0; 63]), None);
        assert_eq!(Sig::parse(&[0; 70]), None);
        let mut junk = Sig::Granted([5; 64], [6; 16], g).encode();
        junk.push(0);
        assert_eq!(Sig::parse(&junk), None);
    }
}
