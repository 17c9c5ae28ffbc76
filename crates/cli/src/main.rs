//! The `modelwatch` command.
//!
//! Exit codes: 0 success; 1 a failure while running; 2 a configuration that cannot be used
//! (and command-line usage errors, as clap reports them).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use modelwatch::config::{self, Config, ConfigError, Environment};
use modelwatch_clickhouse::{Store, StoreConfig};
use modelwatch_kafka::{GenOptions, Pacing};
use tracing::info;
use tracing_subscriber::{EnvFilter, filter::LevelFilter};

/// Streaming telemetry for ML models: inference logs and metrics from Kafka, windows, drift and
/// canary verdicts into ClickHouse.
#[derive(Debug, Parser)]
#[command(name = "modelwatch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file (with `${VAR}` and `MODELWATCH_*` from the environment) and
    /// print a summary. Exit code 2 when it is invalid.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Create or upgrade the ClickHouse database and tables.
    Migrate {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the pipeline: consume the input topics, window, score drift, write to ClickHouse,
    /// serve /metrics. Applies pending migrations first. SIGINT/SIGTERM: finish what was
    /// handed over, checkpoint, commit, exit 0.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the configuration reference (Markdown, as in docs/configuration.md).
    ConfigReference,
    /// Alerting tools.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// The whole pipeline on generated traffic in one command: an embedded broker, ClickHouse
    /// from deploy/local, a canary that regresses about a minute in, live progress, alerts to a
    /// local webhook receiver, SQL to explore the history at the end. Ctrl-C stops everything
    /// it started.
    Demo(DemoArgs),
    /// Generate synthetic inference and metric traffic into Kafka: several models with a
    /// baseline and a canary, realistic latencies, errors, features, metric events and scripted
    /// incidents, deterministic for a seed. Flags override the options file.
    Gen(GenArgs),
}

/// `modelwatch alerts ...`.
#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Send a clearly labelled test notification (alert `ModelwatchTestAlert`, severity info)
    /// through every channel of `[alerts.channels]`, with the configured retries, and print each
    /// outcome. Exit code 1 if any channel failed.
    Test {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Options of `modelwatch demo`.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Stop after this much wall time (e.g. "90s"); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// "mock" (librdkafka's embedded mock cluster), "local" (deploy/local's tansu on
    /// 127.0.0.1:19192) or the bootstrap servers of a broker you run.
    #[arg(long, default_value = "mock")]
    broker: String,
    /// The HTTP URL of a ClickHouse to use instead of starting deploy/local's.
    #[arg(long)]
    clickhouse: Option<String>,
    /// The ClickHouse database of the demo (dropped and recreated at start).
    #[arg(long, default_value = "modelwatch_demo")]
    database: String,
    /// Where /metrics and the canary API listen.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: std::net::SocketAddr,
    /// Event time runs this many times faster than wall time.
    #[arg(long, default_value_t = 4.0)]
    speedup: f64,
    /// Requests per second of event time over both models.
    #[arg(long, default_value_t = 120.0)]
    rate: f64,
    /// Leave the ClickHouse the demo started running at the end.
    #[arg(long)]
    keep: bool,
    /// Run without ClickHouse: everything but the history (results live in memory and are
    /// gone at the end). The demo does this by itself when no ClickHouse can be had.
    #[arg(long, conflicts_with_all = ["clickhouse", "keep"])]
    no_clickhouse: bool,
}

/// Options of `modelwatch gen`.
#[derive(Debug, clap::Args)]
struct GenArgs {
    /// A TOML file of generator options (scenario, incidents, producer settings); see
    /// crates/kafka/examples/scenario.toml.
    #[arg(long, value_name = "FILE")]
    options: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: Option<String>,
    /// Topic of the inference logs.
    #[arg(long)]
    inference_topic: Option<String>,
    /// Topic of the metric events.
    #[arg(long)]
    metric_topic: Option<String>,
    /// Encoding: avro, avro-confluent, avro-single-object or json.
    #[arg(long)]
    encoding: Option<String>,
    /// Stop after this many messages (inference and metric together).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this much event time (e.g. "30m").
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Pace messages in real time, event time running this many times faster than wall time.
    #[arg(long, value_name = "SPEEDUP")]
    real_time: Option<f64>,
    /// Seed of the scenario.
    #[arg(long)]
    seed: Option<u64>,
}

