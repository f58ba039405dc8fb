//! User accounts (issue 12, under way): what an account record holds and
//! how its secrets are kept. So far: the keyring sealed under a key
//! derived from the password ([`keyring`]). The account record, login,
//! storage-node checks and sharing build on it.

pub mod keyring;
