//! `workflow`: serve example workflows on sled, and inspect and drive runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use workflow_cli::address;
use workflow_cli::client::RemoteClient;
use workflow_cli::ops::{parse_status, OpError, Operations};
use workflow_cli::serve::{self, ServeOptions, StoreKind};
use workflow_cli::view::{ActionView, EventView, HookView, PurgeRequest, RunView};
use workflow_cli::CliError;
use workflow_http::server;

/// Where the server listens by default. Commands do not assume it: they read
/// the address a running server wrote into the data directory.
const DEFAULT_ADDR: &str = "127.0.0.1:3000";

#[derive(Parser)]
#[command(
    name = "workflow",
    version,
    about = "Durable workflows on sled: serve the examples, inspect and drive runs"
)]
struct Cli {
    /// The data directory.
    #[arg(
        long,
        global = true,
        env = "WORKFLOW_DATA",
        default_value = "./workflow-data"
    )]
    data: PathBuf,
    /// The store of a new data directory: sled (the default) or redb. An
    /// existing directory is opened with the store it holds.
    #[arg(long, global = true, env = "WORKFLOW_STORE", value_enum)]
    store: Option<StoreKind>,
    /// Talk to the server at this URL (e.g. http://127.0.0.1:3000) instead of
    /// opening the data directory. Without it, when the directory is held by a
    /// running server, commands talk to the address that server wrote into it
    /// (server.json).
    #[arg(long, global = true, env = "WORKFLOW_SERVER")]
    server: Option<String>,
    /// Bearer token of the admin API and the dashboard: `serve` requires it on
    /// addresses other than loopback ones; the other commands send it.
    #[arg(long, global = true, env = "WORKFLOW_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the example workflows, their webhooks, the admin API and the
    /// runs dashboard (/workflow/dashboard/).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = DEFAULT_ADDR)]
        addr: SocketAddr,
        /// Most connections served at once; more are answered 503 and closed at once.
        #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Seconds a client has to send a request's head (also how long an idle
        /// keep-alive connection is kept).
        #[arg(long, default_value_t = server::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
        header_timeout: u64,
        /// Seconds a client has to send a whole request body.
        #[arg(long, default_value_t = server::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
        body_timeout: u64,
        /// Largest request head (request line and headers), in bytes; larger is answered 431.
        #[arg(long, default_value_t = server::DEFAULT_MAX_HEADER_BYTES)]
        max_header_bytes: usize,
        /// Seconds shutdown waits for open requests (and as long again for running
        /// steps) before closing them.
        #[arg(long, default_value_t = server::DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
        shutdown_timeout: u64,
        /// Delete runs that ended longer ago than this (e.g. `30d`, `12h`),
        /// checked at start and then hourly. Without it, runs are kept.
        #[arg(long, value_parser = parse_age)]
        retention: Option<Duration>,
    },
    /// Delete ended runs (completed, failed, cancelled) that ended longer ago
    /// than `--older-than`: `workflow purge --older-than 30d --status completed`.
    Purge {
        /// How long ago a run must have ended (e.g. `30d`, `12h`, `90m`).
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
        /// Only runs with this final status (completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Start a run: `workflow start approve_order '{"id": 42, "amount_cents": 1999}'`.
    Start {
        /// Workflow name.
        workflow: String,
        /// Input as JSON.
        input: String,
    },
    /// List runs (newest last).
    Runs {
        /// Only runs with this status (pending, running, blocked, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a run's timeline with decoded payloads.
    Events {
        /// Run id.
        run: String,
    },
    /// List live hooks, their tokens and runs.
    Hooks,
    /// Print a run's output stream, one chunk a line (`INDEX<TAB>JSON`; raw
    /// bytes as `INDEX<TAB>bytes BASE64`), following it until it closes when
    /// a server runs the data directory; without one, print what is stored.
    /// Without STREAM, list the run's streams.
    Tail {
        /// Run id.
        run: String,
        /// Stream name (e.g. `progress`, `default`).
        stream: Option<String>,
        /// Start at this chunk index.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Send a JSON payload to a hook: `workflow resume chat:general '"hello"'`.
    Resume {
        /// The hook's token.
        token: String,
        /// Payload as JSON.
        payload: String,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        run: String,
    },
    /// Retry a blocked run with the workflows deployed now.
    ///
    /// Use it after deploying code that matches the run's history, or that
    /// registers its workflow: the running server replays the run (or the next
    /// `workflow serve` does). If it still does not match, it stays blocked.
    Unblock {
        /// Run id.
        run: String,
    },
    /// Replay every stored run against the workflows this binary knows, without
    /// running steps; report runs whose history no longer matches (exit code 3).
    CheckReplay,
}

/// Local data directory or a running server.
enum Target {
    Local(Operations),
    Remote(Box<RemoteClient>),
}

impl Target {
    async fn pick(cli: &Cli) -> Result<Target, CliError> {
        if let Some(server) = &cli.server {
            return Ok(Target::Remote(Box::new(RemoteClient::new(
                server,
                cli.admin_token.clone(),
            ))));
        }
        match serve::open_store(&cli.data, cli.store, Duration::ZERO) {
            Ok(store) => Ok(Target::Local(Operations::new(serve::engine(store)))),
            Err(CliError::Locked { .. }) => {
                let found = address::find_server(&cli.data, address::STARTUP_WAIT).await?;
                eprintln!(
                    "note: {} is held by a running server; talking to it at {}",
                    cli.data.display(),
                    found.url
                );
                Ok(Target::Remote(Box::new(RemoteClient::new(
                    &found.url,
                    cli.admin_token.clone(),
                ))))
            }
            Err(e) => Err(e),
        }
    }
}

/// A duration such as `30d`, `12h`, `90m` or `45s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: write a duration such as 30d, 12h, 90m or 45s"))
}

fn parse_json(what: &'static str, text: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Json {
        what,
        message: e.to_string(),
    })
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

