//! Building an index: every clip embedded once, part by part; each part is written atomically,
//! so a build that is interrupted (killed, preempted, or stopped by `max_parts`) resumes where
//! it stopped and writes the same files as an uninterrupted one.

use std::path::Path;

use crate::encoder::{Encoder, ItemVectors};
use crate::error::{Error, Result};
use crate::index::{
    encode_part, part_name, read_json, write_json, Manifest, PartInfo, Plan, FORMAT, INDEX_FILE,
    PARTS_DIR, PLAN_FILE, VERSION,
};
use crate::source::{ItemInfo, Source, SourceSpec};

/// Settings of a build.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Clips per model batch.
    pub batch_size: usize,
    /// Clips per part file (the unit of resumption).
    pub part_size: usize,
    /// Write at most this many parts in this call, then stop (a job with a time limit
    /// continues in the next one); `None`: all.
    pub max_parts: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            batch_size: 32,
            part_size: 1024,
            max_parts: None,
        }
    }
}

/// How a build call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildOutcome {
    /// The index is complete.
    Complete(Manifest),
    /// Stopped after `max_parts`: `done` of `total` parts exist.
    Stopped {
        /// Parts written so far.
        done: usize,
        /// Parts of the whole index.
        total: usize,
    },
}

/// Builds (or resumes, or confirms) the index of `spec` embedded by `enc` in `out`.
pub fn build(
    enc: &mut Encoder,
    spec: &SourceSpec,
    out: &Path,
    opts: BuildOptions,
) -> Result<BuildOutcome> {
    if opts.batch_size == 0 || opts.part_size == 0 {
        return Err(Error::BadRequest(
            "--batch-size and --part-size must be at least 1".into(),
        ));
    }
    let source = Source::open(spec, enc)?;
    let plan = Plan {
        format: FORMAT.into(),
        version: VERSION,
        checkpoint: enc.checkpoint.clone(),
        model_sha256: enc.model_sha256.clone(),
        fusion: enc.fusion(),
        metadata: enc.metadata,
        dim: enc.width(),
        tau: enc.tau(),
        source: spec.clone(),
        items: source.len(),
        part_size: opts.part_size,
    };
    if let Some(done) = existing(out, &plan)? {
        return Ok(BuildOutcome::Complete(done));
    }
    let parts_dir = out.join(PARTS_DIR);
    std::fs::create_dir_all(&parts_dir).map_err(Error::io(&parts_dir))?;
    write_json(&out.join(PLAN_FILE), &plan)?;
    let total = plan.items.div_ceil(opts.part_size);
    let progress = hr_core::Progress::new("index", "clips", plan.items as u64);
    let mut written = 0;
    for k in 0..total {
        let (lo, hi) = (
            k * opts.part_size,
            ((k + 1) * opts.part_size).min(plan.items),
        );
        let path = parts_dir.join(part_name(k));
        if !path.is_file() {
            if opts.max_parts.is_some_and(|m| written >= m) {
                progress.finish();
                return Ok(BuildOutcome::Stopped { done: k, total });
            }
            let bytes = embed_part(enc, &source, lo, hi, opts.batch_size)?;
            hr_core::write_atomic(&path, &bytes)?;
            written += 1;
        }
        progress.inc((hi - lo) as u64);
    }
    progress.finish();
    let manifest = Manifest {
        parts: part_infos(&parts_dir, &plan, opts.part_size)?,
        plan,
    };
    write_json(&out.join(INDEX_FILE), &manifest)?;
    Ok(BuildOutcome::Complete(manifest))
}

/// A complete index of the same plan in `out` (nothing to do), or `None` to build; an error
/// when `out` holds another index or another build.
fn existing(out: &Path, plan: &Plan) -> Result<Option<Manifest>> {
    let index = out.join(INDEX_FILE);
    if index.is_file() {
        let m: Manifest = read_json(&index)?;
        return match differs(&m.plan, plan) {
            None => Ok(Some(m)),
            Some(what) => Err(Error::OtherBuild {
                path: out.to_path_buf(),
                what,
            }),
        };
    }
    let pfile = out.join(PLAN_FILE);
    if pfile.is_file() {
        let p: Plan = read_json(&pfile)?;
        if let Some(what) = differs(&p, plan) {
            return Err(Error::OtherBuild {
                path: out.to_path_buf(),
                what,
            });
        }
    } else if out.is_dir()
        && std::fs::read_dir(out)
            .map_err(Error::io(out))?
            .next()
            .is_some()
    {
        return Err(Error::OtherBuild {
            path: out.to_path_buf(),
            what: "other files (not an index folder)".into(),
        });
    }
    Ok(None)
}

/// What differs between the plan found and the plan wanted, in words.
fn differs(found: &Plan, want: &Plan) -> Option<String> {
    let checks = [
        (
            found.model_sha256 != want.model_sha256,
            format!("checkpoint {} (another model)", found.checkpoint.display()),
        ),
        (
            found.source != want.source,
            format!("another collection ({:?})", found.source),
        ),
        (
            found.items != want.items,
            format!(
                "{} clips (the collection now has {})",
                found.items, want.items
            ),
        ),
        (
            found.part_size != want.part_size,
            format!("part size {}", found.part_size),
        ),
        (
            found.version != want.version || found.format != want.format,
            format!("format {} v{}", found.format, found.version),
        ),
    ];
    checks.into_iter().find(|(d, _)| *d).map(|(_, what)| what)
}

/// Embeds items `[lo, hi)` in batches and encodes them as one part.
fn embed_part(
    enc: &mut Encoder,
    source: &Source,
    lo: usize,
    hi: usize,
    batch: usize,
) -> Result<Vec<u8>> {
    let mut infos: Vec<ItemInfo> = Vec::with_capacity(hi - lo);
    let mut all = ItemVectors {
        embedding: Vec::new(),
        meta: None,
        present: Vec::new(),
    };
    let mut start = lo;
    while start < hi {
        let n = batch.min(hi - start);
        let (b, durations) = source.batch(enc, start, n)?;
        let v = enc.embed_items(&b)?;
        for (&i, d) in b.clip_indices.iter().zip(durations) {
            let mut info = source.info(i as usize, enc.metadata);
            info.duration_s = d;
            infos.push(info);
        }
        all.embedding.extend(v.embedding);
        all.present.extend(v.present);
        if let Some(m) = v.meta {
            all.meta.get_or_insert_with(Vec::new).extend(m);
        }
        start += n;
    }
    encode_part(&infos, &all, enc.width())
}

/// The parts of a finished build with their sizes and hashes.
fn part_infos(dir: &Path, plan: &Plan, part_size: usize) -> Result<Vec<PartInfo>> {
    let total = plan.items.div_ceil(part_size);
    (0..total)
        .map(|k| {
            let file = part_name(k);
            let (sha256, _) = hr_data::shard::sha256_file(&dir.join(&file))?;
            let rows = part_size.min(plan.items - k * part_size);
            Ok(PartInfo { file, rows, sha256 })
        })
        .collect()
}
