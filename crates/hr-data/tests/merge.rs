//! `hr-data merge`: the union of prepared datasets, its provenance and its refusals.

mod common;

use std::path::Path;

use hr_core::testing::assert_mentions;
use hr_data::rewrite::{merge, ColumnMap, MergeOptions, Source, TagColumn};
use hr_data::{Manifest, Store};

fn two_datasets(dir: &Path) -> (String, String) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    common::write_dataset(&a, 70, 32);
    common::write_dataset(&b, 20, 32);
    (a.display().to_string(), b.display().to_string())
}

#[test]
fn merge_is_the_union_split_by_split_with_traceable_ids_and_mapped_tags() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_datasets(dir.path());
    let sources = [
        Source::open(&a, Some("clotho")).unwrap(),
        Source::open(&b, Some("audiocaps")).unwrap(),
    ];
    let out = dir.path().join("merged");
    let opts = MergeOptions {
        maps: vec![ColumnMap::parse("audiocaps:labels=keywords").unwrap()],
        ..MergeOptions::default()
    };
    let sum = merge(&sources, &[a.clone(), b.clone()], &out, &opts).unwrap();
    assert_eq!(sum.manifest.name, "clotho+audiocaps");
    assert_eq!(sum.manifest.rows("train"), 90);
    assert_eq!(sum.manifest.rows("test"), 10);
    let train = common::records(&out, "train");
    let src_a = common::records(Path::new(&a), "train");
    assert_eq!(train[0].id, format!("clotho/{}", src_a[0].id));
    assert_eq!(train[0].audio.bytes, src_a[0].audio.bytes);
    assert_eq!(
        train[0].keywords, src_a[0].keywords,
        "clotho rows keep their keywords"
    );
    let first_b = &train[70];
    assert!(first_b.id.starts_with("audiocaps/clip-"));
    assert_eq!(first_b.keywords.last().map(String::as_str), Some("tone"));
    assert_eq!(
        first_b.keywords.len(),
        3,
        "keywords + the mapped label: {:?}",
        first_b.keywords
    );
    // The manifest records each source, its manifest's sha256 and its rows.
    let m = Manifest::load(&Store::local(&out).unwrap()).unwrap();
    assert_eq!(m.sources.len(), 2);
    assert_eq!(m.sources[1].name, "audiocaps");
    assert_eq!(m.sources[1].root, b);
    assert_eq!(m.sources[1].id_prefix, "audiocaps/");
    assert_eq!(m.sources[1].rows["train"], 20);
    let sha =
        hr_data::shard::sha256_hex(&std::fs::read(Path::new(&b).join("manifest.json")).unwrap());
    assert_eq!(m.sources[1].manifest_sha256, sha);
    // Nothing else is left next to the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

#[test]
fn merge_refuses_overlapping_ids_duplicate_names_an_existing_output_and_bad_maps() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_datasets(dir.path());
    let out = dir.path().join("merged");
    let sources = [
        Source::open(&a, Some("x")).unwrap(),
        Source::open(&b, Some("y")).unwrap(),
    ];
    let keep = MergeOptions {
        keep_ids: true,
        ..MergeOptions::default()
    };
    let msg = merge(&sources, &[], &out, &keep).unwrap_err().to_string();
    assert_mentions(&msg, &["clip id `clip-", "`x`", "`y`"]);
    assert!(!out.exists(), "nothing is written on error");

    let same = [
        Source::open(&a, None).unwrap(),
        Source::open(&b, None).unwrap(),
    ];
    let msg = merge(&same, &[], &out, &MergeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("named `fixture`"), "{msg}");

    let bad_map = MergeOptions {
        maps: vec![ColumnMap {
            source: "z".into(),
            from: TagColumn::Labels,
            to: TagColumn::Keywords,
        }],
        ..MergeOptions::default()
    };
    let msg = merge(&sources, &[], &out, &bad_map)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`z`"), "{msg}");
    assert!(ColumnMap::parse("y:labels=captions").is_err());

    std::fs::create_dir_all(&out).unwrap();
    let msg = merge(&sources, &[], &out, &MergeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("exists"), "{msg}");
}

#[test]
fn a_dataset_of_another_schema_version_is_refused_naming_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_datasets(dir.path());
    let path = Path::new(&a).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text.replacen("\"schema_version\": ", "\"schema_version\": 9", 1);
    std::fs::write(&path, old).unwrap();
    let msg = Source::open(&a, None).err().unwrap().to_string();
    assert_mentions(&msg, &["manifest.json", "schema_version"]);
}