fn print_runs(runs: &[RunView]) {
    println!(
        "{:<26}  {:<16}  {:<9}  {:<24}  {:>6}",
        "ID", "WORKFLOW", "STATUS", "CREATED", "EVENTS"
    );
    for r in runs {
        println!(
            "{:<26}  {:<16}  {:<9}  {:<24}  {:>6}{}",
            r.id,
            r.workflow,
            r.status,
            r.created,
            r.events,
            r.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
}

fn print_events(events: &[EventView]) {
    for e in events {
        println!(
            "{:>5}  {}  {:<15}  {:<8}  {}",
            e.seq,
            e.time,
            e.kind,
            e.correlation.as_deref().unwrap_or("-"),
            e.data
        );
    }
}

/// One chunk of `workflow tail`: the NDJSON line with `--json`, else
/// `INDEX<TAB>JSON` (`INDEX<TAB>bytes BASE64` for raw bytes).
fn print_chunk(json: bool, line: &serde_json::Value) {
    if json {
        println!("{line}");
        return;
    }
    let index = line.get("index").and_then(|i| i.as_u64()).unwrap_or(0);
    match (line.get("chunk"), line.get("bytes")) {
        (Some(chunk), _) => println!("{index}\t{chunk}"),
        (_, Some(bytes)) => println!("{index}\tbytes {}", bytes.as_str().unwrap_or("")),
        _ => println!("{index}\t{line}"),
    }
}

fn print_hooks(hooks: &[HookView]) {
    println!("{:<34}  {:<26}  {:<8}  PATH", "TOKEN", "RUN", "HOOK");
    for h in hooks {
        println!(
            "{:<34}  {:<26}  {:<8}  {}",
            h.token,
            h.run,
            h.hook,
            h.webhook_path.as_deref().unwrap_or("-")
        );
    }
}

fn print_action(json: bool, what: &str, a: &ActionView) {
    if json {
        print_json(a);
    } else {
        match (&a.hook, a.seq) {
            (Some(h), Some(seq)) => println!("{what}: run {} hook {h} (seq {seq})", a.run),
            _ => println!("{what}: run {}", a.run),
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if cli.admin_token.as_deref() == Some("") {
        return Err(serve::empty_token());
    }
    match &cli.command {
        Command::Serve {
            addr,
            max_connections,
            header_timeout,
            body_timeout,
            max_header_bytes,
            shutdown_timeout,
            retention,
        } => {
            let limits = server::ServerLimits::new()
                .with_max_connections(*max_connections)
                .with_header_read_timeout(Duration::from_secs(*header_timeout))
                .with_body_read_timeout(Duration::from_secs(*body_timeout))
                .with_max_header_bytes(*max_header_bytes)
                .with_shutdown_timeout(Duration::from_secs(*shutdown_timeout));
            return serve::serve(ServeOptions {
                data: cli.data.clone(),
                store: cli.store,
                addr: *addr,
                admin_token: cli.admin_token.clone(),
                limits,
                retention: *retention,
            })
            .await;
        }
        Command::CheckReplay => {
            let engine = serve::engine(serve::open_store(&cli.data, cli.store, Duration::ZERO)?);
            let report = engine
                .check_replay()
                .await
                .map_err(|e| CliError::Op(OpError::from(e)))?;
            if cli.json {
                print_json(&serde_json::json!({
                    "checked": report.checked,
                    "mismatches": report.mismatches.iter().map(|m| serde_json::json!({
                        "run": m.run.to_string(), "workflow": m.workflow,
                        "position": m.position, "message": m.message,
                    })).collect::<Vec<_>>(),
                    "unknown_workflow": report.unknown_workflow.iter()
                        .map(|(r, w)| serde_json::json!({ "run": r.to_string(), "workflow": w }))
                        .collect::<Vec<_>>(),
                    "patches": report.patches.iter().map(|(p, u)| (p.clone(), serde_json::json!({
                        "old_runs": u.old_runs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "marked_runs": u.marked_runs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    }))).collect::<serde_json::Map<_, _>>(),
                }));
            } else {
                println!("checked {} run(s)", report.checked);
                for m in &report.mismatches {
                    println!("MISMATCH {} ({}): {}", m.run, m.workflow, m.message);
                }
                for (r, w) in &report.unknown_workflow {
                    println!("skipped {r}: workflow {w:?} is not known to this binary");
                }
                for (patch, usage) in &report.patches {
                    println!(
                        "patch {patch:?}: {} run(s) still take the old branch, {} have its marker",
                        usage.old_runs.len(),
                        usage.marked_runs.len()
                    );
                    for r in &usage.old_runs {
                        println!("  old branch: {r}");
                    }
                    for r in &usage.marked_runs {
                        println!("  marker:     {r}");
                    }
                }
            }
            return if report.is_clean() {
                Ok(())
            } else {
                Err(CliError::Mismatches(report.mismatches.len()))
            };
        }
        _ => {}
    }
    let target = Target::pick(&cli).await?;
    match &cli.command {
        Command::Start { workflow, input } => {
            let input = parse_json("input", input)?;
            let a = match &target {
                Target::Local(ops) => ops.start(workflow, &input).await?,
                Target::Remote(c) => c.start(workflow, &input).await?,
            };
            print_action(cli.json, "started", &a);
        }
        Command::Purge {
            older_than,
            status,
            workflow,
        } => {
            let req = PurgeRequest {
                older_than_secs: older_than.as_secs(),
                workflow: workflow.clone(),
                status: status.clone(),
            };
            let v = match &target {
                Target::Local(ops) => ops.purge(&req).await?,
                Target::Remote(c) => c.purge(&req).await?,
            };
            if cli.json {
                print_json(&v)
            } else {
                println!("purged {} run(s)", v.purged);
            }
        }
        Command::Runs { status, limit } => {
            let runs = match &target {
                Target::Local(ops) => {
                    let status = status.as_deref().map(parse_status).transpose()?;
                    ops.runs(status, *limit).await?
                }
                Target::Remote(c) => c.runs(status.as_deref(), *limit).await?,
            };
            if cli.json {
                print_json(&runs)
            } else {
                print_runs(&runs)
            }
        }
        Command::Events { run } => {
            let events = match &target {
                Target::Local(ops) => ops.events(run).await?,
                Target::Remote(c) => c.events(run).await?,
            };
            if cli.json {
                print_json(&events)
            } else {
                print_events(&events)
            }
        }
        Command::Tail { run, stream, from } => {
            let Some(stream) = stream else {
                let streams = match &target {
                    Target::Local(ops) => ops.streams(run).await?,
                    Target::Remote(c) => c.streams(run).await?,
                };
                if cli.json {
                    print_json(&streams);
                } else if streams.is_empty() {
                    println!("(no streams)");
                } else {
                    for s in &streams {
                        let state = if s.closed { "closed" } else { "open" };
                        println!("{}\t{} chunk(s)\t{state}", s.name, s.len);
                    }
                }
                return Ok(());
            };
            let json = cli.json;
            let print = move |line: serde_json::Value| print_chunk(json, &line);
            match &target {
                Target::Local(ops) => {
                    if !ops.tail_stored(run, stream, *from, print).await? {
                        eprintln!(
                            "note: the stream is open, but no server runs {}: nothing adds to it now",
                            cli.data.display()
                        );
                    }
                }
                Target::Remote(c) => c.tail(run, stream, *from, print).await?,
            }
        }
        Command::Hooks => {
            let hooks = match &target {
                Target::Local(ops) => ops.hooks().await?,
                Target::Remote(c) => c.hooks().await?,
            };
            if cli.json {
                print_json(&hooks)
            } else {
                print_hooks(&hooks)
            }
        }
        Command::Resume { token, payload } => {
            let payload = parse_json("payload", payload)?;
            let a = match &target {
                Target::Local(ops) => ops.resume(token, &payload).await?,
                Target::Remote(c) => c.resume(token, &payload).await?,
            };
            print_action(cli.json, "resumed", &a);
        }
        Command::Cancel { run } => {
            let a = match &target {
                Target::Local(ops) => ops.cancel(run).await?,
                Target::Remote(c) => c.cancel(run).await?,
            };
            print_action(cli.json, "cancelled", &a);
        }
        Command::Unblock { run } => {
            let a = match &target {
                Target::Local(ops) => ops.unblock(run).await?,
                Target::Remote(c) => c.unblock(run).await?,
            };
            print_action(cli.json, "retried", &a);
        }
        Command::Serve { .. } | Command::CheckReplay => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CliError::Mismatches(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
