//! User accounts: an account record on the ring holds a user's public keys
//! and their keyring sealed under the password, so the user logs in from
//! any machine with name and password ([`records`]); a logged-in machine
//! keeps a device session ([`session`]). Accounts share folders with each
//! other through offers sealed to the recipient's inbox ([`shares`]). The record kind and the rules
//! storage nodes apply to it are in [`crate::account_record`].

pub mod keyring;
pub mod records;
pub mod session;
pub mod shares;
