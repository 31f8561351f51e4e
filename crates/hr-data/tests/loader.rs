//! Loader properties: determinism, rank partitioning, exact resume across world sizes, skipping.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use hr_core::testing::assert_mentions;
use hr_data::loader::{EvalSet, FsEval, MetadataKind};
use hr_data::{Batch, Cursor, DataError, Loader, LoaderConfig, Manifest, SplitIndex, Store};

fn cfg(world: usize, rank: usize) -> LoaderConfig {
    LoaderConfig {
        seed: 11,
        global_batch: 8,
        world_size: world,
        rank,
        clip_seconds: 0.3,
        prefetch_batches: 2,
        workers: 2,
        ..LoaderConfig::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    index: Arc<SplitIndex>,
    root: std::path::PathBuf,
}

impl Fixture {
    /// A loader over the fixture's train split from `start` to the start of epoch `end_epoch`.
    fn loader(&self, c: LoaderConfig, start: Cursor, end_epoch: u64) -> Loader {
        let tok = common::tokenizer(&self.root);
        Loader::new(self.index.clone(), c, tok, start, Some(end_epoch)).unwrap()
    }

    /// The first `n` batches of epoch 0 (all of them with `usize::MAX`).
    fn first_batches(&self, c: LoaderConfig, start: Cursor, n: usize) -> Vec<Batch> {
        let l = self.loader(c, start, 1);
        l.take(n).map(|b| b.unwrap()).collect()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 90, 40);
    let store = Store::local(dir.path()).unwrap();
    let m = Manifest::load(&store).unwrap();
    // verify = false: shards are read by byte ranges (footer, then column chunks per row group).
    let index = Arc::new(SplitIndex::open(&store, &m, "train", false).unwrap());
    Fixture {
        root: dir.path().to_path_buf(),
        _dir: dir,
        index,
    }
}

/// Global batches (as (clip, caption) lists in rank order) from `start` to the end of its epoch.
fn global_batches(f: &Fixture, world: usize, start: Cursor) -> Vec<(Cursor, Vec<(u32, u16)>)> {
    let loaders: Vec<Loader> = (0..world)
        .map(|r| f.loader(cfg(world, r), start, start.epoch + 1))
        .collect();
    let per_rank: Vec<Vec<Batch>> = loaders
        .into_iter()
        .map(|l| l.map(|b| b.unwrap()).collect())
        .collect();
    let n = per_rank[0].len();
    (0..n)
        .map(|b| {
            let mut items = Vec::new();
            for rank in &per_rank {
                let batch = &rank[b];
                assert_eq!(batch.cursor_after, per_rank[0][b].cursor_after);
                items.extend(
                    batch
                        .clip_indices
                        .iter()
                        .copied()
                        .zip(batch.caption_indices.iter().copied()),
                );
            }
            (per_rank[0][b].cursor_after, items)
        })
        .collect()
}

#[test]
fn batches_are_well_formed() {
    let f = fixture();
    let mut l = f.loader(cfg(2, 1), Cursor::default(), 1);
    let b = l.next().unwrap().unwrap();
    assert_eq!(b.batch_size, 4);
    assert_eq!(b.samples, 9600);
    assert_eq!(b.waveforms.len(), 4 * 9600);
    assert!(b.valid_lengths.iter().all(|&v| v > 7000 && v <= 9600));
    assert_eq!(b.captions.rows, 4);
    assert_eq!(b.captions.ids.len(), 4 * b.captions.cols);
    assert_eq!(b.captions.ids[0], 2); // [CLS]
    assert_eq!(b.metadata.rows, 4);
    assert_eq!(
        b.cursor_after,
        Cursor {
            epoch: 0,
            consumed: 8
        }
    );
    assert!(b.waveforms.iter().any(|v| v.abs() > 0.1));
}

#[test]
fn same_seed_same_order_and_no_repeats_within_epoch() {
    let f = fixture();
    let a = global_batches(&f, 1, Cursor::default());
    let b = global_batches(&f, 1, Cursor::default());
    assert_eq!(a, b);
    let all: Vec<(u32, u16)> = a.iter().flat_map(|(_, items)| items.clone()).collect();
    let set: HashSet<_> = all.iter().collect();
    assert_eq!(set.len(), all.len());
    let total: u64 = f.index.shape().num_items();
    assert_eq!(all.len() as u64, total / 8 * 8);
    let next_epoch = global_batches(
        &f,
        1,
        Cursor {
            epoch: 1,
            consumed: 0,
        },
    );
    assert_ne!(a[0].1, next_epoch[0].1);
}

#[test]
fn union_over_ranks_and_resume_on_any_world_size() {
    let f = fixture();
    let reference = global_batches(&f, 1, Cursor::default());
    for world in [2, 4] {
        assert_eq!(
            global_batches(&f, world, Cursor::default()),
            reference,
            "world {world}"
        );
    }
    let mid = reference[reference.len() / 2 - 1].0;
    assert!(mid.consumed > 0);
    let rest = &reference[reference.len() / 2..];
    for world in [1, 2, 4] {
        let resumed = global_batches(&f, world, mid);
        assert_eq!(resumed.as_slice(), rest, "resume on world {world}");
    }
}

#[test]
fn resumed_batches_are_bit_identical_including_audio_crops() {
    let f = fixture();
    let mut c = cfg(2, 1);
    c.clip_seconds = 0.1; // shorter than every clip: random crops everywhere
    let full = f.first_batches(c.clone(), Cursor::default(), usize::MAX);
    let k = full.len() / 3;
    let resumed = f.first_batches(c, full[k - 1].cursor_after, usize::MAX);
    assert_eq!(resumed.as_slice(), &full[k..]);
}

#[test]
fn random_crop_is_deterministic_per_position() {
    let f = fixture();
    let mut c = cfg(1, 0);
    c.clip_seconds = 0.1;
    let a = f.first_batches(c.clone(), Cursor::default(), 3);
    let b = f.first_batches(c, Cursor::default(), 3);
    assert_eq!(a, b);
}

fn broken_fixture() -> (tempfile::TempDir, Arc<SplitIndex>) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = hr_data::shard::DatasetWriter::create(dir.path(), "broken", 64).unwrap();
    for i in 0..16 {
        let mut c = common::clip(i, 1);
        if i == 5 {
            c.audio.bytes = b"definitely not audio".to_vec();
        }
        w.push("train", c).unwrap();
    }
    common::write_dataset(&dir.path().join("tok"), 1, 64);
    std::fs::copy(
        dir.path().join("tok/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    w.finish().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let m = Manifest::load(&store).unwrap();
    let index = Arc::new(SplitIndex::open(&store, &m, "train", true).unwrap());
    (dir, index)
}

#[test]
fn undecodable_rows_fail_with_shard_and_row_or_are_skipped() {
    let (dir, index) = broken_fixture();
    let tok = common::tokenizer(dir.path());
    let mut c = cfg(1, 0);
    c.global_batch = 16;
    let loader = |c: &LoaderConfig| {
        Loader::new(
            index.clone(),
            c.clone(),
            tok.clone(),
            Cursor::default(),
            Some(1),
        )
        .unwrap()
    };
    let err = loader(&c).next().unwrap().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Undecodable { .. }));
    assert_mentions(
        &msg,
        &["train/part-00000-of-00001.parquet, row 5", "clip-0005"],
    );
    c.skip_undecodable = true;
    let mut l = loader(&c);
    let b = l.next().unwrap().unwrap();
    assert_eq!((b.batch_size, b.skipped), (15, 1));
    assert!(!b.clip_indices.contains(&5));
    assert_eq!(l.skipped(), 1);
}

