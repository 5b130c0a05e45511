//! `workflow serve`: the example workflows on sled, behind axum, with the
//! read-only runs dashboard at [`DASHBOARD_PATH`].
//!
//! What it serves ([`app`]):
//!
//! - the webhook route, to anyone (a token is the sender's credential);
//! - the admin surface ([`admin_routes`]): the admin API ([`crate::api`]) and
//!   the dashboard, behind one gate ([`AdminAuth`], from [`admin_auth`]).
//!
//! | address | `--admin-token` | admin API and dashboard |
//! |---|---|---|
//! | loopback | none | open to this machine; `Host` must be `localhost`, `127.0.0.1` or `[::1]` |
//! | loopback | given | the token, and the same `Host` check |
//! | any other | given | the token |
//! | any other | none | refused: `serve` does not start |
//!
//! An empty token is refused too. Once it listens, `serve` writes its address
//! into the data directory ([`crate::address`]) for the other commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use workflow_core::Engine;
use workflow_http::dashboard::{AdminAuth, DashboardConfig};
use workflow_http::server::ServerLimits;
use workflow_store::{RedbConfig, RedbStore, SledConfig, SledStore, Store, StoreError};

use crate::address::{self, AddressFile, ServerAddress};
use crate::error::CliError;
use crate::ops::Operations;

/// Where `workflow serve` mounts the runs dashboard
/// ([`workflow_http::dashboard`], read-only).
pub const DASHBOARD_PATH: &str = workflow_http::dashboard::DEFAULT_PREFIX;

/// Options of `workflow serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data directory.
    pub data: PathBuf,
    /// The store to create in a new data directory (an existing one is
    /// opened with the store it holds).
    pub store: Option<StoreKind>,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Bearer token required by the admin API and the dashboard; required
    /// on addresses other than loopback ones. Must not be empty.
    pub admin_token: Option<String>,
    /// Connection limits: read timeouts, the connection cap, head limits and
    /// the shutdown deadline ([`ServerLimits`]).
    pub limits: ServerLimits,
    /// Delete runs that ended longer ago than this, at start and then
    /// every [`RETENTION_INTERVAL`]; `None` keeps every run.
    pub retention: Option<std::time::Duration>,
}

/// How long `serve` waits for a data directory that another process is
/// releasing (a server that is just stopping).
pub const SERVE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often `serve --retention` purges.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Purges runs older than `retention` now and then every
/// [`RETENTION_INTERVAL`], until the returned task is aborted.
fn retention_task(engine: Engine, retention: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = workflow_core::PurgeOptions::older_than(retention);
        let mut every = tokio::time::interval(RETENTION_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match engine.purge_runs(&options).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, ?retention, "purged ended runs"),
                Err(e) => {
                    tracing::warn!(error = %e, "purging ended runs failed; trying again later")
                }
            }
        }
    })
}

/// Which embedded store a data directory holds (`--store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// `SledStore` (the default): sled's files (`conf`, `db`, `blobs/`).
    Sled,
    /// `RedbStore`: one redb database file, `workflow.redb`.
    Redb,
}

impl StoreKind {
    /// The store a directory already holds, by its files; `None` for a new
    /// (or empty) directory.
    pub fn found_in(data: &Path) -> Option<StoreKind> {
        if data.join(workflow_store::RedbConfig::FILE_NAME).exists() {
            Some(StoreKind::Redb)
        } else if data.join("db").exists() || data.join("conf").exists() {
            Some(StoreKind::Sled)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            StoreKind::Sled => "sled",
            StoreKind::Redb => "redb",
        }
    }
}

/// Opens the data directory with the store it holds, or, for a new
/// directory, the one `wanted` names (sled by default), with a message a
/// person can act on. Asking for one kind on a directory that holds the other
/// is an error rather than a second, empty store beside the first.
///
/// A directory held by another process is [`CliError::Locked`] after
/// `lock_wait`: `serve` waits a moment for a server that is just stopping;
/// the other commands do not wait, they talk to the running server.
pub fn open_store(
    data: &Path,
    wanted: Option<StoreKind>,
    lock_wait: std::time::Duration,
) -> Result<Arc<dyn Store>, CliError> {
    let found = StoreKind::found_in(data);
    let kind = match (found, wanted) {
        (Some(f), Some(w)) if f != w => {
            return Err(CliError::Open {
                path: data.display().to_string(),
                message: format!(
                    "it holds a {} store, not a {} one: drop --store, or use another directory",
                    f.name(),
                    w.name()
                ),
            })
        }
        (Some(f), _) => f,
        (None, w) => w.unwrap_or(StoreKind::Sled),
    };
    let opened: Result<Arc<dyn Store>, StoreError> = match kind {
        StoreKind::Sled => SledStore::open_with(SledConfig::new(data).lock_wait(lock_wait))
            .map(|s| Arc::new(s) as Arc<dyn Store>),
        StoreKind::Redb => RedbStore::open_with(RedbConfig::new(data).lock_wait(lock_wait))
            .map(|s| Arc::new(s) as Arc<dyn Store>),
    };
    opened.map_err(|e| match e {
        StoreError::Locked { .. } => CliError::Locked {
            path: data.display().to_string(),
        },
        e => CliError::Open {
            path: data.display().to_string(),
            message: e.to_string(),
        },
    })
}

