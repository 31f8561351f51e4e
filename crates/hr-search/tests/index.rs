//! The index scores as `hr-eval` does, records what built it, and an interrupted build resumes
//! to the identical files.

mod common;

use std::path::Path;

use hr_search::build::{build, BuildOptions, BuildOutcome};
use hr_search::encoder::Encoder;
use hr_search::index::Index;
use hr_search::search::{scores, search_like, search_text};
use hr_search::source::SourceSpec;
use hr_search::Error;
use hr_tensor::Device;

fn test_split() -> SourceSpec {
    SourceSpec::Dataset {
        root: common::dataset().display().to_string(),
        split: "test".into(),
    }
}

fn opts(part_size: usize, max_parts: Option<usize>) -> BuildOptions {
    BuildOptions {
        batch_size: 3,
        part_size,
        max_parts,
    }
}

/// Every score of the index (queries embedded by search, items by the index build) equals
/// `hr-eval`'s for the same checkpoint, split and queries, so it ranks each caption's clip
/// where `hr-eval` does.
fn agrees_with_hr_eval(fusion: &str) {
    let run = common::trained(fusion);
    let mut ck = hr_train::eval_job::load(&run).unwrap();
    let (r, split) = hr_train::eval_job::evaluate_checkpoint(&mut ck, None, "test", 5).unwrap();
    assert!(r.clips >= 5 && !r.queries.is_empty());

    let out = common::scratch().join(format!("index-{fusion}"));
    let mut enc = Encoder::load(&run, Device::Cpu).unwrap();
    let done = build(&mut enc, &test_split(), &out, opts(4, None)).unwrap();
    let BuildOutcome::Complete(m) = done else {
        panic!("{done:?}")
    };
    let weights = ck.dir.join(hr_train::checkpoint::MODEL_FILE);
    assert_eq!(
        m.plan.model_sha256,
        hr_data::shard::sha256_file(&weights).unwrap().0
    );
    assert_eq!(m.plan.items, r.clips);
    assert_eq!(format!("{:?}", m.plan.fusion).to_lowercase(), fusion);

    let index = Index::open(&out, Device::Cpu).unwrap();
    for (i, it) in index.items.iter().enumerate() {
        assert_eq!(it.id, split.clips[i].id);
        assert_eq!(
            it.metadata,
            split.clips[i].keywords.join(" "),
            "keyword metadata of {}",
            it.id
        );
        assert!(it.duration_s > 0.0);
    }
    assert_eq!(index.meta_vectors.is_some(), fusion == "mid");
    let texts: Vec<&str> = r.queries.iter().map(|q| q.text.as_str()).collect();
    let q = enc.embed_queries(&texts).unwrap();
    let got = scores(&index, &enc, &q).unwrap();
    let mut worst = 0f32;
    for (qi, row) in got.iter().enumerate() {
        for (c, s) in row.iter().enumerate() {
            worst = worst.max((s - r.sim[qi * r.clips + c]).abs());
        }
    }
    assert!(worst <= 1e-5, "{fusion}: largest score difference {worst}");
    let targets: Vec<usize> = r.queries.iter().map(|q| q.clip as usize).collect();
    let flat: Vec<f32> = got.concat();
    let ranks = hr_train::metrics::ranks(&flat, r.clips, &targets);
    assert_eq!(ranks, r.ranks, "{fusion}: ranks");
    let m = hr_train::metrics::from_ranks(&ranks);
    assert_eq!(
        (m.r1, m.r5, m.r10),
        (r.metrics.r1, r.metrics.r5, r.metrics.r10)
    );

    // The top-k of the search API is the head of the full ranking.
    let hits = search_text(&index, &enc, &texts[..1], 3).unwrap();
    let row = &got[0];
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let top: Vec<usize> = hits[0].iter().map(|h| h.item).collect();
    assert_eq!(top, order[..3]);
    let like = search_like(&index, 0, 3).unwrap();
    assert!(like.len() == 3 && like.iter().all(|h| h.item != 0 && h.score <= 1.0 + 1e-5));
}

#[test]
fn late_fusion_index_agrees_with_hr_eval() {
    agrees_with_hr_eval("late");
}

#[test]
fn mid_fusion_index_agrees_with_hr_eval() {
    agrees_with_hr_eval("mid");
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "parts"] {
        let d = dir.join(sub);
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn an_interrupted_build_resumes_to_the_identical_files() {
    let run = common::trained("late");
    let mut enc = Encoder::load(&run, Device::Cpu).unwrap();
    let whole = common::scratch().join("resume-whole");
    let parts = common::scratch().join("resume-parts");
    let spec = test_split();
    build(&mut enc, &spec, &whole, opts(3, None)).unwrap();

    let first = build(&mut enc, &spec, &parts, opts(3, Some(1))).unwrap();
    assert!(
        matches!(first, BuildOutcome::Stopped { done: 1, .. }),
        "{first:?}"
    );
    let err = Index::open(&parts, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("interrupted"), "{err}");
    // A part left half-written by a kill is only ever a temporary file: atomic writes.
    let second = build(&mut enc, &spec, &parts, opts(3, Some(1))).unwrap();
    assert!(
        matches!(second, BuildOutcome::Stopped { done: 2, .. }),
        "{second:?}"
    );
    let last = build(&mut enc, &spec, &parts, opts(3, None)).unwrap();
    assert!(matches!(last, BuildOutcome::Complete(_)));
    let (a, b) = (files(&whole), files(&parts));
    assert_eq!(a.len(), b.len());
    for ((na, ba), (nb, bb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ba == bb, "{na} differs after resuming");
    }
    // Done is done: a rerun changes nothing.
    assert!(matches!(
        build(&mut enc, &spec, &parts, opts(3, None)).unwrap(),
        BuildOutcome::Complete(_)
    ));

    // Another checkpoint or another part size in the same folder is refused, naming the folder.
    let mut other = Encoder::load(&common::trained("mid"), Device::Cpu).unwrap();
    let e = build(&mut other, &spec, &parts, opts(3, None))
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::OtherBuild { .. }) && e.to_string().contains("resume-parts"),
        "{e}"
    );
    let e = build(&mut enc, &spec, &parts, opts(5, None)).err().unwrap();
    assert!(e.to_string().contains("part size 3"), "{e}");
}
