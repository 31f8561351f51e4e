//! `hr-search`: embed a collection once with a trained checkpoint, search it by text or by clip,
//! export the vectors, serve it over HTTP.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use hr_search::build::{build, BuildOptions, BuildOutcome};
use hr_search::encoder::Encoder;
use hr_search::index::Index;
use hr_search::search::{search_like, search_text, Hit};
use hr_search::serve::{App, Limits};
use hr_search::source::SourceSpec;

#[derive(Subcommand)]
enum Cmd {
    /// Embed every clip of a dataset split or of a folder once into an index (resumable).
    Index(IndexArgs),
    /// Rank the index for text queries, or for one of its clips (`--like`).
    Query(QueryArgs),
    /// Write the vectors as .npy and the ids as text, for other tools.
    Export(ExportArgs),
    /// Serve the index: a JSON API and a search page with an audio player per result.
    Serve(ServeArgs),
}

#[derive(Args)]
struct IndexArgs {
    /// Checkpoint directory, or a run directory (its newest committed checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A prepared dataset (path or object-store URL) whose `--split` to index.
    #[arg(long, conflicts_with = "folder", required_unless_present = "folder")]
    data: Option<String>,
    /// The dataset split.
    #[arg(long, default_value = "test")]
    split: String,
    /// A folder of audio files (sidecar `metadata.jsonl` or `captions.csv` as `hr-data
    /// prepare folder` reads them; clips without one are indexed by audio alone).
    #[arg(long)]
    folder: Option<PathBuf>,
    /// The index folder to write (created; an interrupted build in it is resumed).
    #[arg(long)]
    out: PathBuf,
    /// Device to embed on: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Clips per model batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Clips per part file (the unit an interrupted build resumes from).
    #[arg(long, default_value_t = 1024)]
    part_size: usize,
    /// Write at most this many new parts, then stop (for jobs with a time limit; rerun to go on).
    #[arg(long)]
    max_parts: Option<usize>,
}

#[derive(Args)]
struct Common {
    /// The index folder.
    index: PathBuf,
    /// Device to search on: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Keep the vectors in memory as `f32`, or `f16` (half the memory and the bytes read per
    /// query; `none`/`late` fusion indexes on the CPU).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    vectors: String,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    common: Common,
    /// The text query.
    #[arg(conflicts_with_all = ["queries", "like"], required_unless_present_any = ["queries", "like"])]
    text: Option<String>,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Print JSON (one object per query) instead of a table.
    #[arg(long)]
    json: bool,
    /// A CSV of queries (column `caption`, else the first column); with `--out`.
    #[arg(long, requires = "out", conflicts_with = "like")]
    queries: Option<PathBuf>,
    /// Write the ranking of `--queries` here in the DCASE language-based audio retrieval
    /// submission layout: `caption,fname_1,...,fname_K` (K = `-k`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rank the clips most similar to this clip of the index (audio-to-audio).
    #[arg(long)]
    like: Option<String>,
}

#[derive(Args)]
struct ExportArgs {
    /// The index folder.
    index: PathBuf,
    /// The folder to write `embeddings.npy` (and `meta_embeddings.npy`), `ids.txt` into.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Queries encoded at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Requests waiting or encoding at most (more are answered 503).
    #[arg(long, default_value_t = 64)]
    queue: usize,
}

