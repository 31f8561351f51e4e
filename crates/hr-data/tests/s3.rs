//! S3 read path against a local moto server (`python3 -m moto.server`), with the `cloud` feature
//! (on by default). Skipped with a message when moto is not installed, unless `HR_REQUIRE_MOTO`
//! is set (CI installs moto and sets it).
#![cfg(feature = "cloud")]

mod common;

use bytes::Bytes;
use hr_data::shard::open_split;
use hr_data::testing::Moto;
use hr_data::{Manifest, SplitIndex, Store};

#[test]
fn dataset_on_s3_reads_like_local() {
    let Some(_moto) = Moto::start("hr-bucket") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = common::write_dataset(dir.path(), 70, 64);
    let s3 = Store::open("s3://hr-bucket/datasets/fixture").unwrap();
    let mut files = vec!["manifest.json".to_string(), "tokenizer.json".to_string()];
    files.extend(m.splits.values().flatten().map(|s| s.path.clone()));
    for f in &files {
        s3.put(f, Bytes::from(std::fs::read(dir.path().join(f)).unwrap()))
            .unwrap();
    }
    let m2 = Manifest::load(&s3).unwrap();
    assert_eq!(m2, m);
    let remote = open_split(&s3, &m2, "train", false).unwrap();
    let verified = open_split(&s3, &m2, "train", true).unwrap();
    assert_eq!(
        remote[1].read_all().unwrap(),
        verified[1].read_all().unwrap()
    );
    let index = SplitIndex::open(&s3, &m2, "train", true).unwrap();
    assert_eq!(index.num_clips(), 70);
    let missing = Store::open("s3://hr-bucket/nothing-here").unwrap();
    assert!(Manifest::load(&missing)
        .unwrap_err()
        .to_string()
        .contains("no manifest.json"));
}
