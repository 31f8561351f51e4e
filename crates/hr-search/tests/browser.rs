//! A real browser on the search page: headless Chromium (driven over the DevTools protocol by
//! `tests/cdp.py`) loads the page, submits a query, and the ranked list in the DOM must be the
//! API's ranking, with the first result's audio loading (HTTP 200, an audio content type). A
//! screenshot is kept under the test's output folder. Without Chromium (a developer machine)
//! the test prints a skip line; CI installs it.

mod common;

use std::process::Command;

use hr_search::build::{build, BuildOptions};
use hr_search::encoder::Encoder;
use hr_search::index::Index;
use hr_search::serve::{App, Limits};
use hr_search::source::SourceSpec;
use hr_tensor::Device;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

#[test]
fn chromium_searches_and_plays_the_first_result() {
    let Some(browser) = chromium() else {
        println!("skipped: no chromium on this machine (CI installs the Debian package)");
        return;
    };
    let run = common::trained("late");
    let folder = common::tone_folder();
    let out = common::scratch().join("browser-index");
    let mut enc = Encoder::load(&run, Device::Cpu).unwrap();
    build(
        &mut enc,
        &SourceSpec::Folder { root: folder },
        &out,
        BuildOptions::default(),
    )
    .unwrap();
    let index = Index::open(&out, Device::Cpu).unwrap();
    let app = App::new(index, enc, Limits::default()).unwrap();
    let addr = hr_search::serve::spawn(app, "127.0.0.1:0")
        .unwrap()
        .to_string();
    let shots = common::scratch().join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let query = "a bird sings";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cdp.py");
    let url = format!("http://{addr}/");
    let o = Command::new("python3")
        .args([script, &browser, &url, query, shots.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("browser saw: {seen}");

    let api = common::get(&addr, "/api/search?q=a%20bird%20sings&k=10")
        .unwrap()
        .json();
    let want: Vec<&str> = api["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let got: Vec<&str> = seen["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, want, "the page shows the API's ranking");
    assert!(seen["status"].as_str().unwrap().contains("10 results"));
    let fetched = &seen["audio_fetch"];
    assert_eq!(fetched["status"], 200);
    assert_eq!(fetched["type"], "audio/wav");
    assert!(fetched["bytes"].as_u64().unwrap() > 44);
    let load = &seen["audio_load"];
    assert!(
        load["readyState"].as_u64().unwrap() >= 1 && load["error"].is_null(),
        "{load}"
    );
    assert!(
        (load["duration"].as_f64().unwrap() - 1.5).abs() < 0.01,
        "{load}"
    );
    let png = std::fs::read(seen["screenshot"].as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
