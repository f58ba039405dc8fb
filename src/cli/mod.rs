//! The command line: clap definitions and the client commands.
//!
//! Every client command talks to one node (`--peer`; default the ticket's
//! address, else the address the local node recorded, else
//! [`DEFAULT_ADDR`]) over a secure link, and lets that node route the
//! request. The network secret comes from `--ticket` / `PEERSTORE_TICKET`
//! or `--ticket-file` / `PEERSTORE_TICKET_FILE` ([`tickets`]), else from
//! the data directory of a node on this machine (`--data`).
//! The file commands run a vault over [`RemoteStore`], which sends every
//! operation to that node's client API.

mod accounts;
mod client;
mod error;
mod files;
mod network;
pub mod qr;
mod remote_store;
mod ring_walk;
mod sharing;
mod status;
pub mod tickets;
mod versions;

pub use accounts::{
    Who, load_session, resolve_identity, run_login, run_logout, run_passwd, run_user_create,
    run_whoami,
};
pub use client::{call_client, run_block_get, run_block_put, run_lookup};
pub use error::CliError;
pub use files::{open_vault, run_backup, run_get, run_ls, run_put, run_restore, run_rm};
pub use network::{run_init, run_invite};
pub use remote_store::RemoteStore;
pub use ring_walk::{run_ring, walk_ring};
pub use sharing::{Place, place, run_share, run_shares, run_unshare, with_place};
pub use status::{run_pin, run_status};
pub use tickets::join_address;
pub use versions::{run_trash_empty, run_trash_ls, run_trash_restore, run_versions};

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The address a node listens on when `--listen` is not given, and the
/// address client commands use when `--peer` is not given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7400";

