//! hr-sweep: the sweep coordinator. A sweep file (TOML: a base experiment config, axes,
//! inclusion/exclusion rules, evaluation sets, the paper's numbers) expands into runs with stable
//! ids; a backend (local processes or Slurm) runs what is missing; a crash-safe ledger owned by
//! the coordinator records every job; the report aggregates results in the paper's layout.
//!
//! - [`spec`]: the sweep file; [`plan`]: its expansion into runs;
//! - [`ledger`]: the append-only, fsynced journal;
//! - [`jobs`]: the run-directory contract with `hr-train` / `hr-eval`;
//! - [`local`] and [`slurm`]: the backends; [`coordinator`]: launch preparation and status;
//! - [`report`] and [`chart`]: Markdown, CSV and PNG output.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bins;
pub mod chart;
pub mod coordinator;
mod error;
pub mod fsutil;
pub mod jobs;
pub mod ledger;
pub mod local;
pub mod plan;
pub mod report;
pub mod slurm;
pub mod spec;

pub use error::{Result, SweepError};
pub use plan::{Plan, Run};