#[test]
fn eval_yields_every_caption_once_and_each_clip_once() {
    let f = fixture();
    let tok = common::tokenizer(&f.root);
    let ev = EvalSet::new(f.index.clone(), cfg(1, 0), tok.clone()).unwrap();
    let q = ev.queries();
    assert_eq!(q.len() as u64, f.index.shape().num_items());
    assert!(q
        .windows(2)
        .all(|w| (w[0].clip, w[0].caption) < (w[1].clip, w[1].caption)));
    let qb = ev.query_batches(16).unwrap();
    assert_eq!(qb.iter().map(|b| b.tokens.rows).sum::<usize>(), q.len());
    let mut seen = Vec::new();
    let mut start = 0;
    while start < ev.num_clips() {
        let cb = ev.clip_batch(start, 32).unwrap();
        assert_eq!(cb.metadata.len(), 1, "one item set without FS metadata");
        assert_eq!(cb.metadata[0].rows, cb.clip_indices.len());
        seen.extend(cb.clip_indices);
        start += 32;
    }
    assert_eq!(seen, (0..90).collect::<Vec<u32>>());

    let mut fs = cfg(1, 0);
    fs.metadata = MetadataKind::FullSentence;
    // The authors' protocol: every caption is a query; query k ranks item set k, where each
    // clip's metadata is its caption (k+2) mod n.
    let ev = EvalSet::new(f.index.clone(), fs.clone(), tok.clone()).unwrap();
    let most = f
        .index
        .clips
        .iter()
        .map(|m| m.captions.len())
        .max()
        .unwrap();
    assert_eq!(ev.item_sets(), most);
    let q = ev.queries();
    assert_eq!(q.len() as u64, f.index.shape().num_items());
    assert!(q.iter().all(|q| q.item_set == q.caption as usize));
    let n4 = f.index.clips[4].captions.len();
    for set in 0..most {
        assert_eq!(
            ev.metadata_text(4, set),
            f.index.clips[4].captions[(set + 2) % n4]
        );
    }
    let qb = ev.query_batches(16).unwrap();
    let rows: std::collections::BTreeSet<usize> = qb.iter().flat_map(|b| b.rows.clone()).collect();
    assert_eq!(rows.len(), q.len(), "every query in exactly one batch");
    assert!(qb
        .iter()
        .all(|b| b.rows.iter().all(|&r| q[r].item_set == b.item_set)));
    let cb = ev.clip_batch(0, 8).unwrap();
    assert_eq!(cb.metadata.len(), most);
    let set1: Vec<String> = (0..8).map(|c| ev.metadata_text(c, 1)).collect();
    assert_eq!(cb.metadata[1], tok.encode_batch(&set1).unwrap());

    // Ours: caption 2 mod n is every clip's metadata and is not a query.
    fs.fs_eval = FsEval::FixedCaption;
    let ev = EvalSet::new(f.index.clone(), fs, tok).unwrap();
    assert_eq!(ev.item_sets(), 1);
    // Clips with >= 3 captions lose the metadata caption (index 2) from the queries.
    let clip4 = ev
        .queries()
        .into_iter()
        .filter(|q| q.clip == 4)
        .map(|q| q.caption)
        .collect::<Vec<_>>();
    assert_eq!(clip4, vec![0, 1, 3, 4]);
    assert_eq!(
        f.index.metadata_text(MetadataKind::FullSentence, 4, None),
        f.index.clips[4].captions[2]
    );
    assert_eq!(
        f.index
            .metadata_text(MetadataKind::FullSentence, 4, Some(4)),
        f.index.clips[4].captions[0]
    );
}

