//! The `ferroturn` command: CLI -> config -> tracing -> run.

use clap::{Parser, Subcommand, ValueEnum};
use ferroturn::ServerHandle;
use ferroturn::config::{self, Config, RawConfig};
use ferroturn::control::LogFilterError;
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
    /// Translate a coturn turnserver.conf into ferroturn's TOML: the configuration on
    /// stdout, and on stderr every option left out (with the reason) and every coturn
    /// default that ferroturn does not share. Exit status 0 once translated, 1 when the
    /// result does not pass check-config, 2 when the file cannot be read.
    ImportCoturn {
        /// coturn's configuration file.
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
        Some(Command::CheckConfig { file }) => {
            match config::load(Some(&file), RawConfig::default()) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::ImportCoturn { file }) => import_coturn(&file),
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
        None => match config::load(cli.config.as_deref(), cli.options.clone()) {
            Ok(config) => run(config, cli.log_format, cli.config.map(|f| (f, cli.options))),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `import-coturn`: the file and this host's addresses in, TOML out, notes on stderr.
fn import_coturn(file: &std::path::Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    // Bytes that are not UTF-8 become replacement characters, and the import leaves
    // such a line out, naming its line number.
    let text = String::from_utf8_lossy(&bytes);
    let host = config::coturn::Host {
        addresses: if_addrs::get_if_addrs()
            .map(|list| list.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default(),
        placeholder_secret: {
            use rand::RngExt;
            let bytes: [u8; 24] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        },
    };
    let import = config::coturn::import(&text, &file.display().to_string(), &host);
    print!("{}", import.toml);
    for note in &import.notes {
        eprintln!("{}: {note}", file.display());
    }
    match import.error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("error: the result does not pass check-config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server. `source` (the file and the flags over it) is what a reload re-reads.
fn run(config: Config, log_format: LogFormat, source: Option<(PathBuf, RawConfig)>) -> ExitCode {
    let log_reloader = init_logging(log_format, &config.log_level);
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
    let code = runtime.block_on(async move {
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
        if let Some((file, flags)) = source {
            handle.set_config_source(file, flags);
        }
        handle.set_log_reloader(log_reloader);
        // `start` returned: every listener is bound.
        notifier.ready();
        let stop = serve(&handle, &notifier, &mut signals).await;
        notifier.stopping();
        if stop == Stop::Drain {
            drain(&handle, &mut signals).await;
        }
        tracing::info!("shutting down");
        handle.stop();
        ExitCode::SUCCESS
    });
    // A drain cut short leaves its waiting thread behind: do not wait for it.
    runtime.shutdown_background();
    code
}

/// Text (journald-friendly under systemd) or JSON logs on stdout, filtered by
/// `log-level`. Returns what changes the filter on a reload.
fn init_logging(format: LogFormat, level: &str) -> ferroturn::LogReloader {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt();
    // The filter goes on last: the reload handle's type depends on the format.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level: &str| {
                let filter =
                    EnvFilter::try_new(level).map_err(|e| LogFilterError(e.to_string()))?;
                handle
                    .reload(filter)
                    .map_err(|e| LogFilterError(e.to_string()))
            })
        }};
    }
    if format == LogFormat::Json {
        install!(builder.json().flatten_event(true).with_ansi(false))
    } else if stdout_is_journal() {
        // journald stamps each line itself, and reads the `<N>` priority prefix.
        install!(
            builder
                .with_ansi(false)
                .event_format(journal::PriorityPrefix(
                    tracing_subscriber::fmt::format().without_time(),
                ))
        )
    } else {
        install!(builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
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

/// How the server is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGINT: at once.
    Now,
    /// SIGTERM: drain first.
    Drain,
}

/// Runs until SIGINT or SIGTERM. Meanwhile SIGHUP reloads, and the systemd watchdog is
/// fed from this same loop, so a stuck control loop stops the pings and every
/// notification goes out in order.
async fn serve(handle: &ServerHandle, notifier: &Notifier, signals: &mut Signals) -> Stop {
    let mut watchdog = notify::watchdog_interval()
        .filter(|_| notifier.is_enabled())
        .map(|period| {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => return Stop::Now,
            _ = signals.terminate.recv() => return Stop::Drain,
            _ = signals.hangup.recv() => {
                notifier.reloading();
                reload(handle).await;
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

/// Everything a reload (SIGHUP, `systemctl reload`) re-reads, in one place: the
/// configuration file (with the command-line flags over it) and the TLS certificate.
/// The reload logs and counts its own outcome.
async fn reload(handle: &ServerHandle) {
    let control = handle.control();
    if let Err(e) = tokio::task::spawn_blocking(move || control.reload()).await {
        tracing::error!("reload did not run: {e}");
    }
}

/// SIGTERM: new allocations are refused (readiness turns false) and existing ones run
/// until they end or `drain-timeout` passes. A second SIGINT or SIGTERM stops at once.
async fn drain(handle: &ServerHandle, signals: &mut Signals) {
    let control = handle.control();
    let waiting = tokio::task::spawn_blocking(move || control.drain_and_wait());
    tokio::select! {
        _ = waiting => {}
        _ = signals.interrupt.recv() => tracing::info!("drain cut short"),
        _ = signals.terminate.recv() => tracing::info!("drain cut short"),
    }
}
