//! Shared-secret authentication: the job token and an HMAC-SHA256 challenge–response handshake.
//!
//! Every connection (store and ring) starts with a mutual handshake: the connecting side sends a
//! hello (magic, role, claimed rank, nonce), the accepting side answers with its nonce and a proof
//! `HMAC(token, "S" | hello | server_nonce)`, the connecting side checks it and answers with
//! `HMAC(token, "C" | hello | server_nonce)`, and the accepting side checks that in constant time
//! and answers one status byte. The token itself never crosses the wire.
//!
//! The handshake also derives one key per direction, `HMAC(token, "Kc" | hello | server_nonce)`
//! and `HMAC(token, "Ks" | ...)`, fresh for every connection: every frame after the handshake
//! is encrypted and authenticated under it (AES-256-GCM, see `wire::FrameKey`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{DistError, Result};
use crate::wire::{FrameKey, Sink, Source};

/// Environment variable holding the job token.
pub const TOKEN_ENV: &str = "HR_DIST_TOKEN";
/// File name of the token in the run directory (used when [`TOKEN_ENV`] is not set).
pub const TOKEN_FILE: &str = "dist-token";

const MAGIC: &[u8; 8] = b"HRDIST01";
const NONCE: usize = 32;
const HELLO: usize = 8 + 1 + 4 + NONCE;
const STATUS_OK: u8 = 1;
const STATUS_REFUSED: u8 = 0;

/// The shared secret of one job. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wraps a token string; leading/trailing whitespace is ignored. Empty tokens are refused.
    pub fn new(s: &str) -> Result<Token> {
        let t = s.trim();
        if t.is_empty() {
            return Err(DistError::Auth("the token is empty".into()));
        }
        Ok(Token(t.as_bytes().to_vec()))
    }

    /// A fresh random token (64 hex characters from the OS random source).
    pub fn generate() -> Result<Token> {
        Token::new(&hex(&random_bytes::<32>()?))
    }

    /// The token as a string, e.g. to put into a child's environment.
    pub fn expose(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    fn mac(&self, label: &[u8], hello: &[u8], server_nonce: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(label);
        m.update(hello);
        m.update(server_nonce);
        m
    }
}

/// Finds the job token: `HR_DIST_TOKEN` from `env`, else `run_dir/dist-token`.
///
/// When only the file is possible, rank 0 creates it (atomically, mode 0600) if it is missing and
/// the other ranks wait for it until `wait` has passed. Errors say where the token was looked for.
pub fn resolve_token(
    env: &HashMap<String, String>,
    run_dir: Option<&Path>,
    rank: usize,
    wait: Duration,
) -> Result<Token> {
    if let Some(t) = env.get(TOKEN_ENV) {
        return Token::new(t).map_err(|_| DistError::env(TOKEN_ENV, "is empty"));
    }
    let Some(dir) = run_dir else {
        return Err(DistError::env(
            TOKEN_ENV,
            "is not set and no run directory was given to hold a token file",
        ));
    };
    let path = dir.join(TOKEN_FILE);
    if rank == 0 && !path.exists() {
        // A fresh run directory is made here: every rank of `srun hr-train` reads the token from
        // it, and rank 0 alone may create it.
        std::fs::create_dir_all(dir).map_err(|e| {
            DistError::io(format!("creating the run directory {}", dir.display()), e)
        })?;
        create_token_file(&path)?;
    }
    wait_token_file(&path, wait)
}

