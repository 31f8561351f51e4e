//! Authenticated rendezvous key–value store, hosted by rank 0 (like torch's `TCPStore`).
//!
//! [`StoreServer`] listens on rank 0; every rank (rank 0 included) talks to it through a
//! [`StoreClient`]. Each connection must pass the HMAC handshake of [`crate::auth`] first; peers
//! with a wrong token are refused and disconnected. Operations: [`StoreClient::set`],
//! [`StoreClient::get`] (waits for the key), [`StoreClient::try_get`], [`StoreClient::wait`],
//! [`StoreClient::add`] (atomic counter) and [`StoreClient::set_if_absent`] (first writer wins).
//! Since the store lives in rank 0, a broken store connection is reported as the loss of rank 0.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::auth::{client_handshake, server_handshake, Hello, Token};
use crate::error::{DistError, Result};
use crate::wire::{put_blob, read_blob, read_exact_by, read_u64, write_all_by};

/// Role byte of store connections in the handshake hello.
pub(crate) const ROLE_STORE: u8 = 1;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 64 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

const OP_SET: u8 = 1;
const OP_GET: u8 = 2;
const OP_WAIT: u8 = 3;
const OP_ADD: u8 = 4;
const OP_SETNX: u8 = 5;
const ST_OK: u8 = 0;
const ST_MISSING: u8 = 1;
const ST_BAD: u8 = 2;