impl GenArgs {
    fn options(&self) -> anyhow::Result<GenOptions> {
        let mut o = match &self.options {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid options {}", path.display()))?
            }
            None => GenOptions::default(),
        };
        if let Some(b) = &self.brokers {
            o.brokers.clone_from(b);
        }
        if let Some(t) = &self.inference_topic {
            o.inference_topic.clone_from(t);
        }
        if let Some(t) = &self.metric_topic {
            o.metric_topic.clone_from(t);
        }
        if let Some(e) = &self.encoding {
            o.encoding = serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(e))
            .with_context(|| format!("unknown encoding {e:?}"))?;
        }
        if self.count.is_some() || self.duration.is_some() {
            o.count = self.count;
            o.duration = self.duration;
        }
        if let Some(speedup) = self.real_time {
            o.pacing = Pacing::RealTime { speedup };
        }
        if let Some(seed) = self.seed {
            o.scenario.seed = seed;
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's terminal is its progress view: only warnings are logged unless RUST_LOG says.
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        LevelFilter::WARN
    } else {
        LevelFilter::INFO
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Nothing useful is left to do if stderr is gone.
            let _ = writeln!(std::io::stderr().lock(), "error: {err:#}");
            let config_error = err.chain().any(|cause| cause.is::<ConfigError>());
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `level`; an invalid directive is skipped).
fn init_tracing(level: LevelFilter) {
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = load(&config)?;
            info!(path = %config.display(), "configuration is valid");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}: ok", config.display())?;
            writeln!(out, "{}", cfg.summary())?;
            Ok(())
        }
        Command::ConfigReference => {
            write!(std::io::stdout().lock(), "{}", config::reference::markdown())?;
            Ok(())
        }
        Command::Migrate { config } => migrate(&load(&config)?),
        Command::Alerts { command: AlertsCommand::Test { config } } => {
            let cfg = load(&config)?;
            let outcomes = modelwatch::channels::test_all(cfg.alerts());
            if outcomes.is_empty() {
                anyhow::bail!("no channel is configured in [alerts.channels]");
            }
            let mut out = std::io::stdout().lock();
            for o in &outcomes {
                writeln!(out, "{}", o.line())?;
            }
            let failed = outcomes.iter().filter(|o| !o.delivered()).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} channel(s) failed", outcomes.len());
            }
            Ok(())
        }
        Command::Run { config } => modelwatch::serve::run(&load(&config)?),
        Command::Demo(a) => {
            let broker = match a.broker.as_str() {
                "mock" => modelwatch::demo::DemoBroker::Mock,
                "local" => modelwatch::demo::DemoBroker::Local,
                other => modelwatch::demo::DemoBroker::External(other.to_owned()),
            };
            if !(a.speedup >= 1.0 && a.speedup <= 100.0) {
                anyhow::bail!("--speedup must be between 1 and 100");
            }
            if !(a.rate > 0.0 && a.rate <= 1000.0) {
                anyhow::bail!("--rate must be in (0, 1000]");
            }
            modelwatch::demo::run(&modelwatch::demo::DemoOptions {
                duration: a.duration,
                broker,
                clickhouse: a.clickhouse,
                database: a.database,
                listen: a.listen,
                speedup: a.speedup,
                rate: a.rate,
                keep: a.keep,
                no_clickhouse: a.no_clickhouse,
            })
        }
        Command::Gen(args) => {
            let opts = args.options()?;
            let report = modelwatch_kafka::run(opts).context("generating traffic")?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "produced {} inference and {} metric messages ({} bytes) in {:.1?}: {:.0} msg/s, \
                 {} delivered, {} failed, stopped by {:?}",
                report.inference_messages,
                report.metric_messages,
                report.bytes,
                report.elapsed,
                report.messages_per_second,
                report.delivered,
                report.failed,
                report.stopped_by,
            )?;
            Ok(())
        }
    }
}

/// Reads and validates the configuration in the process environment.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path, &Environment::from_process())
        .with_context(|| format!("invalid configuration {}", path.display()))
}

/// Creates or upgrades the ClickHouse schema, then checks every table's columns.
fn migrate(config: &Config) -> anyhow::Result<()> {
    let ch = config.clickhouse();
    let mut store_config =
        StoreConfig::new(ch.url.as_str().trim_end_matches('/')).with_database(&ch.database);
    store_config.user = Some(ch.user.clone());
    let password = ch.password.expose();
    store_config.password = (!password.is_empty()).then(|| password.to_owned());
    let store = Store::new(store_config).context("clickhouse settings")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let applied = store.migrate().await.context("applying migrations")?;
        store.check_schema().await.context("checking the tables")?;
        info!(database = %ch.database, applied = ?applied, "schema is up to date");
        writeln!(
            std::io::stdout().lock(),
            "database {}: {} migration(s) applied, every table matches",
            ch.database,
            applied.len()
        )?;
        anyhow::Ok(())
    })
}
