//! `hr-search serve`: the JSON API, audio bytes equal to the source, 4xx JSON errors for bad
//! requests, and concurrent clients without errors.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::get;
use hr_search::build::{build, BuildOptions};
use hr_search::encoder::Encoder;
use hr_search::index::Index;
use hr_search::serve::{url_segment, App, Limits};
use hr_search::source::SourceSpec;
use hr_tensor::Device;

/// Builds the index of `spec` with the late-fusion model and serves it; returns the address.
fn served(name: &str, spec: SourceSpec) -> String {
    let run = common::trained("late");
    let out = common::scratch().join(name);
    let mut enc = Encoder::load(&run, Device::Cpu).unwrap();
    build(&mut enc, &spec, &out, BuildOptions::default()).unwrap();
    let index = Index::open(&out, Device::Cpu).unwrap();
    let app = App::new(index, enc, Limits::default()).unwrap();
    start(app)
}

fn start(app: Arc<App>) -> String {
    hr_search::serve::spawn(app, "127.0.0.1:0")
        .unwrap()
        .to_string()
}

/// A server of the tone folder's index in `name` (one per test: builds run in parallel).
fn folder_server(name: &str) -> (String, PathBuf) {
    let folder = common::tone_folder();
    let addr = served(
        name,
        SourceSpec::Folder {
            root: folder.clone(),
        },
    );
    (addr, folder)
}

#[test]
fn the_api_answers_and_serves_the_source_audio() {
    let (addr, folder) = folder_server("serve-api");
    let page = get(&addr, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("<form id=\"search\""));

    let info = get(&addr, "/api/info").unwrap().json();
    assert_eq!(info["items"], 12);

    let r = get(&addr, "/api/search?q=a%20dog%20barks&k=4").unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(v["query"], "a dog barks");
    let ranks: Vec<u64> = results
        .iter()
        .map(|r| r["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 2, 3, 4]);

    // An id with a slash, through the item and audio routes.
    let id = "more/tone10.wav";
    let item = get(&addr, &format!("/api/item/{}", url_segment(id))).unwrap();
    assert_eq!(item.status, 200);
    assert_eq!(item.json()["id"], id);
    let audio_url = item.json()["audio"].as_str().unwrap().to_string();
    let audio = get(&addr, &audio_url).unwrap();
    assert_eq!(audio.status, 200);
    assert_eq!(audio.content_type, "audio/wav");
    assert_eq!(audio.body, std::fs::read(folder.join(id)).unwrap());
}

#[test]
fn a_dataset_index_serves_the_stored_audio() {
    let data = common::dataset();
    let spec = SourceSpec::Dataset {
        root: data.display().to_string(),
        split: "test".into(),
    };
    let addr = served("serve-dataset", spec);
    let (store, manifest) = hr_data::open_dataset(data.to_str().unwrap()).unwrap();
    let split = hr_data::SplitIndex::open(&store, &manifest, "test", true).unwrap();
    let hits = get(&addr, "/api/search?q=rain&k=2").unwrap().json();
    for r in hits["results"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let clip = split.clips.iter().position(|c| c.id == id).unwrap();
        let audio = get(&addr, r["audio"].as_str().unwrap()).unwrap();
        assert_eq!(audio.status, 200);
        assert!(
            audio.content_type.starts_with("audio/"),
            "{}",
            audio.content_type
        );
        assert_eq!(audio.body, split.clip_audio(clip).unwrap().bytes, "{id}");
    }
}

#[test]
fn bad_requests_get_json_errors() {
    let (addr, _) = folder_server("serve-bad");
    let long = "a".repeat(1001);
    let cases = [
        ("/api/search", 400, "empty"),
        ("/api/search?q=%20%20", 400, "empty"),
        ("/api/search?q=dog&k=0", 400, "k must be"),
        ("/api/search?q=dog&k=100000", 400, "k must be"),
        ("/api/search?q=dog&k=many", 400, "bad parameters"),
        (&*format!("/api/search?q={long}"), 400, "longer than"),
        ("/api/item/nope.wav", 404, "nope.wav"),
        ("/api/audio/nope.wav", 404, "nope.wav"),
        ("/api/nothing", 404, "no such route"),
    ];
    for (path, status, says) in cases {
        let r = get(&addr, path).unwrap();
        assert_eq!(r.status, status, "{path}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{path}: {msg}");
    }
    // Still serving.
    assert_eq!(get(&addr, "/api/search?q=dog").unwrap().status, 200);
}

/// 8 clients, 25 requests each, against 127.0.0.1: no errors. The latencies are printed here;
/// the recorded figures come from `cargo bench -p hr-search` (docs/PERF.md).
#[test]
fn concurrent_clients_get_no_errors() {
    let (addr, _) = folder_server("serve-load");
    let latencies = load(&addr, 8, 25);
    let errors = latencies.iter().filter(|l| l.is_none()).count();
    assert_eq!(errors, 0);
    let mut ms: Vec<f64> = latencies.into_iter().flatten().collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "200 requests: p50 {:.1} ms, p99 {:.1} ms",
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100]
    );
}

/// `clients` threads each sending `each` searches; the latency of each (None: an error).
pub fn load(addr: &str, clients: usize, each: usize) -> Vec<Option<f64>> {
    let words = [
        "dog",
        "rain on a roof",
        "a car passes",
        "birds sing",
        "a bell rings",
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let q = url_segment(words[(c + i) % words.len()]);
                            let t0 = std::time::Instant::now();
                            let r = get(addr, &format!("/api/search?q={q}&k=10")).ok()?;
                            (r.status == 200).then(|| t0.elapsed().as_secs_f64() * 1e3)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// With its queue full the server answers 503 with a JSON error, and pages still load.
#[test]
fn a_full_queue_answers_503() {
    let run = common::trained("late");
    let out = common::scratch().join("serve-full");
    let mut enc = Encoder::load(&run, Device::Cpu).unwrap();
    let spec = SourceSpec::Folder {
        root: common::tone_folder(),
    };
    build(&mut enc, &spec, &out, BuildOptions::default()).unwrap();
    let index = Index::open(&out, Device::Cpu).unwrap();
    let limits = Limits {
        queue: 0,
        ..Limits::default()
    };
    let addr = start(App::new(index, enc, limits).unwrap());
    let r = get(&addr, "/api/search?q=dog").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("busy"));
    assert_eq!(get(&addr, "/").unwrap().status, 200);
}
