//! Parquet shards, manifest and the object-store read path, including bad input.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use hr_core::testing::assert_mentions;
use hr_data::manifest::MANIFEST_FILE;
use hr_data::shard::{open_split, ShardReader, ROW_GROUP_CLIPS};
use hr_data::store::{classify_root, RootKind};
use hr_data::{DataError, Manifest, Store};

#[test]
fn roundtrip_local_row_groups_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::write_dataset(dir.path(), 150, 100);
    let train = m.split("train").unwrap();
    assert_eq!(train.len(), 2);
    assert_eq!(train[0].path, "train/part-00000-of-00002.parquet");
    assert_eq!((train[0].rows, train[1].rows), (100, 50));
    assert_eq!(m.rows("test"), 5);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let loaded = Manifest::load(&store).unwrap();
    assert_eq!(loaded, m);
    let shards = open_split(&store, &loaded, "train", true).unwrap();
    assert_eq!(
        shards[0].row_group_rows(),
        vec![ROW_GROUP_CLIPS, 100 - ROW_GROUP_CLIPS]
    );
    let all: Vec<_> = shards.iter().flat_map(|s| s.read_all().unwrap()).collect();
    assert_eq!(all.len(), 150);
    assert_eq!(all[7], common::clip(7, 1 + 7 % 5));
    assert_eq!(all[149].id, "clip-0149");
}

#[test]
fn file_url_and_in_memory_store_read_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::write_dataset(dir.path(), 70, 64);
    let url = format!("file://{}", dir.path().display());
    assert!(matches!(classify_root(&url).unwrap(), RootKind::Local(_)));
    let file_store = Store::open(&url).unwrap();

    let mem = Store::in_memory("memory://test").unwrap();
    mem.put(
        MANIFEST_FILE,
        Bytes::from(std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap()),
    )
    .unwrap();
    for s in m.splits.values().flatten() {
        mem.put(
            &s.path,
            Bytes::from(std::fs::read(dir.path().join(&s.path)).unwrap()),
        )
        .unwrap();
    }
    for store in [&file_store, &mem] {
        let m2 = Manifest::load(store).unwrap();
        // Range reads (no verification) and whole-file reads give the same records.
        let a = open_split(store, &m2, "train", false).unwrap();
        let b = open_split(store, &m2, "train", true).unwrap();
        assert_eq!(a[1].read_all().unwrap(), b[1].read_all().unwrap());
        assert_eq!(a[1].read_all().unwrap()[0].id, "clip-0064");
    }
}

#[test]
fn cloud_urls_parse_and_say_how_the_build_lacks_them() {
    for url in ["s3://bucket/ds", "gs://bucket/ds", "az://container/ds"] {
        assert!(matches!(classify_root(url).unwrap(), RootKind::Cloud(_)));
        if !cfg!(feature = "cloud") {
            let msg = Store::open(url).unwrap_err().to_string();
            assert!(msg.contains("--no-default-features"), "{msg}");
        }
    }
    let msg = Store::open("ftp://x/y").unwrap_err().to_string();
    assert!(msg.contains("unknown scheme"), "{msg}");
}

fn corrupt_first_shard(f: impl Fn(&mut Vec<u8>)) -> (tempfile::TempDir, Store, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let m = common::write_dataset(dir.path(), 20, 64);
    let p = dir.path().join(&m.split("train").unwrap()[0].path);
    let mut bytes = std::fs::read(&p).unwrap();
    f(&mut bytes);
    std::fs::write(&p, bytes).unwrap();
    let store = Store::local(dir.path()).unwrap();
    (dir, store, m)
}

#[test]
fn sha256_mismatch_names_the_shard() {
    let (_d, store, m) = corrupt_first_shard(|b| {
        let k = b.len() / 2;
        b[k] ^= 0xff;
    });
    let err = ShardReader::open(&store, &m.split("train").unwrap()[0], true)
        .err()
        .unwrap();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }));
    let msg = err.to_string();
    assert_mentions(&msg, &["train/part-00000-of-00001.parquet", "re-download"]);
}

#[test]
fn truncated_shard_is_reported_as_corrupt() {
    let (_d, store, m) = corrupt_first_shard(|b| b.truncate(b.len() / 2));
    let err = ShardReader::open(&store, &m.split("train").unwrap()[0], false)
        .err()
        .unwrap();
    assert!(matches!(err, DataError::CorruptShard { .. }), "{err}");
    assert!(err.to_string().contains("part-00000-of-00001.parquet"));
    // Garbage that still has a plausible footer length is also corrupt, not a panic.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.parquet"), b"PAR1garbagePAR1").unwrap();
    let err = open_file(dir.path(), "x.parquet").err().unwrap();
    assert!(err.to_string().contains("x.parquet"));
}

