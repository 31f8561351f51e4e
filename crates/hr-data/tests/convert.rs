//! Converter tests on small fixture trees in the official layouts.

mod common;

use std::path::Path;

use hr_data::audio::encode_wav;
use hr_data::convert::{audiocaps, clotho, folder, Target};

fn wav(path: &Path, channels: usize, sr: u32, bits: u16, secs: f32) {
    let x = common::sine(330.0, sr, secs);
    let chans = vec![x; channels];
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, encode_wav(&chans, sr, bits).unwrap()).unwrap();
}

fn clotho_tree(root: &Path) {
    let dev = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n\
        a.wav,A dog barks.,\"A dog, barking loudly\",Dog noises,Woof woof,A canine\n\
        b.wav,Rain falls,Rain on a roof,Water drops,Wet weather,Storm\n";
    std::fs::write(root.join("clotho_captions_development.csv"), dev).unwrap();
    let mut meta =
        b"file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n".to_vec();
    meta.extend_from_slice(b"a.wav,dog;bark;caf\xe9,123,https://freesound.org/x,\"[0, 10]\",someone,http://creativecommons.org/licenses/by/3.0/\n");
    meta.extend_from_slice(
        b"b.wav,rain; water ;,124,https://freesound.org/y,\"[0, 10]\",other,CC0\n",
    );
    std::fs::write(root.join("clotho_metadata_development.csv"), meta).unwrap();
    let val = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nc.wav,Birds,Birds sing,Chirping,Tweets,Song\n";
    std::fs::write(root.join("clotho_captions_validation.csv"), val).unwrap();
    wav(&root.join("development/a.wav"), 2, 44_100, 16, 0.5); // stereo 44.1 kHz
    wav(&root.join("development/b.wav"), 1, 44_100, 24, 0.4); // 24-bit
    wav(&root.join("validation/c.wav"), 1, 44_100, 16, 0.3);
}

#[test]
fn clotho_official_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clotho");
    std::fs::create_dir_all(&root).unwrap();
    clotho_tree(&root);
    let out = dir.path().join("out");
    let sum = clotho::convert(&root, &Target::new(&out)).unwrap();
    assert_eq!(sum.total(), 3);
    let train = common::records(&out, "train");
    assert_eq!(train.len(), 2);
    let a = &train[0];
    assert_eq!(a.id, "a.wav");
    assert_eq!(a.captions[1], "A dog, barking loudly");
    assert_eq!(a.keywords, vec!["dog", "bark", "café"]);
    assert_eq!(a.description.as_deref(), Some("Dog noises"));
    // Stored once at the model's rate (mono 16-bit wav), recorded in the manifest.
    assert_eq!(a.sample_rate, 32_000);
    assert!(a.audio.path.ends_with(".wav"));
    assert!((a.duration_s - 0.5).abs() < 0.01);
    let m = hr_data::Manifest::load(&hr_data::Store::local(&out).unwrap()).unwrap();
    assert_eq!(m.audio, Some(hr_data::audio::AudioStorage::default()));
    assert_eq!(train[1].keywords, vec!["rain", "water"]);
    assert_eq!(train[1].license.as_deref(), Some("CC0"));
    assert_eq!(common::records(&out, "val").len(), 1);
    // Idempotent: a second run gives the same manifest (same hashes).
    let m1 = std::fs::read(out.join("manifest.json")).unwrap();
    clotho::convert(&root, &Target::new(&out)).unwrap();
    assert_eq!(m1, std::fs::read(out.join("manifest.json")).unwrap());
}

#[test]
fn clotho_missing_audio_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    clotho_tree(dir.path());
    std::fs::remove_file(dir.path().join("development/b.wav")).unwrap();
    let msg = clotho::convert(dir.path(), &Target::new(&dir.path().join("out")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("b.wav") && msg.contains("missing"), "{msg}");
}

