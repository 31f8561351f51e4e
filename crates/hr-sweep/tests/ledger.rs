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
    let _held = Ledger::open(d.path()).unwrap();
    assert!(matches!(Ledger::open(d.path()), Err(SweepError::Locked(_))));
}
