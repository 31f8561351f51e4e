//! Local launcher: spawns `nproc` ranks of a program on this machine and supervises them.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{Token, TOKEN_ENV};
use crate::error::{DistError, Result};

/// Supervision settings of [`launch_local_with`].
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// How long the surviving ranks may take to exit by themselves after one rank failed
    /// (they normally notice the loss and exit within the communicator timeout) before they
    /// are killed (default 10 s).
    pub grace: Duration,
    /// How often the children are polled (default 50 ms).
    pub poll: Duration,
    /// When this flag turns true (e.g. set by a SIGTERM / SIGUSR1 handler of the launcher),
    /// SIGTERM is forwarded once to every running rank, so they checkpoint and stop together.
    pub forward_stop: Option<Arc<AtomicBool>>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            grace: Duration::from_secs(10),
            poll: Duration::from_millis(50),
            forward_stop: None,
        }
    }
}

/// [`launch_local_with`] with default options.
pub fn launch_local<S: AsRef<OsStr>>(
    nproc: usize,
    program: impl AsRef<OsStr>,
    args: &[S],
    env: &[(String, String)],
) -> Result<ExitStatus> {
    launch_local_with(nproc, program, args, env, &LaunchOptions::default())
}

/// Spawns `nproc` children of `program args` with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `MASTER_ADDR=127.0.0.1`, `MASTER_PORT` (a free port), `HR_DIST_TOKEN` (random) plus `env`,
/// and waits for them. Returns rank 0's status if all succeed or all exit with the same status;
/// otherwise, once one exits non-zero or is killed, the others get `opts.grace` to exit, are
/// then killed, and the error names the first failed rank and its status.
pub fn launch_local_with<S: AsRef<OsStr>>(
    nproc: usize,
    program: impl AsRef<OsStr>,
    args: &[S],
    env: &[(String, String)],
    opts: &LaunchOptions,
) -> Result<ExitStatus> {
    if nproc == 0 {
        return Err(DistError::Invalid("launch_local needs nproc >= 1".into()));
    }
    let port = free_port()?;
    let token = Token::generate()?;
    let mut children = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(TOKEN_ENV, token.expose());
        match cmd.spawn() {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                kill_all(&mut children);
                let prog = program.as_ref().to_string_lossy();
                return Err(DistError::io(format!("spawning rank {rank} ({prog})"), e));
            }
        }
    }
    supervise(&mut children, opts)
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| DistError::io("finding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| DistError::io("finding a free port", e))
}

fn supervise(children: &mut [Option<Child>], opts: &LaunchOptions) -> Result<ExitStatus> {
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failed: Option<(usize, ExitStatus, Instant)> = None;
    let mut forwarded = false;
    loop {
        let stop = opts.forward_stop.as_ref();
        if !forwarded && stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            forwarded = true;
            children.iter().flatten().for_each(terminate);
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            let Ok(Some(st)) = child.try_wait() else {
                continue;
            };
            statuses[rank] = Some(st);
            *slot = None;
            if !st.success() && failed.is_none() {
                failed = Some((rank, st, Instant::now()));
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if let Some((rank, status, at)) = failed {
            if at.elapsed() >= opts.grace {
                kill_all(children);
                return Err(DistError::RankFailed { rank, status });
            }
        }
        std::thread::sleep(opts.poll);
    }
    let first = statuses.first().copied().flatten();
    let unanimous = first.is_some() && statuses.iter().all(|s| *s == first);
    match (failed, first) {
        // Every rank stopped the same way (e.g. exit 75 after a preemption checkpoint).
        (_, Some(st)) if unanimous => Ok(st),
        (Some((rank, status, _)), _) => Err(DistError::RankFailed { rank, status }),
        (None, Some(st)) => Ok(st),
        (None, None) => Err(DistError::Invalid("rank 0 status unknown".into())),
    }
}

/// Sends SIGTERM to a child (through the `kill` utility, so this module needs no unsafe code).
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn kill_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.iter_mut().for_each(|c| *c = None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, nproc: usize, grace: Duration) -> Result<ExitStatus> {
        let opts = LaunchOptions {
            grace,
            poll: Duration::from_millis(20),
            forward_stop: None,
        };
        launch_local_with(nproc, "sh", &["-c", script], &[], &opts)
    }

    #[test]
    fn all_ranks_succeed_and_see_their_environment() {
        let script = r#"test "$WORLD_SIZE" = 3 && test "$LOCAL_RANK" = "$RANK" && test "$MASTER_ADDR" = 127.0.0.1 && test -n "$MASTER_PORT" && test ${#HR_DIST_TOKEN} -eq 64 && test "$EXTRA" = yes"#;
        let opts = LaunchOptions::default();
        let env = [("EXTRA".to_string(), "yes".to_string())];
        let st = launch_local_with(3, "sh", &["-c", script], &env, &opts).unwrap();
        assert!(st.success());
    }

    #[test]
    fn failing_rank_is_named_and_others_are_killed() {
        let t0 = Instant::now();
        let script = r#"if [ "$RANK" = 1 ]; then exit 3; fi; sleep 30"#;
        let err = sh(script, 3, Duration::from_millis(300)).unwrap_err();
        match &err {
            DistError::RankFailed { rank, status } => {
                assert_eq!((*rank, status.code()), (1, Some(3)), "{err}");
            }
            e => panic!("unexpected {e}"),
        }
        assert!(err.to_string().contains("rank 1"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn killed_rank_is_reported_with_its_signal() {
        let script = r#"if [ "$RANK" = 0 ]; then kill -9 $$; fi; sleep 30"#;
        let err = sh(script, 2, Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(&err, DistError::RankFailed { rank: 0, status } if status.code().is_none()),
            "{err}"
        );
        assert!(err.to_string().contains("signal"), "{err}");
    }

    #[test]
    fn stop_flag_forwards_sigterm_to_every_rank() {
        // Raised after the ranks had time to install their trap (a SIGTERM before it would
        // kill the shell instead of exercising the forwarding).
        let flag = Arc::new(AtomicBool::new(false));
        let raise = Arc::clone(&flag);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            raise.store(true, Ordering::SeqCst);
        });
        let opts = LaunchOptions {
            poll: Duration::from_millis(20),
            forward_stop: Some(flag),
            ..LaunchOptions::default()
        };
        // Each rank exits 75 on SIGTERM (as hr-train does after its preemption checkpoint).
        let script = r#"trap 'exit 75' TERM; for i in $(seq 100); do sleep 0.1; done; exit 0"#;
        let t0 = Instant::now();
        let st = launch_local_with(2, "sh", &["-c", script], &[], &opts).unwrap();
        assert_eq!(st.code(), Some(75));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn spawn_failure_is_an_error() {
        let err = launch_local(2, "/nonexistent/hr-dist-test", &["x"], &[]).unwrap_err();
        assert!(err.to_string().contains("spawning rank 0"), "{err}");
    }
}
