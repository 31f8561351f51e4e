//! Authenticated rendezvous key–value store, hosted by rank 0 (like torch's `TCPStore`).
//!
//! [`StoreServer`] listens on rank 0; every rank (rank 0 included) talks to it through a
//! [`StoreClient`]. Each connection must pass the HMAC handshake of [`crate::auth`] first; peers
//! with a wrong token are refused and disconnected. Every request and reply after it is one
//! authenticated frame (`wire::write_frame`). Operations: [`StoreClient::set`],
//! [`StoreClient::get`] (waits for the key), [`StoreClient::try_get`], [`StoreClient::wait`],
//! [`StoreClient::add`] (atomic counter) and [`StoreClient::set_if_absent`] (first writer wins).
//! Since the store lives in rank 0, a broken store connection is reported as the loss of rank 0.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::auth::{client_handshake, server_handshake, Hello, Link, Token};
use crate::error::{DistError, Result};
use crate::wire::{invalid, put_blob, read_frame, write_frame, Cursor, Sink, Source};

/// Role byte of store connections in the handshake hello.
pub(crate) const ROLE_STORE: u8 = 1;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 64 << 20;
/// Largest request body: op, key, value (or a u64).
const MAX_REQUEST: usize = 1 + 4 + MAX_KEY + 4 + MAX_VALUE;
/// Largest reply body: status and a value.
const MAX_REPLY: usize = 1 + 4 + MAX_VALUE;
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

/// One store request, as it travels in a frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Set { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
    Wait { key: Vec<u8>, ms: u64 },
    Add { key: Vec<u8>, delta: i64 },
    SetIfAbsent { key: Vec<u8>, value: Vec<u8> },
}

impl Request {
    /// The request body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (op, key) = match self {
            Request::Set { key, .. } => (OP_SET, key),
            Request::Get { key } => (OP_GET, key),
            Request::Wait { key, .. } => (OP_WAIT, key),
            Request::Add { key, .. } => (OP_ADD, key),
            Request::SetIfAbsent { key, .. } => (OP_SETNX, key),
        };
        out.push(op);
        put_blob(&mut out, key);
        match self {
            Request::Set { value, .. } | Request::SetIfAbsent { value, .. } => {
                put_blob(&mut out, value)
            }
            Request::Wait { ms, .. } => out.extend_from_slice(&ms.to_le_bytes()),
            Request::Add { delta, .. } => out.extend_from_slice(&delta.to_le_bytes()),
            Request::Get { .. } => {}
        }
        out
    }

    /// Parses a request body; every byte must be accounted for.
    pub(crate) fn decode(body: &[u8]) -> std::io::Result<Request> {
        let mut c = Cursor(body);
        let op = c.u8()?;
        let key = c.blob(MAX_KEY)?.to_vec();
        let req = match op {
            OP_SET => Request::Set {
                key,
                value: c.blob(MAX_VALUE)?.to_vec(),
            },
            OP_GET => Request::Get { key },
            OP_WAIT => Request::Wait { key, ms: c.u64()? },
            OP_ADD => Request::Add {
                key,
                delta: c.u64()? as i64,
            },
            OP_SETNX => Request::SetIfAbsent {
                key,
                value: c.blob(MAX_VALUE)?.to_vec(),
            },
            _ => return Err(invalid(format!("unknown store op {op}"))),
        };
        c.end()?;
        Ok(req)
    }
}

/// A store reply: a status and, for some requests, a value or a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Done,
    Value(Option<Vec<u8>>),
    Count(Option<i64>),
}

