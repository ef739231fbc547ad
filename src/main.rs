//! The `ferroturn` command: CLI -> config -> tracing -> run.

use clap::{Parser, Subcommand, ValueEnum};
use ferroturn::ServerHandle;
use ferroturn::config::{Config, RawConfig};
use ferroturn::notify::{self, Notifier};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{Signal, SignalKind, signal};

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
    /// Log format: `text` for people (without timestamps when stdout is systemd's
    /// journal, which adds its own), or `json`, one object per line for log shippers.
    /// A command-line option only, not a configuration file key.
    #[arg(long, value_enum, value_name = "FORMAT", env = "FERROTURN_LOG_FORMAT",
          default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    options: RawConfig,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
            Ok(config) => run(config, cli.log_format),
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

fn run(config: Config, log_format: LogFormat) -> ExitCode {
    init_logging(log_format, &config.log_level);
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
    let notifier = Notifier::from_env();
    runtime.block_on(async move {
        // Handlers first: a SIGHUP right after READY=1 must reload, not kill.
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut handle = match ferroturn::start(config).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // `start` returned: every listener is bound.
        notifier.ready();
        serve(&handle, &notifier, &mut signals).await;
        notifier.stopping();
        tracing::info!("shutting down");
        handle.stop();
        ExitCode::SUCCESS
    })
}

/// Text (journald-friendly under systemd) or JSON logs on stdout, filtered by
/// `log-level`.
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == LogFormat::Json {
        builder.json().flatten_event(true).with_ansi(false).init();
    } else if stdout_is_journal() {
        // journald stamps each line itself, and reads the `<N>` priority prefix.
        builder
            .with_ansi(false)
            .event_format(journal::PriorityPrefix(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
}

/// Whether stdout is connected to systemd's journal: `$JOURNAL_STREAM` names the
/// device and inode of that stream (systemd.exec(5)), so a variable merely inherited by
/// a process whose stdout goes elsewhere does not count.
fn stdout_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

mod journal {
    use std::fmt;
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Prefixes each event with its syslog priority (`<3>` error ... `<7>` debug), which
    /// journald strips and stores, so `journalctl -p warning` works.
    pub struct PriorityPrefix<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}

/// The signals the server acts on, installed before it reports ready.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// Runs until SIGINT or SIGTERM. Meanwhile SIGHUP reloads, and the systemd watchdog is
/// fed from this same loop, so a stuck control loop stops the pings and every
/// notification goes out in order.
async fn serve(handle: &ServerHandle, notifier: &Notifier, signals: &mut Signals) {
    let mut watchdog = notify::watchdog_interval()
        .filter(|_| notifier.is_enabled())
        .map(|period| {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => return,
            _ = signals.terminate.recv() => return,
            _ = signals.hangup.recv() => {
                notifier.reloading();
                match reload(handle) {
                    Ok(()) => tracing::info!("reloaded on SIGHUP (TLS certificate)"),
                    Err(e) => tracing::error!("reload failed, the old certificate stays: {e}"),
                }
                // Also after a failure: the old configuration keeps serving.
                notifier.ready();
            }
            _ = async {
                match watchdog.as_mut() {
                    Some(ticks) => {
                        ticks.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => notifier.watchdog(),
        }
    }
}

/// Everything a reload (SIGHUP, `systemctl reload`) re-reads, in one place: today the
/// TLS certificate and key.
fn reload(handle: &ServerHandle) -> Result<(), String> {
    handle.reload_tls()
}
