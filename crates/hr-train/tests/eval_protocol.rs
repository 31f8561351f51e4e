//! Full-sentence (FS) metadata at evaluation: the authors' protocol (every caption is a query,
//! query k ranks the clips fused with their caption (k+2) mod n) against ours (caption 2 is the
//! metadata, not a query), through the real evaluation of a trained checkpoint.

mod common;

use hr_data::FsEval;
use hr_data::MetadataKind;
use hr_train::eval_job::{evaluate_checkpoint, load};

fn trained(fusion: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let extra = [
        format!("model.fusion={fusion:?}"),
        "model.metadata=\"full_sentence\"".into(),
        "eval.batch_size=7".into(),
    ];
    common::trained_briefly(dir, fusion, &extra)
}

#[test]
fn fs_protocols_rank_the_queries_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    for fusion in ["none", "late", "mid"] {
        let run = trained(fusion, dir.path());
        let mut ck = load(&run).unwrap();
        assert_eq!(ck.config.model.metadata, MetadataKind::FullSentence);
        assert_eq!(
            ck.config.eval.full_sentence,
            FsEval::CaptionOffsets,
            "the default"
        );
        let (offsets, index) = evaluate_checkpoint(&mut ck, None, "test", 7).unwrap();
        let captions: usize = index.clips.iter().map(|c| c.captions.len()).sum();
        assert_eq!(
            offsets.queries.len(),
            captions,
            "{fusion}: every caption is a query"
        );
        ck.config.eval.full_sentence = FsEval::FixedCaption;
        let (fixed, _) = evaluate_checkpoint(&mut ck, None, "test", 7).unwrap();
        let with_meta = index.clips.iter().filter(|c| c.captions.len() > 1).count();
        assert_eq!(
            fixed.queries.len(),
            captions - with_meta,
            "{fusion}: caption 2 is not a query"
        );
        // Without fusion the metadata plays no part: the offsets protocol must then score
        // every query exactly as a single item set does (rows land where they belong).
        if fusion == "none" {
            ck.config.model.metadata = MetadataKind::Keywords;
            let (plain, _) = evaluate_checkpoint(&mut ck, None, "test", 7).unwrap();
            assert_eq!(plain.queries.len(), offsets.queries.len());
            assert_eq!(plain.ranks, offsets.ranks);
            assert_eq!(plain.sim, offsets.sim);
        }
        // Query 0 ranks the clips fused with their caption 2 in both protocols (every synthetic
        // clip has five captions): those rows must agree (to rounding: mid fusion scores query
        // batches of other shapes).
        assert!(index.clips.iter().all(|c| c.captions.len() == 5));
        let n = index.clips.len();
        let row = |r: &hr_train::evaluate::EvalResult, clip: u32| {
            let q = r
                .queries
                .iter()
                .position(|q| q.clip == clip && q.caption == 0)
                .unwrap();
            r.sim[q * n..(q + 1) * n].to_vec()
        };
        for clip in 0..n as u32 {
            let (a, b) = (row(&offsets, clip), row(&fixed, clip));
            let close = a
                .iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
            assert!(close, "{fusion}, clip {clip}: {a:?} vs {b:?}");
        }
    }
}