impl Reply {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Reply::Done => out.push(ST_OK),
            Reply::Value(Some(v)) => {
                out.push(ST_OK);
                put_blob(&mut out, v);
            }
            Reply::Value(None) => out.push(ST_MISSING),
            Reply::Count(Some(n)) => {
                out.push(ST_OK);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Reply::Count(None) => out.push(ST_BAD),
        }
        out
    }

    /// Parses the reply to `req` (the shape of a reply depends on its request).
    pub(crate) fn decode(req: &Request, body: &[u8]) -> std::io::Result<Reply> {
        let mut c = Cursor(body);
        let st = c.u8()?;
        let reply = match (req, st) {
            (Request::Set { .. }, ST_OK) => Reply::Done,
            (Request::Add { .. }, ST_OK) => Reply::Count(Some(c.u64()? as i64)),
            (Request::Add { .. }, ST_BAD) => Reply::Count(None),
            (Request::Get { .. } | Request::Wait { .. }, ST_MISSING) => Reply::Value(None),
            (Request::Set { .. } | Request::Add { .. }, _) => {
                return Err(invalid(format!("bad status {st}")))
            }
            (_, ST_OK) => Reply::Value(Some(c.blob(MAX_VALUE)?.to_vec())),
            _ => return Err(invalid(format!("bad status {st}"))),
        };
        c.end()?;
        Ok(reply)
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    changed: Condvar,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn map(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A store that is stopping (waits return at once): for serving bytes in the fuzz target.
    pub(crate) fn stopped() -> Shared {
        let s = Shared::default();
        s.stop.store(true, Ordering::SeqCst);
        s
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
    if let Ok((
        Hello {
            role: ROLE_STORE, ..
        },
        mut link,
    )) = server_handshake(&mut s, &token, Instant::now() + HANDSHAKE_TIMEOUT)
    {
        while readable(&s, &shared) {
            if serve_one(&mut s, &shared, &mut link).is_err() {
                break;
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Waits until the next request starts to arrive; false on shutdown or a closed connection.
fn readable(s: &TcpStream, shared: &Shared) -> bool {
    let mut b = [0u8; 1];
    while !shared.stop.load(Ordering::SeqCst) {
        if s.set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
        {
            return false;
        }
        match s.peek(&mut b) {
            Ok(n) => return n > 0,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Reads, authenticates and answers one request.
pub(crate) fn serve_one<S: Source + Sink>(
    s: &mut S,
    shared: &Shared,
    link: &mut Link,
) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let body = read_frame(s, &mut link.recv, MAX_REQUEST, deadline)?;
    let reply = answer(shared, Request::decode(&body)?);
    write_frame(
        s,
        &mut link.send,
        &reply.encode(),
        Instant::now() + REQUEST_TIMEOUT,
    )
}

fn answer(shared: &Shared, req: Request) -> Reply {
    match req {
        Request::Set { key, value } => {
            shared.map().insert(key, value);
            shared.changed.notify_all();
            Reply::Done
        }
        Request::Get { key } => Reply::Value(shared.map().get(&key).cloned()),
        Request::Wait { key, ms } => {
            Reply::Value(wait_key(shared, &key, Duration::from_millis(ms)))
        }
        Request::Add { key, delta } => Reply::Count(add(shared, key, delta)),
        Request::SetIfAbsent { key, value } => {
            let winner = shared.map().entry(key).or_insert(value).clone();
            shared.changed.notify_all();
            Reply::Value(Some(winner))
        }
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

/// One authenticated connection to the store.
struct Conn {
    stream: TcpStream,
    link: Link,
}

/// A connection to the store. All methods take `&self` (requests are serialised internally).
pub struct StoreClient {
    conn: Mutex<Conn>,
    broken: AtomicBool,
    timeout: Duration,
    local_ip: std::net::IpAddr,
    addr: String,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("addr", &self.addr)
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
        let addr = format!("{host}:{port}");
        let link = client_handshake(
            &mut s,
            token,
            hello,
            Instant::now() + HANDSHAKE_TIMEOUT.min(timeout),
        )
        .map_err(|e| match e {
            DistError::Auth(m) => DistError::Auth(format!(
                "rank 0's rendezvous store at {addr}: {m}; every rank needs the same token, \
                 and a store left by another job or an earlier run may hold this port \
                 (MASTER_PORT)"
            )),
            e => e,
        })?;
        let local_ip = s
            .local_addr()
            .map_err(|e| DistError::io("store connection", e))?
            .ip();
        Ok(StoreClient {
            conn: Mutex::new(Conn { stream: s, link }),
            broken: AtomicBool::new(false),
            timeout,
            local_ip,
            addr,
        })
    }

    /// The local IP address that routes to the store (used to advertise ring listeners).
    pub fn local_ip(&self) -> std::net::IpAddr {
        self.local_ip
    }

    /// The `host:port` of the store.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.set_within(key, value, self.timeout)
    }

    /// [`StoreClient::set`] with an explicit request deadline.
    pub fn set_within(&self, key: &str, value: &[u8], timeout: Duration) -> Result<()> {
        let req = Request::Set {
            key: key.into(),
            value: value.to_vec(),
        };
        self.request(key, req, timeout).map(|_| ())
    }

    /// Returns the value of `key` now, or `None` if it is not set.
    pub fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.try_get_within(key, self.timeout)
    }

    /// [`StoreClient::try_get`] with an explicit request deadline.
    pub fn try_get_within(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let req = Request::Get { key: key.into() };
        value_of(self.request(key, req, timeout)?)
    }

    /// Waits until `key` is set (at most the client's timeout) and returns its value.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.wait(key, self.timeout)
    }

    /// Waits until `key` is set, at most `timeout`, and returns its value.
    pub fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let req = Request::Wait {
            key: key.into(),
            ms: timeout.as_millis() as u64,
        };
        value_of(self.request(key, req, timeout + self.timeout)?)?.ok_or_else(|| {
            DistError::Timeout {
                what: format!("key {key:?}"),
                after: timeout,
            }
        })
    }

    /// Atomically adds `delta` to the integer at `key` (0 when unset) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let req = Request::Add {
            key: key.into(),
            delta,
        };
        match self.request(key, req, self.timeout)? {
            Reply::Count(Some(n)) => Ok(n),
            _ => Err(DistError::Invalid(format!(
                "store key {key:?} is not an integer"
            ))),
        }
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
        let req = Request::SetIfAbsent {
            key: key.into(),
            value: value.to_vec(),
        };
        value_of(self.request(key, req, timeout)?)?.ok_or_else(|| {
            DistError::Protocol("store answered set_if_absent without a value".into())
        })
    }

    fn request(&self, key: &str, req: Request, timeout: Duration) -> Result<Reply> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if self.broken.load(Ordering::SeqCst) {
            return Err(DistError::PeerLost {
                rank: 0,
                op: format!("store request for {key:?}"),
                reason: "the store connection failed earlier".into(),
            });
        }
        let deadline = Instant::now() + timeout;
        let Conn { stream, link } = &mut *c;
        let r = write_frame(stream, &mut link.send, &req.encode(), deadline)
            .and_then(|()| read_frame(stream, &mut link.recv, MAX_REPLY, deadline))
            .and_then(|body| Reply::decode(&req, &body));
        r.map_err(|e| {
            // A half-finished exchange leaves the stream out of step: never reuse it.
            self.broken.store(true, Ordering::SeqCst);
            store_error(key, e, timeout)
        })
    }
}

/// The value of a reply that carries one.
fn value_of(reply: Reply) -> Result<Option<Vec<u8>>> {
    match reply {
        Reply::Value(v) => Ok(v),
        r => Err(DistError::Protocol(format!(
            "store answered {r:?} to a read"
        ))),
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
        let mut req = Request::Get { key: b"k".to_vec() }.encode();
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
