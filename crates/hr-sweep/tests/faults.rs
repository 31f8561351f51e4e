//! A full disk while the coordinator appends to the ledger: the append fails with an error
//! naming the ledger, the journal keeps every event recorded before it (and none of the failed
//! one), and the coordinator can go on appending. `HR_RELIABILITY_TRIALS` trials (default 3; the
//! figures in docs/RELIABILITY.md come from 20), each with a random event and failure point.

use hr_core::faults::{arm, DiskFault};
use hr_core::Rng;
use hr_sweep::ledger::{Event, JobKind, Ledger, LEDGER_FILE};

fn submit(run: &str, attempt: u32) -> Event {
    Event::Submit {
        run: run.into(),
        job: JobKind::Train,
        attempt,
        slurm: None,
    }
}

#[test]
fn a_failed_ledger_append_loses_no_recorded_event() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    for t in 0..trials {
        let mut rng = Rng::from_parts(&[0x1ed9e7, t]);
        let d = tempfile::tempdir().unwrap();
        let before = 1 + rng.below(6);
        let mut l = Ledger::open(d.path()).unwrap();
        for i in 0..before {
            l.append(submit(&format!("run-{i}"), 1)).unwrap();
        }
        let recorded = l.state.clone();
        let fraction = rng.uniform();
        arm(DiskFault {
            under: d.path().to_path_buf(),
            nth: 0,
            fraction,
        });
        let e = l.append(submit("lost", 1)).unwrap_err().to_string();
        assert!(
            e.contains(LEDGER_FILE) && e.contains("No space left"),
            "trial {t}: {e}"
        );
        assert_eq!(
            l.state, recorded,
            "trial {t}: the failed event is not applied"
        );
        // The coordinator may go on once space is back: the next event lands after the
        // recorded ones, not after a torn half line.
        l.append(submit("after", 2)).unwrap();
        let want = l.state.clone();
        drop(l);
        let replayed = Ledger::read(d.path()).unwrap();
        assert_eq!(
            replayed, want,
            "trial {t} (failure at {fraction:.2} of the line)"
        );
        assert!(replayed.job("lost", JobKind::Train).is_none());
        assert_eq!(replayed.events, before as u64 + 1);
    }
    println!(
        "ledger disk faults: {trials} trials, every recorded event kept, no failed one applied"
    );
}
