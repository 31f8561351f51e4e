//! `hr-data`: prepare, inspect and verify datasets.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use hr_data::convert::{self, audiocaps::AudioCapsInputs, ConvertSummary};
use hr_data::{inspect, synthetic, Store};

#[derive(Parser)]
#[command(
    name = "hr-data",
    version,
    about = "Dataset tools for hybrid audio retrieval"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a source dataset (or generate the synthetic one) into the Parquet format.
    Prepare {
        #[command(subcommand)]
        source: Source,
    },
    /// Print manifest, schema, counts, caption/keyword statistics and a few rows.
    Inspect {
        /// Dataset root (local path, file://, s3://, gs://, az://).
        root: String,
        /// Example rows to print per split.
        #[arg(long, default_value_t = 3)]
        rows: usize,
    },
    /// Check hashes, schema version and that every audio decodes; exits non-zero on failure.
    Verify {
        /// Dataset root.
        root: String,
    },
}

#[derive(Subcommand)]
enum Source {
    /// Procedural sound scenes (the embedded default).
    Synthetic {
        /// Number of clips.
        #[arg(long, default_value_t = 2000)]
        clips: u64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output dataset root.
        #[arg(long)]
        out: PathBuf,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
    /// ClothoV2 (captions + ISO-8859-1 metadata CSVs + wav folders).
    Clotho {
        /// Folder with clotho_captions_*.csv, clotho_metadata_*.csv and the audio folders.
        #[arg(long)]
        root: PathBuf,
        /// Output dataset root.
        #[arg(long)]
        out: PathBuf,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
    /// AudioCaps (captions CSVs + clips named by YouTube id + AudioSet label CSVs).
    Audiocaps {
        /// Folder with train.csv, val.csv, test.csv and the audio.
        #[arg(long)]
        root: PathBuf,
        /// AudioSet segment CSV(s) (repeatable).
        #[arg(long = "audioset-csv", required = true)]
        audioset_csv: Vec<PathBuf>,
        /// class_labels_indices.csv.
        #[arg(long)]
        labels: PathBuf,
        /// Audio folder (default: ROOT/audio/SPLIT, ROOT/SPLIT, ROOT/audio, ROOT).
        #[arg(long)]
        audio_dir: Option<PathBuf>,
        /// Output dataset root.
        #[arg(long)]
        out: PathBuf,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
    /// Any folder of audio files with an optional metadata.jsonl / captions.csv sidecar.
    Folder {
        /// Folder to convert.
        #[arg(long)]
        root: PathBuf,
        /// Output dataset root.
        #[arg(long)]
        out: PathBuf,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (pb, template) = if len == 0 {
        (
            ProgressBar::no_length(),
            "{spinner} {msg} [{elapsed_precise}] {pos} clips ({per_sec})",
        )
    } else {
        (
            ProgressBar::new(len),
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

fn report(sum: &ConvertSummary, out: &std::path::Path) {
    for (split, n) in &sum.written {
        println!("{split}: {n} clips");
    }
    if !sum.missing.is_empty() {
        println!(
            "missing audio: {} clips skipped (first: {})",
            sum.missing.len(),
            sum.missing[0]
        );
    }
    if !sum.undecodable.is_empty() {
        println!(
            "undecodable audio: {} clips skipped (first: {})",
            sum.undecodable.len(),
            sum.undecodable[0]
        );
    }
    if !sum.uncaptioned.is_empty() {
        println!(
            "no captions: {} clips skipped (first: {})",
            sum.uncaptioned.len(),
            sum.uncaptioned[0]
        );
    }
    println!("wrote {} clips to {}", sum.total(), out.display());
}

fn prepare(source: Source) -> Result<()> {
    match source {
        Source::Synthetic {
            clips,
            seed,
            out,
            clips_per_shard,
        } => {
            let pb = progress_bar(clips, "synthetic");
            let s = synthetic::prepare(&out, clips, seed, clips_per_shard, &|n| pb.inc(n))
                .with_context(|| format!("preparing the synthetic dataset in {}", out.display()))?;
            pb.finish_and_clear();
            println!(
                "wrote {} synthetic clips in {} shards to {}",
                s.clips,
                s.shards,
                out.display()
            );
        }
        Source::Clotho {
            root,
            out,
            clips_per_shard,
        } => {
            let pb = progress_bar(convert::clotho::count(&root), "clotho");
            let sum = convert::clotho::convert(&root, &out, clips_per_shard, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            report(&sum, &out);
        }
        Source::Audiocaps {
            root,
            audioset_csv,
            labels,
            audio_dir,
            out,
            clips_per_shard,
        } => {
            let inp = AudioCapsInputs {
                root,
                audioset_csvs: audioset_csv,
                labels,
                audio_dir,
            };
            let pb = progress_bar(0, "audiocaps");
            let sum = convert::audiocaps::convert(&inp, &out, clips_per_shard, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            report(&sum, &out);
        }
        Source::Folder {
            root,
            out,
            clips_per_shard,
        } => {
            let pb = progress_bar(0, "folder");
            let sum = convert::folder::convert(&root, &out, clips_per_shard, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            report(&sum, &out);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs redirected to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Prepare { source } => prepare(source)?,
        Cmd::Inspect { root, rows } => {
            let store = Store::open(&root)?;
            print!("{}", inspect::inspect(&store, rows)?);
        }
        Cmd::Verify { root } => {
            let store = Store::open(&root)?;
            let rows = hr_data::Manifest::load(&store)
                .map(|m| m.splits.keys().map(|s| m.rows(s)).sum())
                .unwrap_or(0);
            let pb = progress_bar(rows, "verify");
            let rep = inspect::verify(&store, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            for f in &rep.failures {
                eprintln!("FAIL: {f}");
            }
            println!(
                "{} shards, {} clips decoded, {} failures",
                rep.shards,
                rep.clips_ok,
                rep.failures.len()
            );
            if !rep.ok() {
                bail!(
                    "verification of {root} failed with {} problem(s)",
                    rep.failures.len()
                );
            }
        }
    }
    Ok(())
}