/// The engine with the example workflows on `store`.
pub fn engine(store: Arc<dyn Store>) -> Engine {
    crate::workflows::register(Engine::builder(store)).build()
}

/// The gate of the admin surface of a server listening on `addr` with
/// `token` (`--admin-token`): see the [module documentation](self).
///
/// An empty token, or no token on an address other than a loopback one, is
/// an error that says what to do.
pub fn admin_auth(addr: SocketAddr, token: Option<&str>) -> Result<AdminAuth, CliError> {
    let loopback = addr.ip().is_loopback();
    let auth = match token {
        Some(t) => AdminAuth::with_token(t).map_err(|_| empty_token())?,
        None if loopback => AdminAuth::open(),
        None => {
            return Err(CliError::Usage(format!(
                "serving on {addr}, not a loopback address, needs --admin-token (or \
                 WORKFLOW_ADMIN_TOKEN): the admin API and the dashboard show run data and hook tokens"
            )))
        }
    };
    Ok(if loopback {
        auth.loopback_hosts_only()
    } else {
        auth
    })
}

/// The error for an empty `--admin-token`.
pub fn empty_token() -> CliError {
    CliError::Usage(
        "--admin-token (or WORKFLOW_ADMIN_TOKEN) is empty: give a token, or leave it unset".into(),
    )
}

/// The admin surface: the admin API and the dashboard (hook tokens shown:
/// only callers `auth` lets through see it), behind the one gate `auth`.
pub fn admin_routes(engine: &Engine, auth: &AdminAuth) -> axum::Router {
    let dashboard = DashboardConfig::new()
        .with_prefix(DASHBOARD_PATH)
        .with_show_tokens(true);
    auth.protect(
        axum::Router::new()
            .merge(crate::api::router(Operations::new(engine.clone())))
            .merge(workflow_http::dashboard::router(engine.clone(), dashboard)),
    )
}

/// Everything `workflow serve` serves: the webhook route, open to anyone,
/// and the [`admin_routes`] behind `auth`.
pub fn app(engine: &Engine, auth: &AdminAuth) -> axum::Router {
    axum::Router::new()
        .merge(workflow_http::axum::router(engine.clone()))
        .merge(admin_routes(engine, auth))
}

/// Serves until Ctrl-C (or SIGTERM), then stops taking requests, lets the
/// requests and the runs being driven finish, and returns; whatever the
/// clients do, within [`ServerLimits::shutdown_timeout`] for the connections
/// and as long again for running steps.
pub async fn serve(opts: ServeOptions) -> Result<(), CliError> {
    let auth = admin_auth(opts.addr, opts.admin_token.as_deref())?;
    let store = open_store(&opts.data, opts.store, SERVE_LOCK_WAIT)?;
    // The directory is ours: an address file in it is a crashed server's.
    address::remove_stale(&opts.data);
    let engine = engine(store);
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| CliError::Listen {
            addr: opts.addr.to_string(),
            message: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| CliError::Listen {
        addr: opts.addr.to_string(),
        message: e.to_string(),
    })?;
    let address_file = AddressFile::write(&opts.data, &ServerAddress::of_this_process(local))?;
    engine.start_workers();
    let retention = opts.retention.map(|r| retention_task(engine.clone(), r));
    let app = app(&engine, &auth);
    let base = format!("http://{local}");
    println!(
        "workflow serve: listening on {base} (data in {})",
        opts.data.display()
    );
    println!("workflow serve: dashboard at {base}{DASHBOARD_PATH}/");
    if auth.requires_token() {
        println!(
            "workflow serve: the admin API and the dashboard need the admin token: \
             `Authorization: Bearer <token>`, or in a browser open {base}{DASHBOARD_PATH}/?token=<token> once"
        );
    } else {
        println!("workflow serve: no --admin-token: the admin API and the dashboard are open to this machine only");
    }
    println!("try it:");
    println!("  workflow start approve_order '{{\"id\": 42, \"amount_cents\": 1999}}'");
    println!(
        "  curl -X POST {base}/.well-known/workflow/v1/webhook/order:42 -d '{{\"approved\": true}}'"
    );
    let shutdown = async {
        shutdown_signal().await;
        println!("workflow serve: shutting down");
    };
    let deadline = opts.limits.shutdown_timeout;
    let served = workflow_http::server::serve(listener, app, opts.limits, shutdown).await;
    // No longer serving: the other commands must not look for it.
    drop(address_file);
    if let Some(task) = retention {
        task.abort();
    }
    // Steps in flight may finish and be recorded, within the same deadline;
    // past it they are abandoned (they run again on the next start).
    if tokio::time::timeout(deadline, engine.shutdown())
        .await
        .is_err()
    {
        println!("workflow serve: steps still running after {deadline:?}; abandoning them");
        engine.shutdown_now();
    }
    served.map_err(|e| CliError::Listen {
        addr: local.to_string(),
        message: e.to_string(),
    })?;
    println!("workflow serve: stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
