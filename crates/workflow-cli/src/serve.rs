//! `workflow serve`: the example workflows on sled, behind axum, with the
//! read-only runs dashboard at [`DASHBOARD_PATH`].

use std::net::SocketAddr;
use std::path::PathBuf;

use workflow_core::Engine;
use workflow_http::dashboard::DashboardConfig;
use workflow_store::SledStore;

use crate::error::CliError;
use crate::ops::Operations;

/// Where `workflow serve` mounts the runs dashboard
/// ([`workflow_http::dashboard`], read-only).
pub const DASHBOARD_PATH: &str = workflow_http::dashboard::DEFAULT_PREFIX;

/// Options of `workflow serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The sled data directory.
    pub data: PathBuf,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Bearer token required by the admin API; without one the admin API is
    /// served only on loopback addresses.
    pub admin_token: Option<String>,
}

/// Opens the data directory as a sled store, with a message a person can act on.
pub fn open_store(data: &std::path::Path) -> Result<SledStore, CliError> {
    SledStore::open(data).map_err(|e| CliError::Open {
        path: data.display().to_string(),
        message: e.to_string(),
    })
}

/// The engine with the example workflows on `store`.
pub fn engine(store: SledStore) -> Engine {
    crate::workflows::register(Engine::builder(store)).build()
}

/// Serves until Ctrl-C (or SIGTERM), then stops taking requests, lets the
/// runs being driven suspend, and returns.
pub async fn serve(opts: ServeOptions) -> Result<(), CliError> {
    let store = open_store(&opts.data)?;
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
    engine.start_workers();
    let mut app = axum::Router::new().merge(workflow_http::axum::router(engine.clone()));
    let admin = local.ip().is_loopback() || opts.admin_token.is_some();
    // Read-only. Hook tokens resume runs: the dashboard shows them only where
    // the admin API (which lists them) is open without a token, on loopback.
    let dashboard = DashboardConfig::new()
        .with_prefix(DASHBOARD_PATH)
        .with_show_tokens(local.ip().is_loopback());
    app = app.merge(workflow_http::dashboard::router(engine.clone(), dashboard));
    if admin {
        app = app.merge(crate::api::router(
            Operations::new(engine.clone()),
            opts.admin_token.clone(),
        ));
    }
    let base = format!("http://{local}");
    println!(
        "workflow serve: listening on {base} (data in {})",
        opts.data.display()
    );
    println!("workflow serve: dashboard at {base}{DASHBOARD_PATH}/");
    if admin {
        println!("try it:");
        println!("  workflow start approve_order '{{\"id\": 42, \"amount_cents\": 1999}}'");
        println!(
            "  curl -X POST {base}/.well-known/workflow/v1/webhook/order:42 -d '{{\"approved\": true}}'"
        );
    } else {
        println!("admin API off: not a loopback address and no --admin-token given");
    }
    let shutdown = async {
        shutdown_signal().await;
        println!("workflow serve: shutting down");
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    engine.shutdown().await;
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
