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
    /// Run the pipeline: consume, window, score, judge, write.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the configuration reference (Markdown, as in docs/configuration.md).
    ConfigReference,
    /// Generate synthetic inference and metric traffic into Kafka.
    Gen {
        /// Options of the generator.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`; an invalid directive is skipped).
fn init_tracing() {
    let filter =
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
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
        Command::Run { .. } => {
            anyhow::bail!("`modelwatch run` is not yet available in this build")
        }
        Command::Gen { .. } => {
            anyhow::bail!("`modelwatch gen` is not yet available in this build")
        }
    }
}

/// Reads and validates the configuration in the process environment.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path, &Environment::from_process())
        .with_context(|| format!("invalid configuration {}", path.display()))
}

/// Creates or upgrades the ClickHouse schema.
fn migrate(config: &Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!(
        "`modelwatch migrate` needs the clickhouse storage crate (modelwatch-clickhouse), which is not linked into this build"
    )
}
