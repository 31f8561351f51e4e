//! S3 read path against a local moto server (`python3 -m moto.server`), only with `--features cloud`.
//! The test is skipped (with a message) when moto is not installed.
#![cfg(feature = "cloud")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hr_data::shard::open_split;
use hr_data::{Manifest, SplitIndex, Store};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_moto() -> Option<(Moto, u16)> {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server"])
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto(child);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((moto, port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn http_put(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn dataset_on_s3_reads_like_local() {
    let Some((_moto, port)) = start_moto() else {
        eprintln!("SKIPPED: moto not installed (pip install 'moto[server]')");
        return;
    };
    assert!(http_put(port, "/hr-bucket").starts_with("HTTP/1.1 200"));
    // SAFETY-free in edition 2021; this test binary sets these before any store is built.
    std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");

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
