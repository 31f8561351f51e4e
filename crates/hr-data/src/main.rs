//! `hr-data`: prepare, inspect and verify datasets.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hr_core::Progress;

use hr_data::audio::{AudioStorage, Codec};
use hr_data::convert::{
    self, audiocaps::AudioCapsInputs, ConvertSummary, MissingPolicy, PrepareOptions, Target,
};
use hr_data::rewrite::{self, ColumnMap, MergeOptions};
use hr_data::{inspect, synthetic, Store};

#[derive(Subcommand)]
enum Cmd {
    /// Convert a source dataset (or generate the synthetic one) into the Parquet format.
    Prepare {
        #[command(subcommand)]
        source: SourceKind,
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
    /// The union of prepared datasets (split by split) as a new dataset: clip ids become
    /// `NAME/id` (traceable to their source; `--keep-ids` keeps them, and overlapping ids are
    /// refused either way), the manifest records every source with the sha256 of its manifest.
    Merge {
        /// Dataset roots (local paths or URLs), each optionally named `ROOT=NAME` (default: the
        /// name in its manifest, e.g. clotho, audiocaps).
        #[arg(required = true, num_args = 2..)]
        roots: Vec<String>,
        /// Output dataset root (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Move tags between metadata columns: `NAME:FROM=TO` appends column FROM of dataset
        /// NAME's rows to column TO (keywords, labels), e.g. `audiocaps:labels=keywords` for
        /// the combined hybrid row of Table I (repeatable).
        #[arg(long = "map", value_name = "NAME:FROM=TO")]
        maps: Vec<String>,
        /// Keep clip ids unchanged instead of prefixing them with the dataset name.
        #[arg(long)]
        keep_ids: bool,
        /// Name of the merged dataset (default: the names joined by `+`).
        #[arg(long)]
        name: Option<String>,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
}

#[derive(Subcommand)]
enum SourceKind {
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
        /// The downloaded ClothoV2 folder: clotho_captions_*.csv, clotho_metadata_*.csv and the
        /// audio folders.
        #[arg(long = "source", alias = "root", value_name = "DIR")]
        root: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// AudioCaps (captions CSVs + clips named by YouTube id + AudioSet label CSVs).
    Audiocaps {
        /// The downloaded AudioCaps folder: train.csv, val.csv, test.csv and the audio.
        #[arg(long = "source", alias = "root", value_name = "DIR")]
        root: PathBuf,
        /// AudioSet segment CSV(s) (repeatable).
        #[arg(long = "audioset-csv", required = true)]
        audioset_csv: Vec<PathBuf>,
        /// class_labels_indices.csv.
        #[arg(long)]
        labels: PathBuf,
        /// Audio folder (default: SOURCE/audio/SPLIT, SOURCE/SPLIT, SOURCE/audio, SOURCE).
        #[arg(long)]
        audio_dir: Option<PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Any folder of audio files with an optional metadata.jsonl / captions.csv sidecar.
    Folder {
        /// The folder of audio to convert.
        #[arg(long = "source", alias = "root", value_name = "DIR")]
        root: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Write a prepared dataset again with its audio stored at one rate and codec (default:
    /// mono 16-bit wav at 32 kHz, so the loader never resamples); rows, text and tokenizer are
    /// kept, the new manifest records the source's manifest sha256 and new shard checksums.
    Reencode {
        /// Source dataset root (local path or URL).
        src: String,
        /// Output dataset root (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
        /// Clips per shard file.
        #[arg(long)]
        clips_per_shard: Option<usize>,
    },
}

/// How audio is stored.
#[derive(clap::Args)]
struct StorageArgs {
    /// Codec of the stored audio: `wav` (mono 16-bit PCM, 64 kB per second at 32 kHz),
    /// `original` (the source files' bytes and rates as they are) or `flac` (refused: no FLAC
    /// encoder here writes files symphonia reads back).
    #[arg(long, value_enum, default_value = "wav")]
    codec: CodecArg,
    /// Sample rate of the stored audio in Hz, resampled once here with the loader's resampler
    /// (default 32000, the model's rate; not with `--codec original`).
    #[arg(long, value_name = "HZ")]
    sample_rate: Option<u32>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CodecArg {
    Wav,
    Flac,
    Original,
}

impl StorageArgs {
    fn storage(&self) -> hr_data::Result<AudioStorage> {
        let codec = match self.codec {
            CodecArg::Wav => Codec::Wav,
            CodecArg::Flac => Codec::Flac,
            CodecArg::Original => Codec::Original,
        };
        AudioStorage::new(codec, self.sample_rate)
    }
}

/// Output and options of every converter.
#[derive(clap::Args)]
struct CommonArgs {
    /// Output dataset root.
    #[arg(long)]
    out: PathBuf,
    /// Clips per shard file.
    #[arg(long)]
    clips_per_shard: Option<usize>,
    /// Audio that does not decode: `fail` (stop, naming the file) or `skip` (report each file
    /// and go on).
    #[arg(long, value_enum, default_value = "fail")]
    on_bad_audio: OnBadAudio,
    /// Record this tokenizer (tokenizer.json or vocab.txt) with the dataset: the default of
    /// models trained from scratch on it (a pretrained text encoder brings its own).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnBadAudio {
    Fail,
    Skip,
}

impl CommonArgs {
    fn options(&self) -> hr_data::Result<PrepareOptions> {
        Ok(PrepareOptions {
            clips_per_shard: self.clips_per_shard,
            on_bad_audio: match self.on_bad_audio {
                OnBadAudio::Fail => MissingPolicy::Fail,
                OnBadAudio::Skip => MissingPolicy::Skip,
            },
            audio: self.storage.storage()?,
        })
    }

    /// Runs one converter with these options and a progress bar (`len` clips, 0: unknown),
    /// then records the tokenizer and prints the summary.
    fn convert(
        &self,
        (what, len): (&str, u64),
        run: impl FnOnce(&Target) -> hr_data::Result<ConvertSummary>,
    ) -> Result<()> {
        let (opts, out) = (self.options()?, self.out.as_path());
        let sum = with_progress((what, "clips", len), |progress| {
            run(&Target {
                dir: out,
                opts,
                progress,
            })
        })?;
        if let Some(t) = &self.tokenizer {
            hr_data::record_tokenizer(out, t)
                .with_context(|| format!("recording {} in {}", t.display(), out.display()))?;
            println!("tokenizer: {} recorded as tokenizer.json", t.display());
        }
        report(&sum, out);
        Ok(())
    }
}

/// Runs `f` with a progress callback counting `unit`s of `what` out of `len` (0: unknown): a
/// bar on a terminal, progress lines otherwise ([`Progress`]).
fn with_progress<T>(
    (what, unit, len): (&str, &'static str, u64),
    f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T,
) -> T {
    let pb = Progress::new(what, unit, len);
    let out = f(&|n| pb.inc(n));
    pb.finish();
    out
}

fn report(sum: &ConvertSummary, out: &std::path::Path) {
    for (split, n) in &sum.written {
        println!("{split}: {n} clips");
    }
    report_skipped("missing audio", &sum.missing);
    report_skipped("undecodable audio", &sum.undecodable);
    report_skipped("no captions", &sum.uncaptioned);
    println!("wrote {} clips to {}", sum.total(), out.display());
}

/// `WHAT: N clips skipped (first: ...)` when any were.
fn report_skipped(what: &str, skipped: &[String]) {
    if let Some(first) = skipped.first() {
        println!("{what}: {} clips skipped (first: {first})", skipped.len());
    }
}

fn prepare(source: SourceKind) -> Result<()> {
    match source {
        SourceKind::Synthetic {
            clips,
            seed,
            out,
            clips_per_shard,
        } => {
            let s = with_progress(("synthetic", "clips", clips), |progress| {
                synthetic::prepare(&out, clips, seed, clips_per_shard, progress)
            })
            .with_context(|| format!("preparing the synthetic dataset in {}", out.display()))?;
            println!(
                "wrote {} synthetic clips in {} shards to {}",
                s.clips,
                s.shards,
                out.display()
            );
        }
        SourceKind::Clotho { root, common } => {
            let len = convert::clotho::count(&root);
            common.convert(("clotho", len), |to| convert::clotho::convert(&root, to))?;
        }
        SourceKind::Audiocaps {
            root,
            audioset_csv,
            labels,
            audio_dir,
            common,
        } => {
            let inp = AudioCapsInputs {
                root,
                audioset_csvs: audioset_csv,
                labels,
                audio_dir,
            };
            common.convert(("audiocaps", 0), |to| convert::audiocaps::convert(&inp, to))?;
        }
        SourceKind::Folder { root, common } => {
            common.convert(("folder", 0), |to| convert::folder::convert(&root, to))?;
        }
        SourceKind::Reencode {
            src,
            out,
            storage,
            clips_per_shard,
        } => reencode(&src, &out, &storage, clips_per_shard)?,
    }
    Ok(())
}

fn reencode(
    src: &str,
    out: &std::path::Path,
    storage: &StorageArgs,
    clips_per_shard: Option<usize>,
) -> Result<()> {
    let audio = storage.storage()?;
    let source = rewrite::Source::open(src, None).with_context(|| format!("opening {src}"))?;
    let rows = source
        .manifest
        .splits
        .keys()
        .map(|s| source.manifest.rows(s))
        .sum();
    let m = with_progress(("reencode", "rows", rows), |progress| {
        rewrite::reencode(&source, src, out, audio, clips_per_shard, progress)
    })
    .with_context(|| format!("re-encoding {src} into {}", out.display()))?;
    for split in m.splits.keys() {
        println!("{split}: {} clips", m.rows(split));
    }
    let rate = audio
        .sample_rate
        .map_or("source rates".into(), |r| format!("{r} Hz"));
    println!("wrote {} ({:?}, {rate})", out.display(), audio.codec);
    Ok(())
}

fn merge(
    roots: &[String],
    out: &std::path::Path,
    maps: &[String],
    keep_ids: bool,
    name: Option<String>,
    clips_per_shard: Option<usize>,
) -> Result<()> {
    let mut sources = Vec::new();
    let mut plain_roots = Vec::new();
    for r in roots {
        let (root, name) = match r.rsplit_once('=') {
            Some((root, name)) if !name.contains('/') => (root, Some(name)),
            _ => (r.as_str(), None),
        };
        sources.push(rewrite::Source::open(root, name).with_context(|| format!("opening {root}"))?);
        plain_roots.push(root.to_string());
    }
    let opts = MergeOptions {
        name,
        keep_ids,
        maps: maps
            .iter()
            .map(|m| ColumnMap::parse(m))
            .collect::<hr_data::Result<_>>()?,
        clips_per_shard,
    };
    let sum = rewrite::merge(&sources, &plain_roots, out, &opts)
        .with_context(|| format!("merging into {}", out.display()))?;
    for s in &sum.sources {
        let rows: Vec<String> = s.rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{} ({}): {}", s.name, s.root, rows.join(", "));
    }
    for split in sum.manifest.splits.keys() {
        println!("{split}: {} clips", sum.manifest.rows(split));
    }
    println!("wrote {} ({})", out.display(), sum.manifest.name);
    Ok(())
}

fn main() -> Result<()> {
    let cmd = hr_core::cli::start::<Cmd>("hr-data", "Dataset tools for hybrid audio retrieval");
    match cmd {
        Cmd::Prepare { source } => prepare(source)?,
        Cmd::Inspect { root, rows } => {
            let store = Store::open(&root)?;
            print!("{}", inspect::inspect(&store, rows)?);
        }
        Cmd::Merge {
            roots,
            out,
            maps,
            keep_ids,
            name,
            clips_per_shard,
        } => merge(&roots, &out, &maps, keep_ids, name, clips_per_shard)?,
        Cmd::Verify { root } => {
            let store = Store::open(&root)?;
            let rows = hr_data::Manifest::load(&store)
                .map(|m| m.splits.keys().map(|s| m.rows(s)).sum())
                .unwrap_or(0);
            let rep = with_progress(("verify", "rows", rows), |progress| {
                inspect::verify(&store, progress)
            })?;
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
