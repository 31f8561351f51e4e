//! CPU TCP-ring backend: ring reduce-scatter + all-gather over persistent authenticated TCP links.
//!
//! Each rank keeps one link to its right neighbour (`rank + 1`, sending) and one from its left
//! neighbour (`rank - 1`, receiving); addresses are exchanged through the store. All-reduce splits
//! the buffer into `world` chunks; chunk `c` is summed in a fixed order around the ring (always
//! `received_partial + local`) by exactly one rank and then copied to the others, so every rank
//! gets bit-identical results, run after run.
//!
//! Frames: an 18-byte header (kind, op, collective sequence number, payload bytes), the payload
//! encrypted with AES-256-GCM under the link's key from the handshake and a frame counter as
//! the nonce, and the 16-byte tag over both (`wire::FrameKey`): a frame injected,
//! replayed, reordered or altered on the network fails its tag and the receiving rank stops,
//! naming the sending neighbour.
//!
//! Failure handling: every message must arrive within the timeout. A rank that sees a link close
//! or a peer abort records `"lost rank N"` in the store (first writer wins), forwards an abort
//! frame to its right neighbour and closes its links, so the failure propagates around the ring
//! within seconds. A rank that times out marks itself alive in the store, waits a short grace,
//! and names the ranks that did not mark themselves alive as unresponsive. A neighbour that
//! sends a malformed or unauthenticated frame is recorded and named the same way.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::auth::{client_handshake, random_bytes, server_handshake, Hello, Link, Token};
use crate::comm::{check_root, Communicator};
use crate::error::{DistError, Result};
use crate::store::{StoreClient, StoreServer};
use crate::wire::{read_frame, read_u32, write_frame, FrameKey};

mod frames;
#[cfg(test)]
use frames::header;
pub(crate) use frames::recv_msg;
use frames::{send_abort, send_msg};

pub(crate) const ROLE_RING: u8 = 2;
pub(crate) const KIND_DATA: u8 = 1;
const KIND_ABORT: u8 = 2;
pub(crate) const HDR: usize = 18;
/// Largest payload a frame may announce (all-gather blocks have no expected length).
const MAX_PAYLOAD: u64 = 16 << 30;
/// Largest abort reason.
const MAX_REASON: u64 = 1024;
pub(crate) const OP_ALL_REDUCE: u8 = 1;
const OP_ALL_GATHER: u8 = 2;
const OP_BROADCAST: u8 = 3;
const OP_BARRIER: u8 = 4;
const BROADCAST_PIECE: usize = 1 << 18;
const FAILED_KEY: &str = "hr-dist/failed";

fn op_name(op: u8) -> &'static str {
    match op {
        OP_ALL_REDUCE => "all_reduce",
        OP_ALL_GATHER => "all_gather",
        OP_BROADCAST => "broadcast",
        OP_BARRIER => "barrier",
        _ => "unknown",
    }
}

/// How one link-level exchange failed, before attribution.
#[derive(Debug)]
pub(crate) enum Fail {
    Closed {
        peer: usize,
        detail: String,
    },
    Timeout {
        peer: usize,
    },
    Abort {
        lost: usize,
        reason: String,
    },
    /// The neighbour sent something this protocol never sends (named and recorded).
    Bad {
        peer: usize,
        reason: String,
    },
    Protocol(String),
}

fn io_fail(peer: usize, e: io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::TimedOut => Fail::Timeout { peer },
        _ => Fail::Closed {
            peer,
            detail: e.to_string(),
        },
    }
}

/// The CPU TCP-ring communicator. Rank 0's instance also hosts the rendezvous store.
pub struct RingComm {
    rank: usize,
    world: usize,
    right: TcpStream,
    left: TcpStream,
    /// Seals the frames sent to the right neighbour.
    right_key: FrameKey,
    /// Opens the frames received from the left neighbour.
    left_key: FrameKey,
    store: StoreClient,
    _server: Option<StoreServer>,
    timeout: Duration,
    seq: u64,
    poisoned: Option<String>,
    right_clean: bool,
}

impl Drop for RingComm {
    /// After a failure, rank 0 keeps the store up a little longer (twice the diagnosis grace) so
    /// the other ranks can still read which rank was lost before the store goes away.
    fn drop(&mut self) {
        if self.poisoned.is_some() && self._server.is_some() {
            std::thread::sleep(2 * self.diag_timeout());
        }
    }
}

impl std::fmt::Debug for RingComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

