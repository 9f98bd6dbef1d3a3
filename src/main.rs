//! The obmen command line: parse, then call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use obmen::cli;

#[derive(Parser)]
#[command(
    name = "obmen",
    version,
    about = "Runs a company's API integrations: journal, queue, retry, dedup"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a self-contained demo (data in ./obmen-demo).
    Demo {
        #[arg(long, default_value = "obmen-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Write a commented obmen.toml to start from.
    Init {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Check the config; every problem is listed with file, line and key.
    Check {
        #[arg(short, long, default_value = "obmen.toml")]
        config: PathBuf,
    },
    /// Run the server, workers and schedules.
    Serve {
        #[arg(short, long, default_value = "obmen.toml")]
        config: PathBuf,
    },
    /// Exchanges on the running server.
    Exchanges {
        #[command(subcommand)]
        action: cli::ExchangesCmd,
        #[arg(short, long, default_value = "obmen.toml", global = true)]
        config: PathBuf,
    },
    /// Run a flow on a payload (a file, or stdin) without sending anything mutating.
    DryRun {
        flow: String,
        file: Option<PathBuf>,
        #[arg(short, long, default_value = "obmen.toml")]
        config: PathBuf,
    },
    /// Manage encrypted secrets (while obmen is stopped).
    Secret {
        #[command(subcommand)]
        action: cli::SecretCmd,
        #[arg(short, long, default_value = "obmen.toml", global = true)]
        config: PathBuf,
    },
    /// Write a consistent copy of the data file (while serving too).
    Backup {
        file: PathBuf,
        #[arg(short, long, default_value = "obmen.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let code = match args.command {
        Command::Demo { dir, port } => cli::demo(&dir, port),
        Command::Init { dir } => cli::init(&dir),
        Command::Check { config } => cli::check(&config),
        Command::Serve { config } => cli::serve(&config),
        Command::Exchanges { action, config } => cli::exchanges(&config, action),
        Command::DryRun { flow, file, config } => cli::dry_run(&config, &flow, file.as_deref()),
        Command::Backup { file, config } => cli::backup(&config, &file),
        Command::Secret { action, config } => cli::secret(&config, action),
    };
    ExitCode::from(code)
}