fn main() {
    hr_tensor::cpu::keep_freed_memory();
    let cmd = hr_core::cli::start::<Cmd>(
        "hr-search",
        "Search a collection of audio by text with a trained checkpoint",
    );
    let res = match cmd {
        Cmd::Index(a) => index(a),
        Cmd::Query(a) => query(a),
        Cmd::Export(a) => export(a),
        Cmd::Serve(a) => serve(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn device(s: &str) -> Result<hr_tensor::Device> {
    hr_tensor::Device::parse(s).context("--device")
}

fn index(a: IndexArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let spec = match (a.data, a.folder) {
        (Some(root), None) => SourceSpec::Dataset {
            root,
            split: a.split,
        },
        (None, Some(root)) => SourceSpec::Folder { root },
        _ => bail!("give --data (with --split) or --folder"),
    };
    let mut enc = Encoder::load(&a.checkpoint, dev)?;
    let opts = BuildOptions {
        batch_size: a.batch_size,
        part_size: a.part_size,
        max_parts: a.max_parts,
    };
    match build(&mut enc, &spec, &a.out, opts)? {
        BuildOutcome::Complete(m) => {
            let p = &m.plan;
            println!(
                "index {}: {} clips, {} parts, {:?} fusion, {} vectors of {} (model {})",
                a.out.display(),
                p.items,
                m.parts.len(),
                p.fusion,
                if p.fusion == hr_models::fusion::FusionKind::Mid {
                    "2 x"
                } else {
                    "1 x"
                },
                p.dim,
                &p.model_sha256[..12.min(p.model_sha256.len())]
            );
        }
        BuildOutcome::Stopped { done, total } => {
            println!(
                "stopped after --max-parts: {done} of {total} parts written; rerun to continue"
            );
        }
    }
    Ok(())
}

/// The index and the model that embedded it (its weights must be the same).
fn open(c: &Common) -> Result<(Index, Encoder)> {
    let dev = device(&c.device)?;
    let dtype = match c.vectors.as_str() {
        "f16" => hr_tensor::DType::F16,
        _ => hr_tensor::DType::F32,
    };
    let index = Index::open_as(&c.index, dev, dtype)?;
    let plan = &index.manifest.plan;
    let enc = Encoder::load(&plan.checkpoint, dev).with_context(|| {
        format!(
            "loading the index's checkpoint {}",
            plan.checkpoint.display()
        )
    })?;
    if enc.model_sha256 != plan.model_sha256 {
        bail!(
            "{}: its weights changed since the index was built (sha256 {} vs {}); rebuild the index",
            plan.checkpoint.display(),
            enc.model_sha256,
            plan.model_sha256
        );
    }
    Ok((index, enc))
}

fn query(a: QueryArgs) -> Result<()> {
    let (index, enc) = open(&a.common)?;
    if let Some(id) = &a.like {
        let hits = search_like(&index, index.position(id)?, a.k)?;
        return print_hits(&index, id, &hits, a.json);
    }
    if let (Some(qfile), Some(out)) = (&a.queries, &a.out) {
        let texts = read_queries(qfile)?;
        let mut ranked = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            ranked.extend(search_text(&index, &enc, chunk, a.k)?);
        }
        write_submission(out, &index, &texts, &ranked, a.k)?;
        println!("{}: {} queries ranked", out.display(), texts.len());
        return Ok(());
    }
    let text = a.text.context("give a query text, --queries or --like")?;
    let hits = search_text(&index, &enc, &[text.as_str()], a.k)?;
    print_hits(&index, &text, &hits[0], a.json)
}

fn print_hits(index: &Index, query: &str, hits: &[Hit], as_json: bool) -> Result<()> {
    if as_json {
        let results: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(r, h)| {
                let it = &index.items[h.item];
                json!({"rank": r + 1, "id": it.id, "score": h.score, "source": it.source,
                       "duration_s": it.duration_s, "metadata": it.metadata})
            })
            .collect();
        println!("{}", json!({"query": query, "results": results}));
        return Ok(());
    }
    for (r, h) in hits.iter().enumerate() {
        let it = &index.items[h.item];
        println!("{:>3}  {:>9.4}  {}  {}", r + 1, h.score, it.id, it.source);
    }
    Ok(())
}

/// The captions of a query CSV: column `caption`, else the first column.
fn read_queries(path: &Path) -> Result<Vec<String>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let headers = r
        .headers()
        .with_context(|| format!("{}", path.display()))?
        .clone();
    let col = headers
        .iter()
        .position(|h| h.trim() == "caption")
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let text = rec.get(col).unwrap_or("").trim().to_string();
        if text.is_empty() {
            bail!("{}: row {} has no caption", path.display(), i + 2);
        }
        out.push(text);
    }
    Ok(out)
}

/// The DCASE submission layout: `caption,fname_1..fname_k`, file names of the ranked clips.
fn write_submission(
    path: &Path,
    index: &Index,
    texts: &[String],
    ranked: &[Vec<Hit>],
    k: usize,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["caption".to_string()];
    header.extend((1..=k).map(|i| format!("fname_{i}")));
    w.write_record(&header)?;
    for (text, hits) in texts.iter().zip(ranked) {
        let mut row = vec![text.clone()];
        row.extend(hits.iter().map(|h| file_name(&index.items[h.item].id)));
        row.resize(k + 1, String::new());
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().context("csv")?;
    hr_core::write_atomic(path, &bytes).with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// The file name of an id (its last path component).
fn file_name(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_string()
}

fn export(a: ExportArgs) -> Result<()> {
    let index = Index::open(&a.index, hr_tensor::Device::Cpu)?;
    for f in hr_search::export::export(&index, &a.out)? {
        println!("{}", a.out.join(f).display());
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let (index, enc) = open(&a.common)?;
    let limits = Limits {
        workers: a.workers,
        queue: a.queue,
        ..Limits::default()
    };
    let app = App::new(index, enc, limits)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("--addr {}", a.addr))?;
        let addr = listener.local_addr()?;
        println!("serving on http://{addr}/");
        tracing::info!("serving on http://{addr}/");
        hr_search::serve::serve(app, listener)
            .await
            .context("server")
    })
}