/// Parameters of [`RingComm::connect`].
pub struct RingSetup<'a> {
    /// This rank.
    pub rank: usize,
    /// Number of ranks (at least 2).
    pub world: usize,
    /// The job token, to authenticate ring links.
    pub token: &'a Token,
    /// Deadline of each message once connected.
    pub timeout: Duration,
    /// Deadline for all ranks to show up and connect.
    pub rendezvous_timeout: Duration,
}

impl RingComm {
    /// Joins the ring: claims the rank in the store, publishes a listener on the interface that
    /// routes to the store, connects to the right neighbour and accepts the left one.
    /// `server` is the store server when this is rank 0 (kept alive as long as the communicator).
    pub fn connect(
        setup: RingSetup<'_>,
        store: StoreClient,
        server: Option<StoreServer>,
    ) -> Result<RingComm> {
        let RingSetup { rank, world, .. } = setup;
        if world < 2 || rank >= world {
            return Err(DistError::Invalid(format!(
                "ring needs rank < world >= 2, got {rank}/{world}"
            )));
        }
        claim_rank(&store, rank)?;
        let listener = TcpListener::bind((store.local_ip(), 0))
            .map_err(|e| DistError::io("binding the ring listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DistError::io("ring listener address", e))?;
        store.set(&format!("hr-dist/ring/{rank}"), addr.to_string().as_bytes())?;
        let right_addr = match wait_all_joined(&store, world, setup.rendezvous_timeout) {
            Ok(mut addrs) => addrs.swap_remove((rank + 1) % world),
            Err(e) => {
                if server.is_some() {
                    // Serve the store a moment longer: the other ranks reach their own deadline
                    // and name the missing ranks, instead of losing rank 0's store first.
                    std::thread::sleep(diag_grace(setup.timeout));
                }
                return Err(e);
            }
        };
        let deadline = Instant::now() + setup.rendezvous_timeout;
        let (left, right) = std::thread::scope(|sc| {
            let acc = sc.spawn(|| accept_left(&listener, &setup, deadline));
            let right = connect_right(right_addr, &setup, deadline);
            let left = acc
                .join()
                .unwrap_or_else(|_| Err(DistError::Protocol("ring accept thread panicked".into())));
            (left, right)
        });
        let ((left, left_link), (right, right_link)) = (left?, right?);
        Ok(RingComm {
            rank,
            world,
            right,
            left,
            right_key: right_link.send,
            left_key: left_link.recv,
            store,
            _server: server,
            timeout: setup.timeout,
            seq: 0,
            poisoned: None,
            right_clean: true,
        })
    }

    /// The store client (e.g. to exchange small values between ranks).
    pub fn store(&self) -> &StoreClient {
        &self.store
    }

    fn left_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    fn right_rank(&self) -> usize {
        (self.rank + 1) % self.world
    }

    /// Runs one collective: refuses if poisoned, attributes and records failures.
    fn run<T>(
        &mut self,
        op: u8,
        f: impl FnOnce(&mut Self) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        if let Some(msg) = &self.poisoned {
            return Err(DistError::Protocol(format!(
                "{}: communicator unusable after an earlier failure: {msg}",
                op_name(op)
            )));
        }
        self.seq += 1;
        match f(self) {
            Ok(v) => Ok(v),
            Err(fail) => Err(self.fail(op, fail)),
        }
    }

    /// Sends `send` to the right neighbour while receiving one message from the left one.
    fn exchange(
        &mut self,
        op: u8,
        send: &[f32],
        expect: Option<usize>,
    ) -> std::result::Result<Vec<f32>, Fail> {
        let (seq, timeout) = (self.seq, self.timeout);
        let (lr, rr) = (self.left_rank(), self.right_rank());
        let send_failed = AtomicBool::new(false);
        let (left, right) = (&mut self.left, &mut self.right);
        let (left_key, right_key) = (&mut self.left_key, &mut self.right_key);
        let left_ctl = left.try_clone().map_err(|e| io_fail(lr, e))?;
        let (got, sent) = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let r = send_msg(
                    right,
                    right_key,
                    op,
                    seq,
                    send,
                    Instant::now() + timeout,
                    rr,
                );
                if r.is_err() {
                    send_failed.store(true, Ordering::SeqCst);
                    let _ = left_ctl.shutdown(Shutdown::Read);
                }
                r
            });
            // On a receive failure the sender is left to finish (bounded by its own deadline):
            // cutting the right link before the failure is recorded would mislead the neighbour.
            let got = recv_msg(
                left,
                left_key,
                op,
                seq,
                expect,
                Instant::now() + timeout,
                lr,
            );
            let sent = h
                .join()
                .unwrap_or_else(|_| Err(Fail::Protocol("ring sender thread panicked".into())));
            (got, sent)
        });
        self.right_clean = sent.is_ok();
        match (got, sent) {
            (_, Err(e))
                if send_failed.load(Ordering::SeqCst) && !matches!(e, Fail::Timeout { .. }) =>
            {
                Err(e)
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        }
    }

    fn ring_all_reduce(&mut self, op: u8, buf: &mut [f32]) -> std::result::Result<(), Fail> {
        let (w, r, n) = (self.world, self.rank, buf.len());
        let b = |i: usize| (i * n / w, (i + 1) * n / w);
        for s in 0..w - 1 {
            let (si, ri) = ((r + w - s) % w, (r + 2 * w - s - 1) % w);
            let ((s0, s1), (r0, r1)) = (b(si), b(ri));
            let got = self.exchange(op, &buf[s0..s1], Some(r1 - r0))?;
            for (x, g) in buf[r0..r1].iter_mut().zip(got) {
                *x += g; // IEEE addition is commutative: same bits as g + x
            }
        }
        for s in 0..w - 1 {
            let (si, ri) = ((r + 1 + w - s) % w, (r + w - s) % w);
            let ((s0, s1), (r0, r1)) = (b(si), b(ri));
            let got = self.exchange(op, &buf[s0..s1], Some(r1 - r0))?;
            buf[r0..r1].copy_from_slice(&got);
        }
        Ok(())
    }

    fn ring_all_gather(&mut self, data: &[f32]) -> std::result::Result<Vec<f32>, Fail> {
        let (w, r) = (self.world, self.rank);
        let mut blocks: Vec<Vec<f32>> = vec![Vec::new(); w];
        blocks[r] = data.to_vec();
        for s in 0..w - 1 {
            let (si, ri) = ((r + w - s) % w, (r + 2 * w - s - 1) % w);
            let send = std::mem::take(&mut blocks[si]);
            let got = self.exchange(OP_ALL_GATHER, &send, None);
            blocks[si] = send;
            blocks[ri] = got?;
        }
        Ok(blocks.concat())
    }

    fn ring_broadcast(&mut self, buf: &mut [f32], root: usize) -> std::result::Result<(), Fail> {
        let (seq, timeout, lr, rr) = (self.seq, self.timeout, self.left_rank(), self.right_rank());
        let n = buf.len();
        let mut start = 0;
        loop {
            let end = (start + BROADCAST_PIECE).min(n);
            let piece = &mut buf[start..end];
            if self.rank != root {
                let got = recv_msg(
                    &mut self.left,
                    &mut self.left_key,
                    OP_BROADCAST,
                    seq,
                    Some(piece.len()),
                    Instant::now() + timeout,
                    lr,
                )?;
                piece.copy_from_slice(&got);
            }
            if rr != root {
                self.right_clean = false;
                send_msg(
                    &mut self.right,
                    &mut self.right_key,
                    OP_BROADCAST,
                    seq,
                    piece,
                    Instant::now() + timeout,
                    rr,
                )?;
                self.right_clean = true;
            }
            start = end;
            if start >= n {
                return Ok(());
            }
        }
    }

    /// Attributes a failure, records it in the store, warns the right neighbour, closes links.
    fn fail(&mut self, op: u8, fail: Fail) -> DistError {
        let opname = format!("{} #{}", op_name(op), self.seq);
        let err = match fail {
            Fail::Protocol(m) => DistError::Protocol(format!("{opname}: {m}")),
            // `publish` below returns the sender's record (it recorded before aborting).
            Fail::Abort { lost, reason } => lost_error(lost, &opname, reason),
            Fail::Bad { peer, reason } => DistError::BadPeer {
                rank: peer,
                op: opname.clone(),
                reason,
            },
            Fail::Closed { peer, detail } => match self.await_record(&opname) {
                Some(e) => e,
                None => lost_error(
                    peer,
                    &opname,
                    format!("connection to rank {peer} failed: {detail}"),
                ),
            },
            Fail::Timeout { peer } => self.resolve_hang(&opname, peer),
        };
        let err = self.publish(&opname, err);
        self.poisoned = Some(err.to_string());
        if self.right_clean {
            if let Some((rank, reason)) = culprit(&err) {
                let _ = send_abort(&mut self.right, &mut self.right_key, rank, reason);
            }
        }
        let _ = self.right.shutdown(Shutdown::Both);
        let _ = self.left.shutdown(Shutdown::Both);
        err
    }

    fn diag_timeout(&self) -> Duration {
        diag_grace(self.timeout)
    }

    /// A closed link may be a consequence of a failure another rank is recording: look briefly.
    fn await_record(&self, opname: &str) -> Option<DistError> {
        let deadline = Instant::now() + Duration::from_millis(300);
        loop {
            let rec = self.recorded_failure(opname);
            if rec.is_some() || Instant::now() >= deadline {
                return rec;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn recorded_failure(&self, opname: &str) -> Option<DistError> {
        let v = self
            .store
            .try_get_within(FAILED_KEY, self.diag_timeout())
            .ok()??;
        parse_record(&v, opname, self.timeout)
    }

    /// Records `err` as the job's failure unless another rank was first; returns the winner.
    fn publish(&self, opname: &str, err: DistError) -> DistError {
        let Some(mine) = make_record(&err, self.rank) else {
            return err;
        };
        match self
            .store
            .set_if_absent_within(FAILED_KEY, mine.as_bytes(), self.diag_timeout())
        {
            Ok(winner) => parse_record(&winner, opname, self.timeout).unwrap_or(err),
            Err(_) => err,
        }
    }

    /// After a timeout: mark this rank alive, wait a grace, and name the ranks that did not.
    fn resolve_hang(&self, opname: &str, peer: usize) -> DistError {
        let grace = self.diag_timeout();
        let unresponsive = |ranks| DistError::Unresponsive {
            ranks,
            op: opname.to_string(),
            after: self.timeout,
        };
        if self
            .store
            .set_within(&format!("hr-dist/alive/{}", self.rank), b"1", grace)
            .is_err()
        {
            return unresponsive(vec![0]);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(e) = self.recorded_failure(opname) {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut suspects = Vec::new();
        for r in (0..self.world).filter(|&r| r != self.rank) {
            match self
                .store
                .try_get_within(&format!("hr-dist/alive/{r}"), grace)
            {
                Ok(Some(_)) => {}
                Ok(None) => suspects.push(r),
                Err(_) => return unresponsive(vec![0]),
            }
        }
        if suspects.is_empty() {
            suspects.push(peer);
        }
        unresponsive(suspects)
    }
}

fn lost_error(rank: usize, op: &str, reason: String) -> DistError {
    DistError::PeerLost {
        rank,
        op: op.to_string(),
        reason,
    }
}

/// The single rank an error blames, and why.
fn culprit(err: &DistError) -> Option<(usize, &str)> {
    match err {
        DistError::PeerLost { rank, reason, .. } | DistError::BadPeer { rank, reason, .. } => {
            Some((*rank, reason))
        }
        _ => None,
    }
}

/// Store record of a failure: `lost|RANK|reason`, `bad|RANK|reason` or `hang|R1,R2|reason`.
fn make_record(err: &DistError, me: usize) -> Option<String> {
    match err {
        DistError::PeerLost { rank, reason, .. } => {
            Some(format!("lost|{rank}|{reason} (seen by rank {me})"))
        }
        DistError::BadPeer { rank, reason, .. } => {
            Some(format!("bad|{rank}|{reason} (seen by rank {me})"))
        }
        DistError::Unresponsive { ranks, .. } => {
            let r: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
            Some(format!(
                "hang|{}|timed out (seen by rank {me})",
                r.join(",")
            ))
        }
        _ => None,
    }
}

fn parse_record(v: &[u8], opname: &str, after: Duration) -> Option<DistError> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.splitn(3, '|');
    let (kind, ranks, reason) = (it.next()?, it.next()?, it.next()?);
    let ranks: Vec<usize> = ranks
        .split(',')
        .map(|r| r.parse().ok())
        .collect::<Option<_>>()?;
    match kind {
        "lost" => Some(lost_error(*ranks.first()?, opname, reason.to_string())),
        "bad" => Some(DistError::BadPeer {
            rank: *ranks.first()?,
            op: opname.to_string(),
            reason: reason.to_string(),
        }),
        "hang" => Some(DistError::Unresponsive {
            ranks,
            op: opname.to_string(),
            after,
        }),
        _ => None,
    }
}

pub(crate) fn claim_rank(store: &StoreClient, rank: usize) -> Result<()> {
    let me = random_bytes::<16>()?;
    let winner = store.set_if_absent(&format!("hr-dist/rank/{rank}"), &me)?;
    if winner != me {
        return Err(DistError::Invalid(format!(
            "rank {rank} is already claimed in the rendezvous store at {}: two processes were \
             started with the same rank, or the store is left from an earlier run (a rank 0 \
             still holding MASTER_PORT)",
            store.addr()
        )));
    }
    Ok(())
}

/// How long a failing rank keeps diagnosing (and rank 0 keeps its store up) after a failure:
/// a quarter of the message `timeout`, 0.2-5 s.
fn diag_grace(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Waits until every rank has published its ring address (their addresses, in rank order);
/// names the ranks that never did.
fn wait_all_joined(
    store: &StoreClient,
    world: usize,
    timeout: Duration,
) -> Result<Vec<SocketAddr>> {
    let key = |r: usize| format!("hr-dist/ring/{r}");
    let deadline = Instant::now() + timeout;
    let mut addrs = Vec::with_capacity(world);
    for r in 0..world {
        let v = match store.wait(&key(r), deadline.saturating_duration_since(Instant::now())) {
            Ok(v) => v,
            Err(DistError::Timeout { .. }) => {
                // Rank `r` is missing; probe the later ones while the store still answers
                // (rank 0 takes it down a grace after its own rendezvous fails).
                let mut missing = vec![r];
                for q in r + 1..world {
                    match store.try_get(&key(q)) {
                        Ok(Some(_)) => {}
                        Ok(None) => missing.push(q),
                        Err(_) => break,
                    }
                }
                return Err(DistError::Unresponsive {
                    ranks: missing,
                    op: "rendezvous (ranks never joined)".into(),
                    after: timeout,
                });
            }
            Err(e) => return Err(e),
        };
        let addr = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
        addrs.push(addr.ok_or_else(|| {
            DistError::Protocol(format!("rank {r} published a malformed address"))
        })?);
    }
    Ok(addrs)
}

fn connect_right(
    addr: SocketAddr,
    setup: &RingSetup<'_>,
    deadline: Instant,
) -> Result<(TcpStream, Link)> {
    let right = (setup.rank + 1) % setup.world;
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(DistError::io(
                    format!("connecting to rank {right} at {addr}"),
                    e,
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let _ = s.set_nodelay(true);
    let hello = Hello {
        role: ROLE_RING,
        rank: setup.rank as u32,
    };
    let mut link = client_handshake(&mut s, setup.token, hello, deadline)?;
    let world = (setup.world as u32).to_le_bytes();
    write_frame(&mut s, &mut link.send, &world, deadline)
        .map_err(|e| DistError::io(format!("sending world size to rank {right}"), e))?;
    Ok((s, link))
}

/// Accepts the left neighbour, ignoring (and refusing) connections that fail authentication.
fn accept_left(
    listener: &TcpListener,
    setup: &RingSetup<'_>,
    deadline: Instant,
) -> Result<(TcpStream, Link)> {
    let left = (setup.rank + setup.world - 1) % setup.world;
    listener
        .set_nonblocking(true)
        .map_err(|e| DistError::io("ring listener", e))?;
    while Instant::now() < deadline {
        let Ok((mut s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if s.set_nonblocking(false).is_err() {
            continue;
        }
        let hs_deadline = deadline.min(Instant::now() + Duration::from_secs(10));
        let mut link = match server_handshake(&mut s, setup.token, hs_deadline) {
            Ok((h, link)) if h.role == ROLE_RING && h.rank as usize == left => link,
            _ => continue,
        };
        let theirs = read_frame(&mut s, &mut link.recv, 4, deadline)
            .and_then(|b| read_u32(&mut b.as_slice(), deadline))
            .map_err(|e| DistError::io(format!("reading world size of rank {left}"), e))?;
        if theirs as usize != setup.world {
            return Err(DistError::Protocol(format!(
                "rank {left} believes the world has {theirs} ranks, this rank {}",
                setup.world
            )));
        }
        let _ = s.set_nodelay(true);
        return Ok((s, link));
    }
    Err(DistError::Unresponsive {
        ranks: vec![left],
        op: "ring rendezvous (connecting to the left neighbour)".into(),
        after: setup.rendezvous_timeout,
    })
}

impl Communicator for RingComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        self.run(OP_ALL_REDUCE, |me| me.ring_all_reduce(OP_ALL_REDUCE, buf))
    }
    fn all_gather(&mut self, data: &[f32]) -> Result<Vec<f32>> {
        self.run(OP_ALL_GATHER, |me| me.ring_all_gather(data))
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world)?;
        self.run(OP_BROADCAST, |me| me.ring_broadcast(buf, root))
    }
    fn barrier(&mut self) -> Result<()> {
        let mut x = [0.0f32];
        self.run(OP_BARRIER, |me| me.ring_all_reduce(OP_BARRIER, &mut x))
    }
}

#[cfg(test)]
mod rogue;
