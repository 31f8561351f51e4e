//! Process-level test: the local launcher runs this test binary as N ranks (re-executing the
//! `child_rank` test with `HR_DIST_TEST_MODE` set), which rendezvous over 127.0.0.1.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hr_dist::{init_from_env, launch_local_with, DistError, DistOptions, LaunchOptions};

const MODE: &str = "HR_DIST_TEST_MODE";
const OUT: &str = "HR_DIST_TEST_OUT";

/// The body of one launched rank; a no-op when run as an ordinary test.
#[test]
fn child_rank() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let out = PathBuf::from(std::env::var(OUT).unwrap());
    let opts = DistOptions {
        timeout: Duration::from_secs(3),
        rendezvous_timeout: Duration::from_secs(10),
        run_dir: None,
        ..DistOptions::default()
    };
    let (world, mut comm) = init_from_env(&opts).unwrap();
    let mut v = vec![world.rank as f32 + 1.0; 1000];
    comm.all_reduce_sum(&mut v).unwrap();
    let n = world.world_size as f32;
    assert!(v.iter().all(|&x| x == n * (n + 1.0) / 2.0));
    if mode == "die" && world.rank == 1 {
        std::process::abort(); // like kill -9: sockets close, no cleanup
    }
    let result = comm.all_reduce_sum(&mut v).and_then(|()| comm.barrier());
    let text = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    std::fs::write(out.join(format!("rank{}.txt", world.rank)), text).unwrap();
    drop(comm);
    if result.is_err() {
        std::process::exit(2);
    }
}

fn launch(
    mode: &str,
    nproc: usize,
    dir: &std::path::Path,
) -> hr_dist::Result<std::process::ExitStatus> {
    let exe = std::env::current_exe().unwrap();
    let env = [
        (MODE.to_string(), mode.to_string()),
        (OUT.to_string(), dir.display().to_string()),
    ];
    let opts = LaunchOptions {
        grace: Duration::from_secs(8),
        poll: Duration::from_millis(20),
        forward_stop: None,
    };
    let args = ["--exact", "child_rank", "--nocapture", "--test-threads=1"];
    launch_local_with(nproc, exe, &args, &env, &opts)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hr-dist-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn launched_ranks_reduce_and_survivors_name_a_dead_rank() {
    let dir = temp_dir("ok");
    let st = launch("ok", 3, &dir).unwrap();
    assert!(st.success());
    for r in 0..3 {
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("rank{r}.txt"))).unwrap(),
            "ok"
        );
    }
    let dir2 = temp_dir("die");
    let t0 = Instant::now();
    let err = launch("die", 3, &dir2).unwrap_err();
    assert!(
        matches!(err, DistError::RankFailed { rank: 1, .. }),
        "{err}"
    );
    for r in [0, 2] {
        let text = std::fs::read_to_string(dir2.join(format!("rank{r}.txt"))).unwrap();
        assert!(text.contains("lost rank 1"), "rank {r}: {text}");
    }
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}
