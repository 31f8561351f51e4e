//! Test support: a local S3-compatible server (moto) with a bucket, and uploading a prepared
//! dataset to it. Used by the S3 tests of hr-data and hr-train.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{DataError, Result};
use crate::{Manifest, Store};

/// Set when moto must be there (CI): its absence fails instead of skipping.
pub const REQUIRE_MOTO_VAR: &str = "HR_REQUIRE_MOTO";

/// A moto server on 127.0.0.1, stopped on drop.
pub struct Moto {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `python3 -m moto.server` with bucket `bucket` and points the `AWS_*` variables of
    /// this process at it; `None` when moto is not installed, after printing the test's skip
    /// line (a panic instead when [`REQUIRE_MOTO_VAR`] is set).
    pub fn start(bucket: &str) -> Option<Moto> {
        let moto = Moto::spawn();
        assert!(
            moto.is_some() || std::env::var_os(REQUIRE_MOTO_VAR).is_none(),
            "{REQUIRE_MOTO_VAR} is set but moto did not start (pip install 'moto[server]')"
        );
        let Some(moto) = moto else {
            println!("skipped: moto not installed (pip install 'moto[server]')");
            return None;
        };
        let reply = moto.request(&format!("PUT /{bucket}"));
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {reply}"
        );
        // Set before any store of the process is built (edition 2021: not unsafe).
        std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{}", moto.port));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        Some(moto)
    }

    fn spawn() -> Option<Moto> {
        let has = Command::new("python3")
            .args(["-c", "import moto.server"])
            .status();
        if !has.is_ok_and(|s| s.success()) {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
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
        let moto = Moto { child, port };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// One bodiless HTTP request (`METHOD /path`); the raw reply.
    fn request(&self, line: &str) -> String {
        let mut out = String::new();
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let req = format!(
                "{line} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            );
            let _ = s.write_all(req.as_bytes());
            let _ = s.read_to_string(&mut out);
        }
        out
    }
}

/// Copies the prepared dataset at `local` (manifest, tokenizer, every shard) to the store at
/// `url`; returns its manifest.
pub fn upload_dataset(local: &Path, url: &str) -> Result<Manifest> {
    let src = Store::open(&local.display().to_string())?;
    let m = Manifest::load(&src)?;
    let dst = Store::open(url)?;
    let mut files = vec!["manifest.json".to_string()];
    files.extend(m.tokenizer.clone());
    files.extend(m.splits.values().flatten().map(|s| s.path.clone()));
    for f in &files {
        let p = local.join(f);
        let bytes =
            std::fs::read(&p).map_err(|e| DataError::Config(format!("{}: {e}", p.display())))?;
        dst.put(f, bytes.into())?;
    }
    Ok(m)
}