#[test]
fn open_loader_on_a_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    hr_data::synthetic::prepare(dir.path(), 20, 5, None, &|_| {}).unwrap();
    let mut c = cfg(1, 0);
    c.metadata = MetadataKind::Labels;
    let root = dir.path().to_str().unwrap();
    let (store, manifest) = hr_data::open_dataset(root).unwrap();
    let tok = hr_data::dataset_tokenizer(&store, &manifest, c.max_tokens).unwrap();
    let mut l = hr_data::open_loader(root, "train", c, tok, Cursor::default(), Some(1)).unwrap();
    let b = l.next().unwrap().unwrap();
    assert_eq!(b.batch_size, 8);
    // Metadata (labels) tokenizes without unknown words: [UNK] has id 1.
    assert!(!b.metadata.ids.contains(&1));
    assert!(!b.captions.ids.contains(&1));
}

#[test]
fn rank_shares_match_the_single_rank_batch_bit_for_bit() {
    let f = fixture();
    let take = |world: usize, rank: usize| -> Batch {
        let mut c = cfg(world, rank);
        c.clip_seconds = 0.1;
        let start = Cursor {
            epoch: 2,
            consumed: 16,
        };
        f.loader(c, start, 3).next().unwrap().unwrap()
    };
    let one = take(1, 0);
    for rank in 0..2 {
        let part = take(2, rank);
        let rows = rank * 4..rank * 4 + 4;
        assert_eq!(part.clip_indices, one.clip_indices[rows.clone()]);
        assert_eq!(
            part.waveforms,
            one.waveforms[rows.start * one.samples..rows.end * one.samples]
        );
        assert_eq!(part.valid_lengths, one.valid_lengths[rows]);
        assert_eq!(part.cursor_after, one.cursor_after);
    }
}
