//! The `gatehouse` binary: `serve`, `migrate`, `check-config`, `admin token`, `rules ...`,
//! `evidence ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::config::Config;

// Per-thread heaps: the request path allocates on tokio workers and frees on others.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A drop-in x402 facilitator proxy that checks, limits, scores and records every payment.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
struct Cli {
    /// Configuration file (default: ./gatehouse.toml when present).
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the facilitator proxy (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets masked); exit 1 if it is invalid.
    CheckConfig,
    /// Admin API helpers.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Risk rule tools: check, test, backtest.
    #[command(subcommand)]
    Rules(gatehouse::risk::cli::RulesCommand),
    /// Evidence: show, search, export, verify, prune.
    #[command(subcommand)]
    Evidence(gatehouse::evidence::cli::EvidenceCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Mint a new admin token: prints the token once and the `[[admin.tokens]]` entry
    /// (holding only its SHA-256) to paste into gatehouse.toml.
    Token {
        /// Who will hold it.
        #[arg(long)]
        name: String,
        /// Scopes: operator, auditor or seller:<payTo> (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

/// Prints a new token and its configuration entry.
fn mint_token(name: &str, scopes: &[String]) -> ExitCode {
    for scope in scopes {
        if gatehouse::admin::Scope::parse(scope).is_none() {
            eprintln!(
                "gatehouse: unknown scope `{scope}` (use operator, auditor or seller:<payTo>)"
            );
            return ExitCode::from(2);
        }
    }
    let token = match gatehouse::admin::new_token() {
        Ok(token) => token,
        Err(error) => {
            eprintln!("gatehouse: no randomness available: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("# token (shown once; give it to {name}): {token}");
    println!("[[admin.tokens]]");
    println!("name = {name:?}");
    println!("sha256 = {:?}", gatehouse::admin::token_hash(&token));
    println!("scopes = {scopes:?}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Rules(command)) = cli.command {
        return gatehouse::risk::cli::run(command, cli.config.as_deref());
    }
    if let Some(Command::Admin(AdminCommand::Token { name, scopes })) = &cli.command {
        return mint_token(name, scopes);
    }
    if let Some(Command::Evidence(command)) = cli.command {
        return gatehouse::evidence::cli::main(command, cli.config.as_deref());
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    let _telemetry = gatehouse::telemetry::init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("gatehouse: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Migrate => {
                let store = gatehouse::store::connect(config.database_url.expose()).await?;
                store.migrate().await?;
                tracing::info!(backend = ?store.backend(), "Migrations applied.");
                Ok(())
            }
            Command::Serve | Command::CheckConfig => serve(config).await,
            // Handled before the runtime starts.
            Command::Admin(_) | Command::Rules(_) | Command::Evidence(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "Gatehouse stopped.");
            eprintln!("gatehouse: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = gatehouse::server::start(config).await?;
    println!("Facilitator listening on http://{}", running.addr);
    shutdown_signal().await;
    tracing::info!("Shutting down; draining in-flight requests.");
    running.stop().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