#[test]
fn audiocaps_layout_with_labels_and_a_missing_clip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("train.csv"),
        "audiocap_id,youtube_id,start_time,caption\n1,abc123,30,\"A man speaks, then a dog barks\"\n2,missing1,0,Nothing here\n",
    )
    .unwrap();
    let mut test = String::from("audiocap_id,youtube_id,start_time,caption\n");
    for k in 0..5 {
        test.push_str(&format!("{},xyz789,10,Caption {k} of engine\n", 10 + k));
    }
    std::fs::write(root.join("test.csv"), test).unwrap();
    std::fs::write(
        root.join("class_labels_indices.csv"),
        "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n1,/m/0bt9lr,Dog\n2,/m/02mk9,\"Engine, motor\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("balanced_train_segments.csv"),
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n\
         abc123, 30.000, 40.000, \"/m/09x0r,/m/0bt9lr\"\nxyz789, 10.000, 20.000, \"/m/02mk9\"\nother, 0.000, 10.000, \"/m/09x0r\"\n",
    )
    .unwrap();
    wav(&root.join("audio/train/abc123.wav"), 2, 44_100, 16, 0.3);
    wav(&root.join("audio/test/Yxyz789.wav"), 1, 16_000, 24, 0.3);
    let inp = audiocaps::AudioCapsInputs {
        root: root.to_path_buf(),
        audioset_csvs: vec![root.join("balanced_train_segments.csv")],
        labels: root.join("class_labels_indices.csv"),
        audio_dir: None,
    };
    let out = root.join("out");
    let sum = audiocaps::convert(&inp, &Target::new(&out)).unwrap();
    assert_eq!(sum.total(), 2);
    assert_eq!(sum.missing.len(), 1);
    assert!(sum.missing[0].contains("missing1"));
    let train = common::records(&out, "train");
    assert_eq!(train[0].id, "abc123");
    assert_eq!(train[0].labels, vec!["Speech", "Dog"]);
    assert_eq!(train[0].captions, vec!["A man speaks, then a dog barks"]);
    let test = common::records(&out, "test");
    assert_eq!(test[0].captions.len(), 5);
    assert_eq!(test[0].labels, vec!["Engine, motor"]);
    assert_eq!(test[0].sample_rate, 32_000);
}

#[test]
fn folder_with_jsonl_sidecar_and_split_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    wav(&root.join("train/x.wav"), 1, 22_050, 16, 0.2);
    wav(&root.join("test/y.wav"), 2, 48_000, 16, 0.2);
    wav(&root.join("train/nocap.wav"), 1, 22_050, 16, 0.2);
    std::fs::write(
        root.join("metadata.jsonl"),
        "{\"file_name\": \"train/x.wav\", \"captions\": [\"an x\", \"x again\"], \"keywords\": [\"x\"]}\n\
         {\"file_name\": \"y.wav\", \"caption\": \"a y\", \"labels\": [\"Y\"], \"description\": \"why\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let sum = folder::convert(&root, &Target::new(&out)).unwrap();
    assert_eq!(sum.total(), 2);
    assert_eq!(sum.uncaptioned, vec!["train/nocap.wav"]);
    let train = common::records(&out, "train");
    assert_eq!(
        (train[0].id.as_str(), train[0].captions.len()),
        ("train/x.wav", 2)
    );
    let test = common::records(&out, "test");
    assert_eq!(test[0].labels, vec!["Y"]);
    assert_eq!(test[0].description.as_deref(), Some("why"));
}

#[test]
fn folder_with_csv_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    wav(&root.join("a.wav"), 1, 32_000, 16, 0.2);
    std::fs::write(
        root.join("captions.csv"),
        "file_name,caption_1,caption_2,keywords,split\na.wav,\"one, two\",three,k1;k2,val\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    folder::convert(&root, &Target::new(&out)).unwrap();
    let val = common::records(&out, "val");
    assert_eq!(val[0].captions, vec!["one, two", "three"]);
    assert_eq!(val[0].keywords, vec!["k1", "k2"]);
}

use hr_data::audio::{AudioStorage, Codec};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn folder_with_flac_ogg_mp3_input_decodes_and_resamples() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    std::fs::create_dir_all(&root).unwrap();
    let mut sidecar = String::new();
    for name in [
        "tone-44k1-stereo.flac",
        "tone-48k-mono.ogg",
        "tone-48k-mono.mp3",
    ] {
        std::fs::write(root.join(name), fixture(name)).unwrap();
        sidecar.push_str(&format!(
            "{{\"file_name\": \"{name}\", \"caption\": \"a tone\"}}\n"
        ));
    }
    std::fs::write(root.join("metadata.jsonl"), sidecar).unwrap();
    let original = hr_data::convert::PrepareOptions {
        audio: AudioStorage::new(Codec::Original, None).unwrap(),
        ..Default::default()
    };
    for (opts, want) in [
        (Default::default(), [32_000, 32_000, 32_000]),
        (original, [44_100, 48_000, 48_000]),
    ] {
        let out = dir.path().join(format!("out-{}", want[0]));
        folder::convert(
            &root,
            &Target {
                opts,
                ..Target::new(&out)
            },
        )
        .unwrap();
        check_tones(&common::records(&out, "train"), &want);
    }
}

fn check_tones(recs: &[hr_data::schema::ClipRecord], rates: &[i32]) {
    assert_eq!(recs.len(), 3);
    let got: Vec<i32> = recs.iter().map(|r| r.sample_rate).collect();
    assert_eq!(got, rates);
    for rec in recs {
        assert!(
            (rec.duration_s - 0.5).abs() < 0.06,
            "{} {}",
            rec.id,
            rec.duration_s
        );
        let y = hr_data::audio::load_32k(&rec.audio.bytes, &rec.audio.path, "t").unwrap();
        assert!(
            (y.len() as i64 - 16_000).abs() <= 2000,
            "{} {}",
            rec.id,
            y.len()
        );
        let rms = (y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32).sqrt();
        assert!(rms > 0.1, "{} rms {rms}", rec.id);
    }
}
