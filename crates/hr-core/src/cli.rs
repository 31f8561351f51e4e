//! The command line every tool shares: the global `--log-format` ([`LogArgs`]), and for the
//! tools made of subcommands, the whole preamble ([`start`]).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// The logging flag of every binary (flatten it into the tool's arguments).
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log lines as `text` or `json` (one object per line); default: `HR_LOG_FORMAT`, else text.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

impl LogArgs {
    /// Starts logging in the chosen format ([`crate::init_logging`]).
    pub fn init(&self) {
        crate::init_logging(self.log_format.as_deref());
    }
}

/// A tool's command line: one subcommand `C` and the global `--log-format`.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Cli<C: Subcommand> {
    /// What to do.
    #[command(subcommand)]
    pub cmd: C,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Parses this process's arguments as the tool `name` (`about`: its one-line description),
/// exiting with clap's message on bad arguments or `--help`, starts logging
/// ([`crate::init_logging`]) and returns the subcommand.
pub fn start<C: Subcommand>(name: &'static str, about: &'static str) -> C {
    let matches = Cli::<C>::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .get_matches();
    let cli = Cli::<C>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.log.init();
    cli.cmd
}
