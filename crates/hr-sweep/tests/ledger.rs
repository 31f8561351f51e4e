//! The ledger: durable replay, a torn last line after a crash, one coordinator at a time.

use std::io::Write;

use hr_sweep::ledger::{Event, Handle, JobKind, JobState, Ledger, LEDGER_FILE};
use hr_sweep::SweepError;

fn submit(run: &str) -> Event {
    Event::Submit {
        run: run.into(),
        job: JobKind::Train,
        attempt: 1,
        slurm: None,
    }
}

#[test]
fn replays_events_and_drops_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut l = Ledger::open(d.path()).unwrap();
        l.append(submit("a")).unwrap();
        l.append(Event::State {
            run: "a".into(),
            job: JobKind::Train,
            state: JobState::Running,
            handle: Some(Handle::Local { pid: 42 }),
            reason: None,
        })
        .unwrap();
        l.append(submit("b")).unwrap();
    }
    // A crash in the middle of an append leaves half a line.
    let path = d.path().join(LEDGER_FILE);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"seq\":4,\"ts\":1,\"event\":\"sta").unwrap();
    drop(f);

    let st = Ledger::read(d.path()).unwrap();
    assert_eq!(st.events, 3);
    let a = st.job("a", JobKind::Train).unwrap();
    assert_eq!(
        (a.state, a.handle.clone()),
        (JobState::Running, Some(Handle::Local { pid: 42 }))
    );
    assert_eq!(
        st.job("b", JobKind::Train).unwrap().state,
        JobState::Pending
    );

    // Reopening truncates the torn tail; new events follow cleanly.
    let mut l = Ledger::open(d.path()).unwrap();
    l.append(Event::State {
        run: "b".into(),
        job: JobKind::Train,
        state: JobState::Done,
        handle: None,
        reason: None,
    })
    .unwrap();
    drop(l);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{text}"
    );
    assert_eq!(
        text.lines().last().map(|l| l.contains("\"seq\":4")),
        Some(true),
        "{text}"
    );
    assert_eq!(
        Ledger::read(d.path())
            .unwrap()
            .job("b", JobKind::Train)
            .unwrap()
            .state,
        JobState::Done
    );
}

#[test]
fn a_corrupt_line_in_the_middle_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(LEDGER_FILE), "garbage\n{\"seq\":1}\n").unwrap();
    let e = Ledger::read(d.path()).unwrap_err();
    assert!(e.to_string().contains("corrupt ledger line"), "{e}");
}

#[test]
fn only_one_coordinator_holds_the_ledger() {
    let d = tempfile::tempdir().unwrap();
    let held = Ledger::open(d.path()).unwrap();
    match Ledger::open(d.path()) {
        Err(SweepError::Locked { owner, .. }) => {
            assert!(
                owner.contains(&format!("pid {}", std::process::id())),
                "{owner}"
            );
        }
        Err(e) => panic!("expected the lock to be held, got {e}"),
        Ok(_) => panic!("a second coordinator opened a held ledger"),
    }
    // Released with its holder: the next coordinator takes it.
    drop(held);
    Ledger::open(d.path()).unwrap();
}

/// A coordinator on another login node (another process holding the OS lock, its host in the
/// lock file) is reported by host and pid and never stolen; once it exits, the lock is free.
#[test]
fn a_lock_held_elsewhere_is_reported_not_stolen() {
    let d = tempfile::tempdir().unwrap();
    let lock = d.path().join("ledger.lock");
    let script = "import fcntl, sys, time\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\nf.truncate(0); f.write('login2 4242\\n'); f.flush()\nprint('held', flush=True)\ntime.sleep(60)\n";
    let mut other = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let Err(e) = Ledger::open(d.path()) else {
        panic!("the ledger held by login2 was taken");
    };
    assert!(
        e.to_string().contains("hr-sweep on login2 (pid 4242)"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        "login2 4242\n",
        "not stolen"
    );
    other.kill().unwrap();
    other.wait().unwrap();
    let _mine = Ledger::open(d.path()).unwrap();
    let now = std::fs::read_to_string(&lock).unwrap();
    assert!(
        now.ends_with(&format!(" {}\n", std::process::id())),
        "{now}"
    );
}