/// PeerStore: a peer-to-peer, end-to-end encrypted file store on a Chord ring.
#[derive(Debug, Parser)]
#[command(
    name = "peerstore",
    version = crate::version::long_version(),
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a ring node (until SIGINT/SIGTERM, then leave gracefully).
    Node(NodeArgs),
    /// Create a new network (its secret) in a data directory.
    Init {
        /// Data directory of the node that will start the network.
        #[arg(long, default_value_os_t = default_data_dir())]
        data: PathBuf,
    },
    /// Print a join ticket for the network of a data directory.
    Invite {
        /// Data directory of a member node.
        #[arg(long, default_value_os_t = default_data_dir())]
        data: PathBuf,
        /// Member address to put in the ticket (default: the address the
        /// node in --data advertises).
        #[arg(long)]
        addr: Option<String>,
        /// Also print the ticket as a QR code (for the terminal: light
        /// modules drawn with block characters, for dark backgrounds).
        #[arg(long)]
        qr: bool,
    },
    /// Store and fetch raw blocks.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Find the node that owns a key.
    Lookup {
        #[command(flatten)]
        peer: PeerArg,
        /// Key to look up (64 hex digits).
        key: String,
    },
    /// Copy a local file into the store at PATH (as seen in the mount).
    Put {
        #[command(flatten)]
        vault: VaultArgs,
        /// Local file to copy.
        local: PathBuf,
        /// Store path, e.g. /photos/a.jpg.
        path: String,
    },
    /// Copy the file at PATH out of the store.
    Get {
        #[command(flatten)]
        vault: VaultArgs,
        /// Store path.
        path: String,
        /// Local file to write.
        local: PathBuf,
        /// Copy this kept version instead of the current content (its
        /// number from `peerstore versions`).
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// List the versions of the file at PATH: the ones overwrites kept,
    /// oldest first, then the current one.
    Versions {
        #[command(flatten)]
        vault: VaultArgs,
        /// Store path.
        path: String,
        /// Print a JSON list of objects (`version`, `time`, `size`,
        /// `machine`, `current`) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Deleted files: list, restore, empty.
    #[command(subcommand)]
    Trash(TrashCommand),
    /// List a directory of the store (default: the root).
    Ls {
        #[command(flatten)]
        vault: VaultArgs,
        /// Store path.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Remove a file, link or empty directory (-r: a whole tree).
    Rm {
        #[command(flatten)]
        vault: VaultArgs,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        /// Store path.
        path: String,
    },
    /// Copy a local directory tree into the store (default: the root).
    Backup {
        #[command(flatten)]
        vault: VaultArgs,
        /// Local directory.
        local_dir: PathBuf,
        /// Store path to copy into.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a store directory tree out to a local directory.
    Restore {
        #[command(flatten)]
        vault: VaultArgs,
        /// Store path.
        path: String,
        /// Local directory to create or fill.
        dest_dir: PathBuf,
    },
    /// Walk the ring and print every member.
    Ring {
        #[command(flatten)]
        peer: PeerArg,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a node's ring contact and its folder's open conflict copies,
    /// offline journal and pinned paths.
    Status {
        #[command(flatten)]
        peer: PeerArg,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Keep a subtree of the node's mounted folder in this machine's
    /// caches, so it reads while the ring is out of reach.
    Pin {
        #[command(flatten)]
        peer: PeerArg,
        /// Path in the folder, e.g. /photos.
        path: String,
    },
    /// Stop keeping a pinned subtree (its data may leave the caches).
    Unpin {
        #[command(flatten)]
        peer: PeerArg,
        /// A path given to `pin`.
        path: String,
    },
    /// Accounts on the ring.
    #[command(subcommand)]
    User(UserCommand),
    /// Share a folder of your tree with another account: it sees it as
    /// /shared/YOU/NAME in its paths and its mount.
    Share {
        #[command(flatten)]
        peer: PeerArg,
        /// Folder to share, e.g. /photos.
        path: String,
        /// The account to share it with.
        #[arg(long, value_name = "USER")]
        with: String,
        /// Let it write too (storage nodes accept its versions of the
        /// folder's records by your grant).
        #[arg(long)]
        write: bool,
    },
    /// Revoke an account's access to a folder you share: the folder moves
    /// to new names and keys (each file's content gets a new key at its
    /// next write, or at once with --eager), so nothing written afterwards
    /// is readable with what it held; the other grantees get the new keys.
    Unshare {
        #[command(flatten)]
        peer: PeerArg,
        /// The shared folder.
        path: String,
        /// The account to revoke.
        #[arg(long, value_name = "USER")]
        from: String,
        /// Re-encrypt the files' content now, not at each file's next
        /// write.
        #[arg(long)]
        eager: bool,
    },
    /// List what you share with whom, and what is shared with you.
    Shares {
        #[command(flatten)]
        peer: PeerArg,
        /// Print one JSON object (`given`: `path`, `to`, `time_ms`;
        /// `received`: `from`, `name`, `path`, `write`) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Log this machine in as an account: the node's mount and the client
    /// commands then act as it (the password is read from the terminal).
    Login {
        #[command(flatten)]
        peer: PeerArg,
        /// Account name.
        name: String,
        /// Read the password from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Log this machine out (remove its session; a running node keeps
    /// its keys until it stops).
    Logout,
    /// Show whose tree the commands act on: an identity file, the account
    /// logged in, or this machine's own identity.
    Whoami {
        #[command(flatten)]
        identity: IdentityArg,
    },
    /// Change the password of the account logged in on this machine: its
    /// keyring is sealed again; the old password stops working, the tree
    /// is unchanged.
    Passwd {
        #[command(flatten)]
        peer: PeerArg,
        /// Read the current password from this file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Read the new password from this file.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account on the ring (first come, first served) and log
    /// this machine in as it. The password is read twice from the
    /// terminal.
    Create {
        #[command(flatten)]
        peer: PeerArg,
        /// Account name: 1 to 32 of a-z 0-9 . _ -, starting with a letter
        /// or digit.
        name: String,
        /// Make this existing identity file the account's key, so its tree
        /// becomes the account's (default: a new key, an empty tree).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Read the password from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// List the files in the trash, oldest deletion first.
    Ls {
        #[command(flatten)]
        vault: VaultArgs,
        /// Print a JSON list of objects (`path`, `deleted`, `size`,
        /// `machine`) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Put the file last deleted from PATH back (with its versions),
    /// creating missing directories.
    Restore {
        #[command(flatten)]
        vault: VaultArgs,
        /// The path it was deleted from.
        path: String,
        /// Restore it at this path instead (e.g. when PATH is taken).
        #[arg(long, value_name = "PATH")]
        to: Option<String>,
    },
    /// Delete every file in the trash for good, and free its space.
    Empty {
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Which node a client command talks to, and the network secret it proves.
#[derive(Debug, Args)]
pub struct PeerArg {
    /// Address of any ring node [default: the ticket's, else the local
    /// node's, else 127.0.0.1:7400].
    #[arg(long, env = "PEERSTORE_PEER")]
    pub peer: Option<String>,
    /// Join ticket of the network (from `peerstore invite`), or @FILE for
    /// the ticket in FILE [default: the network secret in --data]. Every
    /// user of the machine sees a command line: prefer a file.
    #[arg(long, env = "PEERSTORE_TICKET", hide_env_values = true)]
    pub ticket: Option<String>,
    /// Read the join ticket from FILE (mode 0600: refused if group or
    /// others may read it); an empty file counts as no ticket.
    #[arg(long, value_name = "FILE", env = "PEERSTORE_TICKET_FILE")]
    pub ticket_file: Option<PathBuf>,
    /// Data directory of a node on this machine, whose network secret and
    /// address are used when no ticket is given.
    #[arg(long = "data", default_value_os_t = default_data_dir())]
    pub data: PathBuf,
}

/// A node to talk to and the keys to open the link with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node's address.
    pub addr: String,
    /// A throwaway static key and the network secret.
    pub keys: crate::net::LinkKeys,
}

impl PeerArg {
    /// Resolves the node address and the network secret.
    pub fn target(&self) -> Result<Target, CliError> {
        let given = tickets::given_ticket(self.ticket.as_deref(), self.ticket_file.as_deref())?;
        let (secret, ticket_addr) = match given {
            Some(t) => (t.secret, Some(t.addr)),
            None => match crate::network::load_secret(&self.data)? {
                Some(s) => (s, None),
                None => {
                    return Err(CliError::Invalid(format!(
                        "no network secret: give --ticket-file FILE or --ticket TICKET (from `peerstore invite`), set PEERSTORE_TICKET_FILE or PEERSTORE_TICKET, or --data DIR of a node on this machine ({} has none)",
                        self.data.display()
                    )));
                }
            },
        };
        let addr = self
            .peer
            .clone()
            .or(ticket_addr)
            .or_else(|| crate::network::load_address(&self.data))
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        Ok(Target {
            addr,
            keys: crate::net::LinkKeys {
                key: crate::net::StaticKey::generate(),
                secret,
            },
        })
    }
}

/// Which node a file command talks to, and whose tree it works on.
#[derive(Debug, Args)]
pub struct VaultArgs {
    #[command(flatten)]
    pub peer: PeerArg,
    #[command(flatten)]
    pub identity: IdentityArg,
}

impl VaultArgs {
    /// The vault of this identity through this node.
    pub fn open(&self) -> Result<std::sync::Arc<crate::fs::Vault<RemoteStore>>, CliError> {
        open_vault(&self.peer.target()?, self.identity.resolve()?)
    }
}

/// Which identity owns the file tree.
#[derive(Debug, Args)]
pub struct IdentityArg {
    /// Identity key file; it must exist [default: the account logged in
    /// with `peerstore login`, else this machine's own identity, created
    /// on first use].
    #[arg(long, env = "PEERSTORE_IDENTITY")]
    pub identity: Option<PathBuf>,
}

impl IdentityArg {
    /// The identity to act as ([`resolve_identity`]), created if it is
    /// this machine's own and there is none yet.
    pub fn resolve(&self) -> Result<crate::fs::Identity, CliError> {
        Ok(self.resolve_who()?.0)
    }

    /// [`IdentityArg::resolve`], and whose identity it is.
    pub fn resolve_who(&self) -> Result<(crate::fs::Identity, Who), CliError> {
        resolve_identity(self.identity.as_deref(), true)?
            .ok_or_else(|| CliError::Invalid("no identity".into()))
    }
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Store FILE (at most 1 MiB) as a block owned by the identity;
    /// prints its key.
    Put {
        #[command(flatten)]
        peer: PeerArg,
        #[command(flatten)]
        identity: IdentityArg,
        /// File to store.
        file: PathBuf,
    },
    /// Fetch the block KEY to stdout or to a file.
    Get {
        #[command(flatten)]
        peer: PeerArg,
        /// Block key (64 hex digits).
        key: String,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
}

/// Options of `peerstore node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub listen: String,
    /// Address other nodes reach this one at (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Data directory (node key and stored blocks).
    #[arg(long, default_value_os_t = default_data_dir())]
    pub data: PathBuf,
    /// Join ticket (from `peerstore invite`) of the ring to join, or @FILE
    /// for the ticket in FILE; a node whose data directory already holds
    /// the network secret (or that is given --ticket-file) may give a
    /// member's address instead. Without it a new ring starts (and, if the
    /// data directory has no network yet, a new network).
    #[arg(long, value_name = "TICKET")]
    pub join: Option<String>,
    /// Read the join ticket from FILE (mode 0600: refused if group or
    /// others may read it) and join through the member it names (or
    /// --join ADDR). An empty file counts as no ticket: the data directory
    /// must then hold the network secret already.
    #[arg(long, value_name = "FILE")]
    pub ticket_file: Option<PathBuf>,
    /// Copies kept of every block and record.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Successor list length (at least --replicas).
    #[arg(long, default_value_t = 8)]
    pub successors: usize,
    /// Seconds between repair passes.
    #[arg(long, default_value_t = 5)]
    pub repair_secs: u64,
    /// Seconds between the mount's orphan checks (blocks of this owner
    /// that no version refers to are released).
    #[arg(long, default_value_t = 6 * 3600)]
    pub orphan_check_secs: u64,
    /// Blocks claimed less than this many seconds ago are never taken for
    /// orphans (they may belong to a save under way).
    #[arg(long, default_value_t = 24 * 3600)]
    pub orphan_grace_secs: u64,
    /// How long the versions an overwrite replaces and the files in the
    /// trash are kept (e.g. 30d, 12h, 90s; 0 keeps none: overwrites and
    /// deletes free their space at once). The orphan check frees them
    /// after that.
    #[arg(long, default_value = "30d", value_parser = crate::fs::history::parse_retention)]
    pub retention: std::time::Duration,
    /// Write-back (experimental): the mount's writes, `close` and `fsync`
    /// return once they are in the journal on local disk, which survives a
    /// crash; the journal sends them to the ring at once, and before the
    /// node leaves. Other machines see a change once it is sent. Without
    /// it (write-through), a write is on the ring when it returns.
    #[arg(long)]
    pub write_back: bool,
    /// Seconds added to this machine's clock for the times the node
    /// stamps (tests of machines whose clocks disagree).
    #[arg(long, default_value_t = 0, hide = true, allow_hyphen_values = true)]
    pub clock_skew_secs: i64,
    /// Stabilize period in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub stabilize_ms: u64,
    /// Timeout of every call to a peer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub rpc_timeout_ms: u64,
    /// Time a new connection has to finish the secure-link handshake, in
    /// milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub handshake_timeout_ms: u64,
    /// Mount the file tree at this folder (unmounting it stops the node).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArg,
    /// Local block cache size in bytes (with --mount).
    #[arg(long, default_value_t = crate::cache::DEFAULT_CACHE_BYTES)]
    pub cache_size: u64,
    /// Let other local users use the mounted folder (FUSE `allow_other`),
    /// with permissions checked by mode and owner as on a local disk
    /// (a node not run by root needs `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Serve the dashboard (`/`), `/metrics` (Prometheus) and
    /// `/api/status` at this address, e.g. 127.0.0.1:7480 (loopback only
    /// unless --http-allow-remote).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Let --http listen on an address other machines can reach (they
    /// read the ring's layout and this node's counts).
    #[arg(long, requires = "http")]
    pub http_allow_remote: bool,
}

/// `$XDG_DATA_HOME/peerstore`, or `~/.local/share/peerstore`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("peerstore");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/peerstore"),
        None => PathBuf::from("peerstore-data"),
    }
}