/// Opens the Parquet file `rel` under `dir` as a shard (no checksum).
fn open_file(dir: &std::path::Path, rel: &str) -> hr_data::Result<ShardReader> {
    let info = hr_data::ShardInfo {
        path: rel.into(),
        rows: 0,
        bytes: 0,
        sha256: String::new(),
    };
    ShardReader::open(&Store::local(dir).unwrap(), &info, false)
}

fn write_parquet(path: &std::path::Path, batch: &arrow::array::RecordBatch) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn wrong_schema_and_missing_column_are_named() {
    use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let ids: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
    let caps: ArrayRef = Arc::new(Int32Array::from(vec![1]));
    // `captions` has the wrong type and `audio` is missing.
    let batch = RecordBatch::try_from_iter(vec![("id", ids), ("captions", caps)]).unwrap();
    let p = dir.path().join("bad.parquet");
    write_parquet(&p, &batch);
    let err = open_file(dir.path(), "bad.parquet").err().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, DataError::WrongSchema { .. })
            && msg.contains("`audio`")
            && msg.contains("bad.parquet"),
        "{msg}"
    );

    // Right columns, wrong type.
    let mut rec = common::clip(0, 1);
    rec.captions = vec!["x".into()];
    let good = hr_data::schema::to_record_batch(&[rec]).unwrap();
    let mut cols = good.columns().to_vec();
    cols[2] = Arc::new(Int32Array::from(vec![1]));
    let mut fields: Vec<arrow::datatypes::Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[2] = arrow::datatypes::Field::new("captions", arrow::datatypes::DataType::Int32, false);
    let bad = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap();
    write_parquet(&p, &bad);
    let r = open_file(dir.path(), "bad.parquet").unwrap();
    let msg = r.read_all().unwrap_err().to_string();
    assert_mentions(&msg, &["column `captions`", "expected list<utf8>"]);
}

#[test]
fn empty_caption_list_names_shard_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut clips: Vec<_> = (0..5).map(|i| common::clip(i, 2)).collect();
    clips[3].captions.clear();
    let batch = hr_data::schema::to_record_batch(&clips).unwrap();
    std::fs::create_dir_all(dir.path().join("train")).unwrap();
    write_parquet(&dir.path().join("train/empty.parquet"), &batch);
    let r = open_file(dir.path(), "train/empty.parquet").unwrap();
    let err = r.read_all().unwrap_err();
    let msg = err.to_string();
    assert_mentions(
        &msg,
        &["train/empty.parquet", "row 3", "empty caption list"],
    );
    // The writer refuses such clips up front.
    let mut w = hr_data::shard::DatasetWriter::create(dir.path(), "x", 10).unwrap();
    assert!(w.push("train", clips[3].clone()).is_err());
}

#[test]
fn missing_or_invalid_manifest_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let msg = Manifest::load(&store).unwrap_err().to_string();
    assert_mentions(&msg, &["no manifest.json", "hr-data prepare"]);
    std::fs::write(dir.path().join(MANIFEST_FILE), b"{\"name\": 3}").unwrap();
    let msg = Manifest::load(&store).unwrap_err().to_string();
    assert!(msg.contains("manifest.json is invalid"), "{msg}");
}

#[test]
fn rewriting_is_idempotent_and_removes_stale_shards() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::write_dataset(dir.path(), 130, 64);
    assert_eq!(a.split("train").unwrap().len(), 3);
    let b = common::write_dataset(dir.path(), 130, 64);
    assert_eq!(a, b);
    let c = common::write_dataset(dir.path(), 60, 64);
    assert_eq!(c.split("train").unwrap().len(), 1);
    let files = std::fs::read_dir(dir.path().join("train")).unwrap().count();
    assert_eq!(files, 1);
}

#[test]
fn verify_reports_undecodable_audio_and_duplicate_ids_by_shard_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = hr_data::shard::DatasetWriter::create(dir.path(), "v", 64).unwrap();
    for i in 0..6 {
        let mut c = common::clip(i, 1);
        if i == 2 {
            c.audio.bytes = b"garbage".to_vec();
        }
        if i == 4 {
            c.id = "clip-0001".into();
        }
        w.push("train", c).unwrap();
    }
    w.finish().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let rep = hr_data::inspect::verify(&store, &|_| {}).unwrap();
    assert!(!rep.ok());
    assert_eq!(rep.clips_ok, 5);
    let all = rep.failures.join("\n");
    assert_mentions(
        &all,
        &[
            "train/part-00000-of-00001.parquet, row 2",
            "cannot decode audio",
        ],
    );
    assert!(all.contains("row 4: clip id `clip-0001` already used at shard train/part-00000-of-00001.parquet, row 1"), "{all}");
}
