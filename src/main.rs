//! The `ferroturn` command: CLI -> config -> tracing -> run.

use clap::{Parser, Subcommand};
use ferroturn::config::{Config, RawConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A STUN/TURN relay server. Every option can be given in the TOML file (--config) or
/// as a flag of the same name; flags win.
#[derive(Parser)]
#[command(name = "ferroturn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see turnserver.toml.example).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: RawConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a TURN REST username and password.
    Credentials {
        /// The shared secret (static-auth-secret).
        #[arg(long)]
        secret: String,
        /// The user part of the username.
        #[arg(long, default_value = "")]
        user: String,
        /// Validity in seconds from now.
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
        /// Separator between expiry and user.
        #[arg(long, default_value_t = ':')]
        separator: char,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match load(Some(&file), RawConfig::default()) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Credentials {
            secret,
            user,
            ttl,
            separator,
        }) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            let (u, p) = ferroturn::credentials::rest_credentials(
                &secret,
                &user,
                now.as_secs() + ttl,
                separator,
            );
            println!("username: {u}\npassword: {p}");
            ExitCode::SUCCESS
        }
        None => match load(cli.config.as_deref(), cli.options) {
            Ok(config) => run(config),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn load(file: Option<&std::path::Path>, flags: RawConfig) -> Result<Config, String> {
    let base = match file {
        Some(path) => RawConfig::from_file(path).map_err(|e| e.to_string())?,
        None => RawConfig::default(),
    };
    Config::from_raw(base.overlay(flags)).map_err(|e| e.to_string())
}

fn run(config: Config) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut handle = match ferroturn::start(config).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_shutdown(&handle).await;
        tracing::info!("shutting down");
        handle.stop();
        ExitCode::SUCCESS
    })
}

/// Waits for SIGINT or SIGTERM; SIGHUP meanwhile reloads the TLS certificate.
async fn wait_for_shutdown(handle: &ferroturn::ServerHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => match handle.reload_tls() {
                Ok(()) => tracing::info!("reloaded on SIGHUP (TLS certificate)"),
                Err(e) => tracing::error!("reload failed, the old certificate stays: {e}"),
            },
        }
    }
}
