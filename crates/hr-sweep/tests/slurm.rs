//! The Slurm backend against fake `sbatch` / `squeue` / `sacct` / `scancel` / `scontrol` / `srun`
//! written here: they record every call, simulate job states (a job advances one state per
//! `squeue` call: PENDING -> RUNNING -> it runs the rendered script -> COMPLETED, FAILED or
//! PREEMPTED by the script's exit status) and honour `--dependency=afterok`. The rendered sbatch
//! files are checked against golden files (`UPDATE_GOLDEN=1` rewrites them).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_says, calls, count, hr_sweep, repo, script, text, trainings_of, Fixture};

const SBATCH: &str = r#"#!/bin/bash
D="$FAKE_SLURM"
echo "sbatch $*" >> "$D/calls.log"
array=""; dep=""; sc=""
for a in "$@"; do
  case "$a" in
    --array=*) array="${a#--array=}";;
    --dependency=afterok:*) dep="${a#--dependency=afterok:}";;
    --*) ;;
    *) sc="$a";;
  esac
done
id=$(( $(cat "$D/next" 2>/dev/null || echo 1000) + 1 )); echo "$id" > "$D/next"
mkdir -p "$D/jobs"
name=$(sed -n 's/^#SBATCH --job-name=//p' "$sc")
new() { printf 'state=PENDING\nscript=%s\ntask=%s\ndep=%s\nexit=0\nname=%s\n' "$sc" "$2" "$dep" "$name" > "$D/jobs/$1"; }
if [ -n "$array" ]; then
  range="${array%%\%*}"; last="${range#0-}"
  for i in $(seq 0 "$last"); do new "${id}_$i" "$i"; done
else
  new "$id" ""
fi
echo "$id"
# Simulate the coordinator dying inside sbatch (after the submission): once.
if [ -n "${FAKE_SBATCH_KILL:-}" ] && [ ! -e "$D/killed" ]; then touch "$D/killed"; kill -9 "$PPID"; fi
"#;