#[derive(Default)]
struct Shared {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    changed: Condvar,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn map(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store server. It serves until dropped; dropping it disconnects every client.
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving clients that prove `token`.
    pub fn bind(addr: impl ToSocketAddrs, token: Token) -> Result<StoreServer> {
        let listener =
            TcpListener::bind(addr).map_err(|e| DistError::io("binding the store", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DistError::io("store address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| DistError::io("store listener", e))?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("hr-dist-store".into())
            .spawn(move || accept_loop(listener, s, token))
            .map_err(|e| DistError::io("spawning the store thread", e))?;
        Ok(StoreServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, token: Token) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (s, t) = (shared.clone(), token.clone());
                let _ = std::thread::Builder::new()
                    .name("hr-dist-store-conn".into())
                    .spawn(move || serve_conn(stream, s, t));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn serve_conn(mut s: TcpStream, shared: Arc<Shared>, token: Token) {
    if s.set_nonblocking(false).is_err() || s.set_nodelay(true).is_err() {
        return;
    }
    if let Ok(c) = s.try_clone() {
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }
    let hello = server_handshake(&mut s, &token, Instant::now() + HANDSHAKE_TIMEOUT);
    if !matches!(
        hello,
        Ok(Hello {
            role: ROLE_STORE,
            ..
        })
    ) {
        let _ = s.shutdown(std::net::Shutdown::Both);
        return;
    }
    while let Some(op) = next_op(&mut s, &shared) {
        if serve_request(&mut s, &shared, op).is_err() {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Waits for the next request's op byte, checking for shutdown between polls.
fn next_op(s: &mut TcpStream, shared: &Shared) -> Option<u8> {
    let mut op = [0u8; 1];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        match read_exact_by(s, &mut op, Instant::now() + Duration::from_millis(500)) {
            Ok(()) => return Some(op[0]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return None,
        }
    }
}

fn serve_request(s: &mut TcpStream, shared: &Shared, op: u8) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let key = read_blob(s, MAX_KEY, deadline)?;
    let mut out = Vec::new();
    match op {
        OP_SET => {
            let v = read_blob(s, MAX_VALUE, deadline)?;
            shared.map().insert(key, v);
            shared.changed.notify_all();
            out.push(ST_OK);
        }
        OP_GET => reply_value(&mut out, shared.map().get(&key)),
        OP_WAIT => {
            let ms = read_u64(s, deadline)?;
            let v = wait_key(shared, &key, Duration::from_millis(ms));
            reply_value(&mut out, v.as_ref());
        }
        OP_ADD => {
            let delta = read_u64(s, deadline)? as i64;
            match add(shared, key, delta) {
                Some(n) => {
                    out.push(ST_OK);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                None => out.push(ST_BAD),
            }
        }
        OP_SETNX => {
            let v = read_blob(s, MAX_VALUE, deadline)?;
            let winner = shared.map().entry(key).or_insert(v).clone();
            shared.changed.notify_all();
            reply_value(&mut out, Some(&winner));
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unknown op",
            ))
        }
    }
    write_all_by(s, &out, Instant::now() + REQUEST_TIMEOUT)
}

fn reply_value(out: &mut Vec<u8>, v: Option<&Vec<u8>>) {
    match v {
        Some(v) => {
            out.push(ST_OK);
            put_blob(out, v);
        }
        None => out.push(ST_MISSING),
    }
}

fn wait_key(shared: &Shared, key: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut map = shared.map();
    loop {
        if let Some(v) = map.get(key) {
            return Some(v.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        map = match shared
            .changed
            .wait_timeout(map, left.min(Duration::from_millis(500)))
        {
            Ok((m, _)) => m,
            Err(p) => p.into_inner().0,
        };
    }
}

fn add(shared: &Shared, key: Vec<u8>, delta: i64) -> Option<i64> {
    let mut map = shared.map();
    let cur = match map.get(&key) {
        None => 0,
        Some(v) => std::str::from_utf8(v).ok()?.parse::<i64>().ok()?,
    };
    let n = cur.checked_add(delta)?;
    map.insert(key, n.to_string().into_bytes());
    drop(map);
    shared.changed.notify_all();
    Some(n)
}

/// A connection to the store. All methods take `&self` (requests are serialised internally).
pub struct StoreClient {
    conn: Mutex<TcpStream>,
    broken: AtomicBool,
    timeout: Duration,
    local_ip: std::net::IpAddr,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StoreClient {
    /// Connects to the store at `host:port` as `rank`, retrying until `connect_timeout` while
    /// the server is not up yet, then authenticates. `timeout` bounds each later request.
    pub fn connect(
        host: &str,
        port: u16,
        token: &Token,
        rank: usize,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<StoreClient> {
        let deadline = Instant::now() + connect_timeout;
        let mut s = connect_retry(host, port, deadline)?;
        let _ = s.set_nodelay(true);
        let hello = Hello {
            role: ROLE_STORE,
            rank: rank as u32,
        };
        client_handshake(
            &mut s,
            token,
            hello,
            Instant::now() + HANDSHAKE_TIMEOUT.min(timeout),
        )?;
        let local_ip = s
            .local_addr()
            .map_err(|e| DistError::io("store connection", e))?
            .ip();
        Ok(StoreClient {
            conn: Mutex::new(s),
            broken: AtomicBool::new(false),
            timeout,
            local_ip,
        })
    }

    /// The local IP address that routes to the store (used to advertise ring listeners).
    pub fn local_ip(&self) -> std::net::IpAddr {
        self.local_ip
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.set_within(key, value, self.timeout)
    }

    /// [`StoreClient::set`] with an explicit request deadline.
    pub fn set_within(&self, key: &str, value: &[u8], timeout: Duration) -> Result<()> {
        let mut req = vec![OP_SET];
        put_blob(&mut req, key.as_bytes());
        put_blob(&mut req, value);
        self.request(key, &req, timeout, expect_ok)
    }

    /// Returns the value of `key` now, or `None` if it is not set.
    pub fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.try_get_within(key, self.timeout)
    }

    /// [`StoreClient::try_get`] with an explicit request deadline.
    pub fn try_get_within(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut req = vec![OP_GET];
        put_blob(&mut req, key.as_bytes());
        self.request(key, &req, timeout, read_value)
    }

    /// Waits until `key` is set (at most the client's timeout) and returns its value.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.wait(key, self.timeout)
    }

    /// Waits until `key` is set, at most `timeout`, and returns its value.
    pub fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let mut req = vec![OP_WAIT];
        put_blob(&mut req, key.as_bytes());
        req.extend_from_slice(&(timeout.as_millis() as u64).to_le_bytes());
        self.request(key, &req, timeout + self.timeout, read_value)?
            .ok_or_else(|| DistError::Timeout {
                what: format!("key {key:?}"),
                after: timeout,
            })
    }

    /// Atomically adds `delta` to the integer at `key` (0 when unset) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let mut req = vec![OP_ADD];
        put_blob(&mut req, key.as_bytes());
        req.extend_from_slice(&delta.to_le_bytes());
        let n = self.request(key, &req, self.timeout, |s, d| {
            let mut st = [0u8; 1];
            read_exact_by(s, &mut st, d)?;
            match st[0] {
                ST_OK => Ok(Some(read_u64(s, d)? as i64)),
                _ => Ok(None),
            }
        })?;
        n.ok_or_else(|| DistError::Invalid(format!("store key {key:?} is not an integer")))
    }

    /// Sets `key` to `value` unless it is already set; returns the value that is now stored.
    pub fn set_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.set_if_absent_within(key, value, self.timeout)
    }

    /// [`StoreClient::set_if_absent`] with an explicit request deadline.
    pub fn set_if_absent_within(
        &self,
        key: &str,
        value: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let mut req = vec![OP_SETNX];
        put_blob(&mut req, key.as_bytes());
        put_blob(&mut req, value);
        self.request(key, &req, timeout, read_value)?
            .ok_or_else(|| {
                DistError::Protocol("store answered set_if_absent without a value".into())
            })
    }

    fn request<T>(
        &self,
        key: &str,
        req: &[u8],
        timeout: Duration,
        read: impl FnOnce(&mut TcpStream, Instant) -> std::io::Result<T>,
    ) -> Result<T> {
        let mut s = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if self.broken.load(Ordering::SeqCst) {
            return Err(DistError::PeerLost {
                rank: 0,
                op: format!("store request for {key:?}"),
                reason: "the store connection failed earlier".into(),
            });
        }
        let deadline = Instant::now() + timeout;
        let r = write_all_by(&mut s, req, deadline).and_then(|()| read(&mut s, deadline));
        r.map_err(|e| {
            // A half-finished exchange leaves the stream out of step: never reuse it.
            self.broken.store(true, Ordering::SeqCst);
            store_error(key, e, timeout)
        })
    }
}

fn connect_retry(host: &str, port: u16, deadline: Instant) -> Result<TcpStream> {
    loop {
        let err = match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                for a in addrs {
                    let left = deadline.saturating_duration_since(Instant::now()).max(POLL);
                    match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(5))) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = e,
                    }
                }
                last
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(DistError::io(
                format!("connecting to the store of rank 0 at {host}:{port}"),
                err,
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expect_ok(s: &mut TcpStream, d: Instant) -> std::io::Result<()> {
    let mut st = [0u8; 1];
    read_exact_by(s, &mut st, d)?;
    if st[0] != ST_OK {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request refused",
        ));
    }
    Ok(())
}

fn read_value(s: &mut TcpStream, d: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut st = [0u8; 1];
    read_exact_by(s, &mut st, d)?;
    match st[0] {
        ST_OK => Ok(Some(read_blob(s, MAX_VALUE, d)?)),
        ST_MISSING => Ok(None),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad status",
        )),
    }
}

fn store_error(key: &str, e: std::io::Error, timeout: Duration) -> DistError {
    let op = format!("store request for {key:?}");
    match e.kind() {
        std::io::ErrorKind::TimedOut => DistError::Unresponsive {
            ranks: vec![0],
            op,
            after: timeout,
        },
        std::io::ErrorKind::InvalidData => DistError::Protocol(format!("{op}: {e}")),
        _ => DistError::PeerLost {
            rank: 0,
            op,
            reason: format!("store connection failed: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(token: &str) -> StoreServer {
        StoreServer::bind("127.0.0.1:0", Token::new(token).unwrap()).unwrap()
    }

    fn client(srv: &StoreServer, token: &str) -> Result<StoreClient> {
        let t = Token::new(token).unwrap();
        let port = srv.local_addr().port();
        StoreClient::connect(
            "127.0.0.1",
            port,
            &t,
            1,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn set_get_add_wait() {
        let srv = server("tok");
        let a = client(&srv, "tok").unwrap();
        let b = client(&srv, "tok").unwrap();
        a.set("k", b"v1").unwrap();
        assert_eq!(b.get("k").unwrap(), b"v1");
        assert_eq!(b.try_get("nope").unwrap(), None);
        assert_eq!(a.add("n", 2).unwrap(), 2);
        assert_eq!(b.add("n", 3).unwrap(), 5);
        assert!(matches!(b.add("k", 1), Err(DistError::Invalid(_))));
        assert_eq!(a.set_if_absent("x", b"first").unwrap(), b"first");
        assert_eq!(b.set_if_absent("x", b"second").unwrap(), b"first");
        let waiter = std::thread::spawn(move || b.wait("late", Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(100));
        a.set("late", b"here").unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), b"here");
        let t0 = Instant::now();
        let err = a.wait("never", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, DistError::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn wrong_token_is_refused() {
        let srv = server("right-token");
        let err = client(&srv, "wrong-token").unwrap_err();
        assert!(matches!(err, DistError::Auth(_)), "{err}");
        // The server keeps serving authenticated peers.
        client(&srv, "right-token").unwrap().set("a", b"b").unwrap();
    }

    #[test]
    fn unauthenticated_raw_peer_gets_nothing() {
        let srv = server("tok");
        let mut raw = TcpStream::connect(srv.local_addr()).unwrap();
        let mut req = vec![OP_GET];
        put_blob(&mut req, b"k");
        req.resize(64, 0);
        // Not a hello: the server drops the connection without serving the request.
        let _ = std::io::Write::write_all(&mut raw, &req);
        let mut buf = [0u8; 64];
        let _ = raw.set_read_timeout(Some(Duration::from_secs(5)));
        let n = std::io::Read::read(&mut raw, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "server answered an unauthenticated peer");
    }

    #[test]
    fn lost_server_names_rank_0() {
        let srv = server("tok");
        let c = client(&srv, "tok").unwrap();
        drop(srv);
        let err = c.get("k").unwrap_err();
        assert!(matches!(err, DistError::PeerLost { rank: 0, .. }), "{err}");
    }
}
