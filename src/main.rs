//! `peerstore`: the node and the command-line client.

use clap::Parser;
use peerstore::cache::records::{DEFAULT_RECORD_CACHE_BYTES, RecordCache};
use peerstore::cache::{BlockCache, CachedStore};
use peerstore::cli::{self, BlockCommand, Cli, Command, NodeArgs, TrashCommand, UserCommand};
use peerstore::fs::Vault;
use peerstore::journal::JournalStore;
use peerstore::journal::disk::Journal;
use peerstore::node::pins::Pins;
use peerstore::node::{self, NodeConfig, ring::Timers};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static HEAP: node::heap::NodeHeap = node::heap::NodeHeap::new();

/// jemalloc reads its options from this symbol at its start.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; node::heap::JEMALLOC_CONF.len()] = node::heap::JEMALLOC_CONF;

/// How long a leaving node waits for its mount's journal to reach the ring.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    peerstore::node::heap::limit_arenas();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) => "info",
        _ => {
            // A client command piped into `head` ends quietly when the pipe
            // closes, as Unix tools do (a node keeps SIGPIPE ignored: its
            // sockets report EPIPE instead).
            // SAFETY: setting a signal's disposition to the default, before
            // any thread is started.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            "warn"
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Node(args) => run_node(args).await?,
            Command::Init { data } => cli::run_init(&data)?,
            Command::Invite { data, addr, qr } => cli::run_invite(&data, addr.as_deref(), qr)?,
            Command::Block(BlockCommand::Put {
                peer,
                identity,
                file,
            }) => cli::run_block_put(&peer.target()?, &identity.resolve()?, &file).await?,
            Command::Block(BlockCommand::Get { peer, key, output }) => {
                cli::run_block_get(&peer.target()?, &key, output.as_deref()).await?
            }
            Command::Lookup { peer, key } => cli::run_lookup(&peer.target()?, &key).await?,
            Command::Ring { peer, json } => cli::run_ring(&peer.target()?, json).await?,
            Command::Status { peer, json } => cli::run_status(&peer.target()?, json).await?,
            Command::Pin { peer, path } => cli::run_pin(&peer.target()?, &path, true).await?,
            Command::Unpin { peer, path } => cli::run_pin(&peer.target()?, &path, false).await?,
            Command::Put { vault, local, path } => {
                cli::with_place(&vault, &path, true, |v, p| async move {
                    cli::run_put(&v, &local, &p).await
                })
                .await?
            }
            Command::Get {
                vault,
                path,
                local,
                version,
            } => {
                cli::with_place(&vault, &path, false, |v, p| async move {
                    cli::run_get(&v, &p, &local, version).await
                })
                .await?
            }
            Command::Versions { vault, path, json } => {
                cli::with_place(&vault, &path, false, |v, p| async move {
                    cli::run_versions(&v, &p, json).await
                })
                .await?
            }
            Command::Trash(TrashCommand::Ls { vault, json }) => {
                cli::run_trash_ls(&vault.open()?, json).await?
            }
            Command::Trash(TrashCommand::Restore { vault, path, to }) => {
                cli::run_trash_restore(&vault.open()?, &path, to.as_deref()).await?
            }
            Command::Trash(TrashCommand::Empty { vault }) => {
                cli::run_trash_empty(&vault.open()?).await?
            }
            Command::User(UserCommand::Create {
                peer,
                name,
                identity,
                password_file,
            }) => {
                cli::run_user_create(
                    &peer.target()?,
                    &name,
                    identity.as_deref(),
                    password_file.as_deref(),
                )
                .await?
            }
            Command::Login {
                peer,
                name,
                password_file,
            } => cli::run_login(&peer.target()?, &name, password_file.as_deref()).await?,
            Command::Logout => cli::run_logout()?,
            Command::Whoami { identity } => cli::run_whoami(identity.identity.as_deref())?,
            Command::Passwd {
                peer,
                password_file,
                new_password_file,
            } => {
                cli::run_passwd(
                    &peer.target()?,
                    password_file.as_deref(),
                    new_password_file.as_deref(),
                )
                .await?
            }
            Command::Ls { vault, path } => {
                cli::with_place(&vault, &path, false, |v, p| async move {
                    cli::run_ls(&v, &p).await
                })
                .await?
            }
            Command::Share {
                peer,
                path,
                with,
                write,
            } => cli::run_share(&peer.target()?, &path, &with, write).await?,
            Command::Unshare {
                peer,
                path,
                from,
                eager,
            } => cli::run_unshare(&peer.target()?, &path, &from, eager).await?,
            Command::Shares { peer, json } => cli::run_shares(&peer.target()?, json).await?,
            Command::Rm {
                vault,
                recursive,
                path,
            } => {
                cli::with_place(&vault, &path, true, |v, p| async move {
                    cli::run_rm(&v, &p, recursive).await
                })
                .await?
            }
            Command::Backup {
                vault,
                local_dir,
                path,
            } => {
                cli::with_place(&vault, &path, true, |v, p| async move {
                    cli::run_backup(&v, &local_dir, &p).await
                })
                .await?
            }
            Command::Restore {
                vault,
                path,
                dest_dir,
            } => {
                cli::with_place(&vault, &path, false, |v, p| async move {
                    cli::run_restore(&v, &p, &dest_dir).await
                })
                .await?
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the data directory's lock file (`DATA/node.lock`, an advisory
/// `flock`), so a second node on the same directory stops with a clear
/// error instead of writing the same logs and caches. The kernel drops the
/// lock when the process ends, however it ends.
fn lock_data_dir(data: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let path = data.join("node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another node is running with data directory {} (it holds {})",
            data.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("lock {}: {e}", path.display())
        }
    }
}

/// Runs a node until SIGINT or SIGTERM (or, with `--mount`, until its
/// folder is unmounted), then leaves the ring gracefully.
async fn run_node(a: NodeArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Install the handlers first, so a signal during start-up is not fatal.
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| anyhow::anyhow!("signal handler: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("signal handler: {e}"))?;
    // Held until the process ends: one node per data directory.
    let _data_lock = lock_data_dir(&a.data)?;
    if a.clock_skew_secs != 0 {
        log::warn!(
            "this node's clock runs {} s off (--clock-skew-secs)",
            a.clock_skew_secs
        );
        peerstore::fs::object::set_clock_skew(a.clock_skew_secs);
    }
    if let Some(dir) = &a.mount {
        // A crashed earlier run may have left a dead mount on our folder.
        if peerstore::mount::clear_stale_mount(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        {
            log::warn!("cleared a stale mount at {}", dir.display());
        }
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    let (identity, session) = match &a.mount {
        Some(dir) => {
            let (id, who) = a.identity.resolve_who()?;
            log::info!("mounting the tree of {who} at {}", dir.display());
            // Acting as an account: its shares show under /shared.
            let session = match who {
                cli::Who::Account(_) => cli::load_session()?,
                _ => None,
            };
            (Some(id), session)
        }
        None => (None, None),
    };
    let join = cli::join_address(&a.data, a.join.as_deref(), a.ticket_file.as_deref())?;
    raise_fd_limit();
    let cfg = NodeConfig {
        listen: a.listen,
        advertise: a.advertise,
        data: a.data.clone(),
        join,
        replicas: a.replicas,
        succ_list: a.successors,
        timers: Timers {
            stabilize: Duration::from_millis(a.stabilize_ms.max(10)),
            ..Timers::default()
        },
        repair_every: Duration::from_secs(a.repair_secs.max(1)),
        rpc_timeout: Duration::from_millis(a.rpc_timeout_ms.max(10)),
        server: peerstore::net::ServerConfig {
            handshake_timeout: Duration::from_millis(a.handshake_timeout_ms.max(10)),
            ..peerstore::net::ServerConfig::default()
        },
    };
    let running = tokio::select! {
        r = node::start(cfg) => r.map_err(|e| anyhow::anyhow!("{e}"))?,
        _ = term.recv() => anyhow::bail!("terminated while starting"),
        _ = int.recv() => anyhow::bail!("interrupted while starting"),
    };
    println!(
        "node {} listening on {}",
        running.node.ring().me().id,
        running.addr
    );
    // Once started: a node refused at start-up says only why.
    match HEAP.is_split() {
        true => log::info!(
            "heap: jemalloc below {} KiB, glibc above (a mounting node)",
            node::heap::SPLIT_AT >> 10
        ),
        false => log::info!("heap: glibc"),
    }
    // Ends the mount's background work (the orphan check) before leaving.
    let (orphan_stop_tx, orphan_stop) = tokio::sync::watch::channel(false);
    let mut shares = None;
    let mut journal_store = None;
    let mounted = match (&a.mount, identity) {
        (Some(dir), Some(identity)) => {
            let cache = Arc::new(
                BlockCache::open(&a.data.join("cache"), a.cache_size)
                    .map_err(|e| anyhow::anyhow!("block cache in {}: {e}", a.data.display()))?,
            );
            let journal = Journal::open(&a.data.join("journal"))
                .map_err(|e| anyhow::anyhow!("journal in {}: {e}", a.data.display()))?;
            let records = RecordCache::open(&a.data.join("records"), DEFAULT_RECORD_CACHE_BYTES)
                .map_err(|e| anyhow::anyhow!("record cache in {}: {e}", a.data.display()))?;
            if !journal.is_empty() {
                let size = journal.size();
                log::info!(
                    "journal: {} writes ({} bytes) wait for the ring",
                    size.entries,
                    size.bytes
                );
            }
            let mut store = JournalStore::new(
                CachedStore::new(running.node.dht_client(), Arc::clone(&cache))
                    .with_local(running.node.core.store.clone()),
                journal,
                records,
                running.node.contact(),
            )
            .with_local(running.node.core.store.clone());
            if a.write_back {
                store = store.with_write_back(peerstore::journal::WriteBack::default());
            }
            let store = Arc::new(store);
            journal_store = Some(Arc::clone(&store));
            let vault = Vault::new(Arc::clone(&store), identity);
            vault.set_retention(a.retention);
            // Conflict copies name the machine: its host name and the
            // start of its node ID (two nodes may share a host name).
            let id = running.node.ring().me().id.to_string();
            vault.conflicts.set_machine(&format!(
                "{}-{}",
                peerstore::fs::divergence::host_label(),
                &id[..id.len().min(6)]
            ));
            let check = peerstore::node::orphans::OrphanCheck {
                every: Duration::from_secs(a.orphan_check_secs.max(1)),
                grace: Duration::from_secs(a.orphan_grace_secs),
            };
            tokio::spawn(peerstore::node::orphans::orphan_loop(
                running.node.dht_client(),
                Arc::clone(&vault),
                check,
                orphan_stop.clone(),
            ));
            let opts = peerstore::mount::MountOpts {
                allow_other: a.allow_other,
            };
            tokio::spawn(peerstore::journal::replay_loop(
                Arc::clone(&store),
                orphan_stop.clone(),
            ));
            let levels: peerstore::node::health::MountLevelsHook = {
                let (store, vault, cache) =
                    (Arc::clone(&store), Arc::clone(&vault), Arc::clone(&cache));
                Box::new(move || {
                    let j = store.journal_size();
                    let c = cache.stats();
                    peerstore::node::health::MountLevels {
                        journal_entries: j.entries,
                        journal_bytes: j.bytes,
                        uploads_in_flight: vault.uploads_in_flight() as u64,
                        cache_bytes: c.bytes,
                        cache_capacity: cache.capacity(),
                    }
                })
            };
            let _ = running.node.core.mount_levels.set(levels);
            let pins = Arc::new(Pins::load(&a.data, Arc::clone(&vault), cache));
            tokio::spawn(peerstore::node::pins::refresh_loop(
                Arc::clone(&pins),
                orphan_stop.clone(),
            ));
            let p = Arc::clone(&pins);
            let _ = running.node.core.pin_hook.set(Box::new(move |path, pin| {
                let p = Arc::clone(&p);
                Box::pin(async move {
                    if pin {
                        p.pin(&path).await
                    } else {
                        p.unpin(&path).await
                    }
                })
            }));
            let local: peerstore::node::status::LocalReport = {
                let (store, pins) = (Arc::clone(&store), Arc::clone(&pins));
                Arc::new(move || {
                    let j = store.journal_size();
                    peerstore::wire::LocalState {
                        online: store.online(),
                        journal_entries: j.entries,
                        journal_bytes: j.bytes,
                        pinned: pins.paths(),
                        pinned_bytes: pins.bytes(),
                    }
                })
            };
            running
                .node
                .set_mount(Arc::clone(&vault), dir.display().to_string(), local);
            shares = session.clone().map(|s| shares_hook(Arc::clone(&store), s));
            let shared = session.map(|s| {
                Arc::new(peerstore::mount::shared::SharedTrees::new(
                    Arc::clone(&store),
                    s,
                ))
            });
            let m = peerstore::mount::session::mount_with(
                vault,
                tokio::runtime::Handle::current(),
                dir,
                opts,
                shared,
            )
            .map_err(|e| anyhow::anyhow!("cannot mount {}: {e}", dir.display()))?;
            println!("mounted at {}", dir.display());
            Some(m)
        }
        _ => None,
    };
    if let Some(addr) = a.http {
        let cfg = peerstore::http::HttpConfig {
            addr,
            allow_remote: a.http_allow_remote,
        };
        let bound = peerstore::http::start(cfg, Arc::clone(&running.node), shares, orphan_stop)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("dashboard at http://{bound}/");
    }
    let unmounted = mounted.as_ref().map(|m| m.unmounted());
    let by_unmount = tokio::select! {
        _ = term.recv() => { log::info!("SIGTERM: leaving the ring"); false }
        _ = int.recv() => { log::info!("SIGINT: leaving the ring"); false }
        _ = async { match unmounted { Some(u) => u.await, None => std::future::pending().await } } => {
            log::info!("folder unmounted: leaving the ring");
            true
        }
    };
    let _ = orphan_stop_tx.send(true);
    if let Some(m) = mounted {
        // Unmounting flushes files still open; it blocks, so off the runtime.
        let res =
            tokio::task::spawn_blocking(move || if by_unmount { Ok(()) } else { m.unmount() })
                .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("unmount: {e}"),
            Err(e) => log::warn!("unmount task: {e}"),
        }
    }
    if let Some(store) = journal_store {
        // The mount's last writes reach the ring before the node leaves it.
        let left = store.drain(DRAIN_LIMIT).await;
        if left.entries > 0 {
            log::warn!(
                "journal: {} writes ({} bytes) could not reach the ring; they are kept in {} and sent when the node next runs",
                left.entries,
                left.bytes,
                a.data.join("journal").display()
            );
        }
    }
    running.shutdown().await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads the shares of the account `session` over `store`, for the
/// dashboard.
fn shares_hook<S: peerstore::fs::BlockStore + 'static>(
    store: Arc<S>,
    session: peerstore::account::session::Session,
) -> peerstore::http::SharesHook {
    use peerstore::account::shares;
    let session = Arc::new(session);
    Arc::new(move || {
        let (store, session) = (Arc::clone(&store), Arc::clone(&session));
        Box::pin(async move {
            let err = |e: peerstore::account::records::AccountError| e.to_string();
            let (given, _) = shares::given(store.as_ref(), &session.identity())
                .await
                .map_err(err)?;
            let received = shares::received(store.as_ref(), &session)
                .await
                .map_err(err)?;
            Ok(peerstore::http::status::Shares {
                given: given.into_iter().map(|g| (g.path, g.to, g.write)).collect(),
                received: received
                    .into_iter()
                    .map(|o| {
                        let write = o.writable();
                        (format!("/shared/{}/{}", o.from, o.name), o.from, write)
                    })
                    .collect(),
            })
        })
    })
}

/// Raises the open-file limit to its hard maximum, so the connection caps,
/// not the descriptor limit, bound how many peers are served.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!("could not raise the open-file limit");
            }
        }
    }
}