/// Advances every job one state; runs a job's script when it leaves RUNNING.
const ADVANCE: &str = r#"
get() { sed -n "s/^$2=//p" "$D/jobs/$1"; }
put() { sed -i "s|^$2=.*|$2=$3|" "$D/jobs/$1"; }
advance() {
  for f in "$D"/jobs/*; do
    [ -e "$f" ] || continue
    j=$(basename "$f"); st=$(get "$j" state)
    case "$st" in
      PENDING)
        dep=$(get "$j" dep)
        if [ -z "$dep" ] || [ "$(get "$dep" state)" = COMPLETED ]; then put "$j" state RUNNING; fi;;
      RUNNING)
        base="${j%%_*}"; task=$(get "$j" task)
        SLURM_JOB_ID="$j" SLURM_ARRAY_JOB_ID="$base" SLURM_ARRAY_TASK_ID="$task" SLURM_NTASKS=1 \
          SLURM_PROCID=0 bash "$(get "$j" script)" > "$D/out-$j.log" 2>&1
        rc=$?
        case "$rc" in 0) put "$j" state COMPLETED;; 75) put "$j" state PREEMPTED;; *) put "$j" state FAILED;; esac
        put "$j" exit "$rc";;
    esac
  done
}
wanted() { case ",$IDS," in *",${1%%_*},"*) return 0;; esac; return 1; }
named() { case ",$NAMES," in *",$(get "$1" name),"*) return 0;; esac; return 1; }
args() { IDS=""; NAMES=""; while [ $# -gt 0 ]; do [ "$1" = --jobs ] && IDS="$2"; [ "$1" = --name ] && NAMES="$2"; shift; done; }
"#;

const SQUEUE: &str = r#"
echo "squeue $*" >> "$D/calls.log"
args "$@"
advance
for f in "$D"/jobs/*; do
  [ -e "$f" ] || continue
  j=$(basename "$f"); st=$(get "$j" state)
  [ "$st" = PENDING ] || [ "$st" = RUNNING ] || continue
  if [ -n "$NAMES" ]; then named "$j" && echo "$j|$(get "$j" name)"; continue; fi
  if wanted "$j"; then echo "$j|$st"; fi
done
"#;

const SACCT: &str = r#"
echo "sacct $*" >> "$D/calls.log"
args "$@"
for f in "$D"/jobs/*; do
  [ -e "$f" ] || continue
  j=$(basename "$f"); st=$(get "$j" state)
  if [ -n "$NAMES" ]; then named "$j" && echo "$j|$(get "$j" name)"; continue; fi
  if wanted "$j"; then echo "$j|$st|$(get "$j" exit):0"; fi
done
"#;

const SCANCEL: &str = r#"
echo "scancel $*" >> "$D/calls.log"
for j in "$@"; do [ -e "$D/jobs/$j" ] && put "$j" state CANCELLED; done
"#;

/// Installs the fake Slurm tools into `dir/bin`; returns (bin dir, state dir).
fn fake_slurm(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("slurm-bin");
    let state = dir.join("slurm-state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let head = "#!/bin/bash\nD=\"$FAKE_SLURM\"\n";
    script(&bin.join("sbatch"), SBATCH);
    script(&bin.join("squeue"), &format!("{head}{ADVANCE}{SQUEUE}"));
    script(&bin.join("sacct"), &format!("{head}{ADVANCE}{SACCT}"));
    script(&bin.join("scancel"), &format!("{head}{ADVANCE}{SCANCEL}"));
    script(
        &bin.join("scontrol"),
        "#!/bin/bash\necho \"scontrol $*\" >> \"$FAKE_SLURM/calls.log\"\nexit 1\n",
    );
    script(
        &bin.join("srun"),
        "#!/bin/bash\nwhile [ \"${1#--}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n",
    );
    (bin, state)
}

const SLURM_SECTION: &str = r#"
[slurm]
partition = "gpu-test"
account = "proj42"
gpus_per_node = 4
cpus_per_task = 6
time = "02:00:00"
array_limit = 2
extra = ["--qos=normal"]
setup = "export NCCL_DEBUG=INFO"
"#;

/// A demo sweep with [`SLURM_SECTION`], the fake trainer and the fake Slurm tools.
struct SlurmFixture {
    sweep: Fixture,
    /// The fake Slurm tools' state directory (`calls.log`, jobs).
    state: PathBuf,
    /// The environment of `hr-sweep` (PATH with the fake tools first, FAKE_*).
    env: Vec<(&'static str, String)>,
}

impl SlurmFixture {
    fn new() -> Self {
        let sweep = Fixture::new(SLURM_SECTION);
        let (sbin, state) = fake_slurm(sweep.path());
        let path = format!(
            "{}:{}",
            sbin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env = vec![
            ("PATH", path),
            ("FAKE_SLURM", state.display().to_string()),
            ("FAKE_CALLS", sweep.calls_log().display().to_string()),
        ];
        SlurmFixture { sweep, state, env }
    }

    /// `launch SWEEP --backend slurm` with a fast poll, the fake trainer and the repo's templates.
    fn launch_args(&self) -> Vec<String> {
        let templates = repo().join("slurm");
        [
            "launch",
            self.sweep.sweep_arg(),
            "--backend",
            "slurm",
            "--poll-ms",
            "10",
            "--bin-dir",
            self.sweep.bins_arg(),
            "--templates",
            templates.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The fake Slurm tools' calls so far.
    fn slurm_calls(&self) -> Vec<String> {
        calls(&self.state.join("calls.log"))
    }
}

/// Slurm options rendering for `bin_dir` and `workdir` (no polling).
fn options(bin_dir: &str, workdir: &str) -> hr_sweep::slurm::SlurmOptions {
    hr_sweep::slurm::SlurmOptions {
        templates: repo().join("slurm"),
        bin_dir: bin_dir.into(),
        workdir: workdir.into(),
        poll: std::time::Duration::ZERO,
        wait: false,
    }
}

#[test]
fn slurm_backend_with_fake_tools() {
    let fx = SlurmFixture::new();
    let (d, sweep) = (fx.sweep.path(), &fx.sweep.sweep);
    let mut env = fx.env.clone();
    env.push(("FAKE_PREEMPT", "/late-1-".to_string()));
    env.push(("FAKE_FAIL", "/mid-2-".to_string()));
    let args = fx.launch_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Submit and return; a relaunch while those jobs are queued must not submit them again.
    let o = hr_sweep(d, &[&args[..], &["--no-wait"]].concat(), &env);
    assert!(o.status.success(), "{}", text(&o));
    assert_says(&o, "7 submission(s), 0 poll(s)");
    let o = hr_sweep(d, &args, &env);
    let t = text(&o);
    assert!(
        t.contains("2 submission(s)"),
        "only the preempted run's resubmission and its eval: {t}"
    );
    let dbg = text(&hr_sweep(d, &["status", sweep.to_str().unwrap()], &[]));
    assert_eq!(o.status.code(), Some(2), "{t}\n{dbg}");
    assert!(t.contains("5 of 6 runs done, 1 failed"), "{t}\n{dbg}");
    let sc = fx.slurm_calls();

    // One array submission with the concurrency limit, one chained eval per run.
    let arrays: Vec<&String> = sc.iter().filter(|l| l.contains("--array=")).collect();
    assert_eq!(arrays.len(), 1, "{sc:?}");
    assert!(
        arrays[0].contains("--array=0-5%2") && arrays[0].contains("train-array-0001.sbatch"),
        "{sc:?}"
    );
    let array_id = 1001;
    for i in 0..6 {
        let dep = format!("--dependency=afterok:{array_id}_{i} ");
        assert!(
            sc.iter()
                .any(|l| l.starts_with("sbatch") && l.contains(&dep) && l.contains("eval.sbatch")),
            "{dep} {sc:?}"
        );
    }

    // The preempted run was resubmitted alone, resumed, and its old eval job cancelled.
    let resub: Vec<&String> = sc
        .iter()
        .filter(|l| l.starts_with("sbatch") && l.ends_with("/train.sbatch"))
        .collect();
    assert_eq!(resub.len(), 1, "{sc:?}");
    assert!(resub[0].contains("/late-1-"), "{sc:?}");
    assert!(sc.iter().any(|l| l.starts_with("scancel")), "{sc:?}");
    let tc = fx.sweep.calls();
    let late1 = trainings_of(&tc, "/late-1-");
    assert_eq!(late1.len(), 2, "{tc:?}");
    assert!(late1[1].ends_with("resume=yes"), "{tc:?}");
    assert_eq!(count(&tc, "eval "), 5, "{tc:?}");

    // Batched polling: one squeue per poll (listing every job), at most one sacct per poll.
    let polls: usize = t
        .split(" poll(s)")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let squeues = count(&sc, "squeue");
    let saccts = count(&sc, "sacct");
    assert_eq!(squeues, polls, "{sc:?}");
    assert!(saccts <= polls && saccts > 0, "{sc:?}");
    let first_poll = sc.iter().find(|l| l.starts_with("squeue")).unwrap();
    assert!(
        first_poll.contains("--jobs 1001,"),
        "all jobs in one call: {first_poll}"
    );

    // The failed run is reported with the tail of its log.
    let o = hr_sweep(d, &["status", sweep.to_str().unwrap()], &[]);
    let st = text(&o);
    assert!(
        st.contains("slurm state FAILED (exit 1)") && st.contains("fake failure"),
        "{st}"
    );
    assert!(st.contains("5 done, 1 train failed"), "{st}");

    // A second launch submits nothing.
    let n = sc.len();
    let o = hr_sweep(d, &args, &env);
    assert_says(&o, "0 submission(s)");
    assert_eq!(fx.slurm_calls().len(), n);

    check_golden(d, sweep);
}

/// The rendered scripts (with paths made machine-independent) match the golden files.
fn check_golden(dir: &Path, sweep: &Path) {
    let plan = hr_sweep::Plan::load(sweep, Some(Path::new("runs/t"))).unwrap();
    let opts = options("/opt/hybrid-retrieval/bin", "/scratch/sweeps");
    let run = plan
        .runs
        .iter()
        .find(|r| r.dir.to_string_lossy().contains("late-1-"))
        .unwrap();
    let name = |k: &str| hr_sweep::slurm::job_name(&plan, &opts, k);
    let list = Path::new("runs/t/slurm/array-0001.runs");
    let rendered = [
        (
            "train-array.sbatch",
            hr_sweep::slurm::render_array(&plan, &opts, list, &name("a0001")).unwrap(),
        ),
        (
            "train.sbatch",
            hr_sweep::slurm::render_train(&plan, &opts, run, &name("tRUNID-2")).unwrap(),
        ),
        (
            "eval.sbatch",
            hr_sweep::slurm::render_eval(&plan, &opts, run, &name("eRUNID-1")).unwrap(),
        ),
    ];
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, text) in rendered {
        let text = text
            .replace(&run.id[..8], "RUNID")
            .replace(&dir.display().to_string(), "/tmp/test");
        let p = golden.join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&p, &text).unwrap();
        }
        let want = std::fs::read_to_string(&p)
            .unwrap_or_else(|_| panic!("missing {} (UPDATE_GOLDEN=1)", p.display()));
        assert_eq!(text, want, "{name} differs from {}", p.display());
    }
}

#[test]
fn unknown_template_placeholder_is_an_error() {
    let vars = [("a", "1".to_string())].into_iter().collect();
    assert_eq!(
        hr_sweep::slurm::render("x={{a}} {{ a }}", &vars, "t").unwrap(),
        "x=1 1"
    );
    let e = hr_sweep::slurm::render("{{b}}", &vars, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown placeholder {{b}}"), "{e}");
}

#[test]
fn sacct_and_squeue_parsing() {
    let q = hr_sweep::slurm::parse_squeue("12_0|RUNNING\n12_1|PENDING\n");
    assert_eq!(q["12_1"].state, "PENDING");
    let s = hr_sweep::slurm::parse_sacct("13|CANCELLED by 99|0:15\n14|FAILED|75:0\n");
    assert_eq!(s["13"].state, "CANCELLED");
    assert_eq!(s["14"].exit, Some(75));
}

#[test]
fn coordinator_killed_inside_sbatch_does_not_submit_twice() {
    let fx = SlurmFixture::new();
    let d = fx.sweep.path();
    let mut env = fx.env.clone();
    let args = fx.launch_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.push(("FAKE_SBATCH_KILL", "1".into()));
    let o = hr_sweep(d, &args, &env);
    assert!(
        !o.status.success(),
        "the coordinator was killed: {}",
        text(&o)
    );
    env.pop();
    let o = hr_sweep(d, &args, &env);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("6 of 6 runs done, 0 failed"), "{t}");
    let sc = fx.slurm_calls();
    assert_eq!(
        sc.iter().filter(|l| l.contains("--array=")).count(),
        1,
        "{sc:?}"
    );
    assert!(
        sc.iter()
            .any(|l| l.starts_with("squeue") && l.contains("--name t-")),
        "{sc:?}"
    );
    let tc = fx.sweep.calls();
    assert_eq!(count(&tc, "train "), 6, "{tc:?}");
    assert_eq!(count(&tc, "eval "), 6, "{tc:?}");
}

#[test]
fn gpu_evaluations_ask_slurm_for_a_gpu() {
    // table1.toml evaluates on `cuda`.
    let sweep = repo().join("configs/sweeps/table1.toml");
    let plan = hr_sweep::Plan::load(&sweep, Some(Path::new("runs/t1"))).unwrap();
    let opts = options("/opt/hr/bin", "/scratch");
    let script = hr_sweep::slurm::render_eval(&plan, &opts, &plan.runs[0], "e1").unwrap();
    assert!(script.contains("\n#SBATCH --gpus-per-task=1\n"), "{script}");
    assert!(script.contains("--device cuda"), "{script}");
}