fn create_token_file(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let token = Token::generate()?;
    let io = |e| DistError::io(format!("writing token file {}", tmp.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(token.expose().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| DistError::io(format!("renaming token file to {}", path.display()), e))
}

fn wait_token_file(path: &PathBuf, wait: Duration) -> Result<Token> {
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => return Token::new(&s),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(_) => {
                return Err(DistError::Auth(format!(
                    "token file {} is empty",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DistError::Auth(format!(
                    "token file {} did not appear within {wait:?}: rank 0 writes it into the run \
                     directory, so on several nodes put `run.dir` on a filesystem every node \
                     shares, or set {TOKEN_ENV} to the same secret on every rank (e.g. \
                     `export {TOKEN_ENV}=$(openssl rand -hex 32)` before `srun`)",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(DistError::io(
                    format!("reading token file {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// Reads `N` bytes from the OS random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| DistError::io("reading /dev/urandom", e))?;
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The frame keys of one authenticated connection, one per direction.
pub(crate) struct Link {
    /// Seals the frames this side sends.
    pub send: FrameKey,
    /// Opens the frames this side receives.
    pub recv: FrameKey,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link(<keys redacted>)")
    }
}

impl Link {
    /// The keys of the side that sent `hello` (`client`) or received it.
    fn derive(token: &Token, hello: &[u8], server_nonce: &[u8], client: bool) -> Link {
        let key = |label: &[u8]| {
            token
                .mac(label, hello, server_nonce)
                .finalize()
                .into_bytes()
        };
        let (c2s, s2c) = (FrameKey::new(&key(b"Kc")), FrameKey::new(&key(b"Ks")));
        match client {
            true => Link {
                send: c2s,
                recv: s2c,
            },
            false => Link {
                send: s2c,
                recv: c2s,
            },
        }
    }
}

/// Who is connecting: the role byte and the claimed rank travel in the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Connection purpose (store client, ring link).
    pub role: u8,
    /// The connecting side's rank.
    pub rank: u32,
}

fn auth_io(what: &str, e: std::io::Error) -> DistError {
    DistError::Auth(format!("{what}: {e}"))
}

/// Parses a hello: the protocol's magic, the role byte, the claimed rank.
fn parse_hello(msg: &[u8]) -> Result<Hello> {
    if msg.len() != HELLO || &msg[..8] != MAGIC {
        return Err(DistError::Auth(
            "the peer does not speak the hr-dist protocol".into(),
        ));
    }
    let rank = u32::from_le_bytes([msg[9], msg[10], msg[11], msg[12]]);
    Ok(Hello { role: msg[8], rank })
}

/// Connecting side of the handshake. Fails with [`DistError::Auth`] if either side has the wrong
/// token; returns the connection's frame keys.
pub(crate) fn client_handshake<S: Source + Sink>(
    s: &mut S,
    token: &Token,
    hello: Hello,
    deadline: Instant,
) -> Result<Link> {
    let mut msg = Vec::with_capacity(HELLO);
    msg.extend_from_slice(MAGIC);
    msg.push(hello.role);
    msg.extend_from_slice(&hello.rank.to_le_bytes());
    msg.extend_from_slice(&random_bytes::<NONCE>()?);
    s.write_all_by(&msg, deadline)
        .map_err(|e| auth_io("sending hello", e))?;
    let mut reply = [0u8; NONCE + 32];
    s.read_exact_by(&mut reply, deadline)
        .map_err(|e| auth_io("reading the server's challenge", e))?;
    let (server_nonce, server_proof) = reply.split_at(NONCE);
    token
        .mac(b"S", &msg, server_nonce)
        .verify_slice(server_proof)
        .map_err(|_| DistError::Auth("the peer could not prove the token (wrong token?)".into()))?;
    let proof = token.mac(b"C", &msg, server_nonce).finalize().into_bytes();
    s.write_all_by(&proof, deadline)
        .map_err(|e| auth_io("sending proof", e))?;
    let mut status = [0u8; 1];
    s.read_exact_by(&mut status, deadline)
        .map_err(|e| auth_io("reading the verdict", e))?;
    if status[0] != STATUS_OK {
        return Err(DistError::Auth("refused by the peer (wrong token)".into()));
    }
    Ok(Link::derive(token, &msg, server_nonce, true))
}

/// Accepting side of the handshake: returns the peer's hello once it has proved the token, and
/// the connection's frame keys.
pub(crate) fn server_handshake<S: Source + Sink>(
    s: &mut S,
    token: &Token,
    deadline: Instant,
) -> Result<(Hello, Link)> {
    let mut msg = [0u8; HELLO];
    s.read_exact_by(&mut msg, deadline)
        .map_err(|e| auth_io("reading hello", e))?;
    let hello = parse_hello(&msg)?;
    let server_nonce = random_bytes::<NONCE>()?;
    let mut reply = server_nonce.to_vec();
    reply.extend_from_slice(&token.mac(b"S", &msg, &server_nonce).finalize().into_bytes());
    s.write_all_by(&reply, deadline)
        .map_err(|e| auth_io("sending challenge", e))?;
    let mut proof = [0u8; 32];
    s.read_exact_by(&mut proof, deadline)
        .map_err(|e| auth_io("reading proof", e))?;
    let ok = token
        .mac(b"C", &msg, &server_nonce)
        .verify_slice(&proof)
        .is_ok();
    let status = if ok { STATUS_OK } else { STATUS_REFUSED };
    // Best effort: a refused peer may already be gone.
    let _ = s.write_all_by(&[status], deadline);
    if !ok {
        return Err(DistError::Auth(
            "a peer presented a wrong token; refused".into(),
        ));
    }
    Ok((hello, Link::derive(token, &msg, &server_nonce, false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    type Ends = (Result<Link>, Result<(Hello, Link)>);

    fn pair(client_token: &str, server_token: &str) -> Ends {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let st = Token::new(server_token).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            server_handshake(&mut s, &st, Instant::now() + Duration::from_secs(5))
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let hello = Hello { role: 7, rank: 3 };
        let ct = Token::new(client_token).unwrap();
        let r = client_handshake(&mut c, &ct, hello, Instant::now() + Duration::from_secs(5));
        drop(c);
        (r, server.join().unwrap())
    }

    #[test]
    fn handshake_accepts_the_right_token_and_agrees_on_frame_keys() {
        let (c, s) = pair("secret", "secret");
        let (mut c, (hello, mut s)) = (c.unwrap(), s.unwrap());
        assert_eq!(hello, Hello { role: 7, rank: 3 });
        let far = Instant::now() + Duration::from_secs(1);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        crate::wire::write_frame(&mut up, &mut c.send, b"to server", far).unwrap();
        crate::wire::write_frame(&mut down, &mut s.send, b"to client", far).unwrap();
        let got = crate::wire::read_frame(&mut &up[..], &mut s.recv, 64, far).unwrap();
        assert_eq!(got, b"to server");
        let got = crate::wire::read_frame(&mut &down[..], &mut c.recv, 64, far).unwrap();
        assert_eq!(got, b"to client");
        // A frame reflected back to its sender fails: the two directions have different keys.
        let mut fresh = pair("secret", "secret").0.unwrap();
        let mut mine = Vec::new();
        crate::wire::write_frame(&mut mine, &mut fresh.send, b"x", far).unwrap();
        assert!(crate::wire::read_frame(&mut &mine[..], &mut fresh.recv, 64, far).is_err());
    }

    #[test]
    fn handshake_refuses_a_wrong_token() {
        let (c, s) = pair("wrong", "secret");
        assert!(matches!(c, Err(DistError::Auth(_))), "{c:?}");
        assert!(matches!(s, Err(DistError::Auth(_))), "{s:?}");
    }

    #[test]
    fn token_from_env_or_file() {
        let env: HashMap<String, String> = [(TOKEN_ENV.to_string(), " abc \n".to_string())].into();
        assert_eq!(
            resolve_token(&env, None, 1, Duration::ZERO)
                .unwrap()
                .expose(),
            "abc"
        );
        let err = resolve_token(&HashMap::new(), None, 0, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains(TOKEN_ENV));
        let dir = std::env::temp_dir().join(format!("hr-dist-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = resolve_token(&HashMap::new(), Some(&dir), 0, Duration::ZERO).unwrap();
        let t1 = resolve_token(&HashMap::new(), Some(&dir), 1, Duration::from_secs(1)).unwrap();
        assert_eq!(t0.expose(), t1.expose());
        assert_eq!(t0.expose().len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rank that never sees the token file (a run directory that is not shared between
    /// nodes) is told both ways out.
    #[test]
    fn missing_token_file_names_a_shared_run_dir_and_the_variable() {
        let dir = std::env::temp_dir().join(format!("hr-dist-no-token-{}", std::process::id()));
        let err = resolve_token(&HashMap::new(), Some(&dir), 1, Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dist-token") && err.contains("shares") && err.contains(TOKEN_ENV),
            "{err}"
        );
    }
}
