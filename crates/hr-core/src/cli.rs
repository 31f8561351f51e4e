//! The command line every tool with subcommands shares: its subcommand and `--log-format`.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// A tool's command line: one subcommand `C` and the global `--log-format`.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Cli<C: Subcommand> {
    /// What to do.
    #[command(subcommand)]
    pub cmd: C,
    /// Log lines as `text` or `json` (one object per line); default: `HR_LOG_FORMAT`, else text.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
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
    crate::init_logging(cli.log_format.as_deref());
    cli.cmd
}
