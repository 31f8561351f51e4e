//! Forward + backward (+ Adam step) of the late-fusion `HybridRetriever` from raw waveforms on
//! the CPU or a GPU: one training step of the paper's recipe (10 s audio at 32 kHz, 32-token
//! queries and 32-token metadata, random weights).
//!
//! `cargo bench -p hr-models --bench retriever` runs one configuration per process, so the
//! reported peak RSS (VmHWM of /proc/self/status) belongs to that configuration alone.
//!
//! On a GPU (`HR_BENCH_DEVICE=cuda`, or `-- --device cuda` on the command line) the parameters,
//! gradients and Adam moments live on the device; the mel frontend runs there too, on the
//! batch's waveforms uploaded every step (included in the step time; see `HR_BENCH_WAVEFORMS`),
//! and the host frontend is timed alone for reference. Every
//! clock reading follows a device synchronisation; peak GPU memory is the high-water mark of the
//! device's stream-ordered memory pool over the timed steps (reset after the warm-up; the
//! analogue of `torch.cuda.max_memory_allocated`), plus what the pool reserved and the device's
//! whole used memory (`cuMemGetInfo`, includes the context and cuBLAS workspaces).
//! Environment variables:
//! - `HR_BENCH_PRESET` (default `tiny`): `tiny`, `paper-base`, `paper-large`;
//! - `HR_BENCH_BATCH` (default 32): examples per step;
//! - `HR_BENCH_STEPS` (default 3): timed steps after one warm-up step;
//! - `HR_BENCH_SECONDS` (default 10): audio length in seconds;
//! - `HR_BENCH_DEVICE` (default `cpu`): `cpu`, `cuda`, `cuda:N` (a `--device X` argument wins);
//! - `HR_BENCH_PRECISION` (default `f32`): `bf16` runs the step under
//!   `hr_tensor::autocast::bf16_matmuls` and `bf16_activations` (bf16 GEMM operands, bf16 CNN
//!   activations: what `run.precision = "bf16"` does in the trainer); `bf16-gemm` under
//!   `bf16_matmuls` alone (f32 CNN activations, for comparison);
//! - `HR_BENCH_GFLOP` (optional): FLOPs of one step in GFLOP (from
//!   `tools/torch_retriever_bench.py --flops`, same model) to print the achieved TFLOP/s;
//! - `HR_BENCH_WAVEFORMS` (default `host`): `device` uploads the batch's waveforms once before
//!   the timed steps (as the PyTorch reference does with its batch), so the step starts from
//!   waveforms in GPU memory; `host` uploads them inside every step (what the trainer does);
//! - `HR_BENCH_PROFILE` (default 0): 1 = one more step with [`hr_tensor::cuda::OpProfile`]
//!   recording: GPU time per kernel / cuBLAS call / upload, and the GPU's busy time against
//!   the step's wall clock (CUDA only);
//! - `HR_BENCH_KEEP_FREED` (default 1): 1 = `hr_tensor::cpu::keep_freed_memory` (what
//!   hr-train does), 0 = glibc's default allocator settings;
//! - `HR_BENCH_BREAKDOWN` (default 0): 1 = time the parts of the step (mel, CNN, BERT, pooling,
//!   loss, each backward) by running the step by hand, plus standalone BERT / pooling copies
//!   of the same shapes to split the text and pooling costs (more memory: run it separately).
//!
//! Output: one Markdown table row per configuration (and the breakdown rows when asked).

use std::time::Instant;

use hr_models::bert::BertModel;
use hr_models::exchange::LocalRows;
use hr_models::mel::{MelConfig, MelFrontend};
use hr_models::mobilenet::WINDOW_FRAMES;
use hr_models::pooling::{frame_mask, AudioPooling};
use hr_models::presets::preset;
use hr_models::retriever::{HybridRetriever, RetrievalBatch, WaveformBatch};
use hr_models::text::{TokenBatch, MAX_TOKENS};
use hr_nn::optim::{Adam, AdamConfig, ParamGroup};
use hr_nn::{Mode, ParamStore};
use hr_tensor::{cuda, Device, Rng, Tensor};

const SAMPLE_RATE: usize = 32_000;

/// The autocast guards of a precision mode: bf16 GEMM operands, bf16 CNN activations.
fn mixed_precision(gemms: bool, acts: bool) -> [hr_tensor::autocast::AutocastGuard; 2] {
    [
        hr_tensor::autocast::bf16_matmuls(gemms),
        hr_tensor::autocast::bf16_activations(acts),
    ]
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// A `VmRSS` / `VmHWM` line of /proc/self/status in MiB.
fn proc_status_mib(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system, all threads) of this process so far, from /proc/self/stat
/// (clock ticks of 1/100 s). With other jobs on the machine, CPU time per step is less
/// sensitive to the contention than wall time.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// The device from `--device X` / `--device=X` (after `--`) or `HR_BENCH_DEVICE`.
fn bench_device() -> Device {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--device") {
            Some("") => args.get(i + 1).cloned(),
            Some(v) => v.strip_prefix('=').map(str::to_string),
            None => None,
        });
    let name = from_args.unwrap_or_else(|| env_or("HR_BENCH_DEVICE", "cpu".to_string()));
    Device::parse(&name).unwrap_or_else(|e| panic!("device {name:?}: {e}"))
}

/// Waits for the device's queued work (no-op on the CPU).
fn sync(dev: Device) {
    if let Device::Cuda(n) = dev {
        cuda::synchronize(n).unwrap_or_else(|e| panic!("synchronize {dev}: {e}"));
    }
}

/// Memory statistics of a GPU (None on the CPU).
fn gpu_memory(dev: Device) -> Option<cuda::MemoryStats> {
    match dev {
        Device::Cuda(n) => Some(cuda::memory_stats(n).unwrap_or_else(|e| panic!("{e}"))),
        Device::Cpu => None,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// `rows` texts of exactly [`MAX_TOKENS`] tokens: [CLS], random word pieces, [SEP].
fn tokens(rows: usize, vocab: usize, rng: &mut Rng) -> TokenBatch {
    // bert-base-uncased ids of [CLS] / [SEP] when the vocabulary is real-sized; 2 / 3 otherwise.
    let (cls, sep) = if vocab > 1000 { (101, 102) } else { (2, 3) };
    let seqs: Vec<Vec<u32>> = (0..rows)
        .map(|_| {
            let mut s = vec![cls];
            s.extend((0..MAX_TOKENS - 2).map(|_| (5 + rng.below(vocab - 5)) as u32));
            s.push(sep);
            s
        })
        .collect();
    TokenBatch::from_sequences(&seqs, 0)
}

fn batch(b: usize, seconds: usize, vocab: usize, rng: &mut Rng) -> WaveformBatch {
    let n = seconds * SAMPLE_RATE;
    WaveformBatch {
        waveforms: Tensor::randn(&[b, n], 0.1, rng).expect("waveforms"),
        valid_lengths: vec![n; b],
        queries: tokens(b, vocab, rng),
        metadata: tokens(b, vocab, rng),
        metadata_present: vec![true; b],
        clip_ids: (0..b as u64).collect(),
    }
}

/// Adam over the paper's four groups (lr 2e-5, no weight decay).
fn adam(ps: &ParamStore) -> Adam {
    let g = |name: &str, prefixes: &[&str]| ParamGroup::by_prefix(ps, name, prefixes, 2e-5, 0.0);
    let groups = vec![
        g("audio_cnn", &["audio_cnn."]),
        g("bert", &["text."]),
        g("audio_head", &["audio_head."]),
        g("text_proj", &["text_proj."]),
    ];
    Adam::new(ps, AdamConfig::default(), groups).expect("optimizer")
}

/// Medians of the timed steps, seconds.
struct StepTimes {
    fwd: Vec<f64>,
    bwd: Vec<f64>,
    adam: Vec<f64>,
    total: Vec<f64>,
    cpu: Vec<f64>,
}

/// One warm-up step and `steps` timed steps (zero_grad + forward + backward + Adam).
fn run_steps(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    opt: &mut Adam,
    wb: &WaveformBatch,
    steps: usize,
    dev: Device,
) -> StepTimes {
    let mut t = StepTimes {
        fwd: vec![],
        bwd: vec![],
        adam: vec![],
        total: vec![],
        cpu: vec![],
    };
    for step in 0..=steps {
        if step == 1 {
            if let Device::Cuda(n) = dev {
                sync(dev);
                cuda::reset_peak_memory(n).expect("reset peak memory");
            }
        }
        let mode = Mode::Train {
            seed: 1000 + step as u64,
        };
        sync(dev);
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        ps.zero_grad()
            .unwrap_or_else(|e| panic!("zero_grad on {dev}: {e}"));
        let (out, cache) = model
            .forward(ps, wb, mode, &mut LocalRows)
            .unwrap_or_else(|e| panic!("forward on {dev}: {e}"));
        sync(dev);
        let t1 = Instant::now();
        model
            .backward(ps, &cache, 1.0, &mut LocalRows)
            .unwrap_or_else(|e| panic!("backward on {dev}: {e}"));
        drop(cache);
        sync(dev);
        let t2 = Instant::now();
        opt.step(ps)
            .unwrap_or_else(|e| panic!("adam on {dev}: {e}"));
        sync(dev);
        let t3 = Instant::now();
        let c1 = cpu_seconds();
        let loss = out
            .loss
            .scalar_f64()
            .unwrap_or_else(|e| panic!("loss on {dev}: {e}"));
        let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
        let mem = match gpu_memory(dev) {
            Some(m) => format!("GPU pool peak {:.0} MiB", mib(m.pool_used_high)),
            None => format!("VmHWM {:.0} MiB", proc_status_mib("VmHWM:")),
        };
        eprintln!(
            "#   step {step}{}: {:.4} s, CPU {:.2} s (zero_grad+forward {:.4}, backward {:.4}, \
             adam {:.4}), loss {loss:.4}, {mem}",
            if step == 0 { " (warm-up)" } else { "" },
            s(t0, t3),
            c1 - c0,
            s(t0, t1),
            s(t1, t2),
            s(t2, t3),
        );
        if step > 0 {
            t.fwd.push(s(t0, t1));
            t.bwd.push(s(t1, t2));
            t.adam.push(s(t2, t3));
            t.total.push(s(t0, t3));
            t.cpu.push(c1 - c0);
        }
    }
    t
}

/// Median seconds of the host mel frontend alone on the batch (it is part of every step).
fn time_mel(wb: &WaveformBatch, steps: usize) -> f64 {
    let mel_fe = MelFrontend::new(MelConfig::default()).expect("mel");
    let waves = wb
        .waveforms
        .to_device(Device::Cpu)
        .expect("waveforms to the host");
    let times: Vec<f64> = (0..steps)
        .map(|i| {
            let t0 = Instant::now();
            let mode = Mode::Train {
                seed: 5000 + i as u64,
            };
            mel_fe.forward(&waves, mode).expect("mel");
            t0.elapsed().as_secs_f64()
        })
        .collect();
    median(&times)
}

fn main() {
    // As hr-train does: reuse freed host memory (HR_BENCH_KEEP_FREED=0 keeps glibc's default).
    if env_or("HR_BENCH_KEEP_FREED", 1u8) != 0 {
        hr_tensor::cpu::keep_freed_memory();
    }
    let name: String = env_or("HR_BENCH_PRESET", "tiny".to_string());
    let b: usize = env_or("HR_BENCH_BATCH", 32);
    let steps: usize = env_or("HR_BENCH_STEPS", 3).max(1);
    let seconds: usize = env_or("HR_BENCH_SECONDS", 10);
    let breakdown: bool = env_or("HR_BENCH_BREAKDOWN", 0u8) != 0;
    let gflop: f64 = env_or("HR_BENCH_GFLOP", f64::NAN);
    let precision: String = env_or("HR_BENCH_PRECISION", "f32".to_string());
    let (bf16, bf16_acts) = match precision.as_str() {
        "f32" => (false, false),
        "bf16" => (true, true),
        "bf16-gemm" => (true, false),
        other => panic!("HR_BENCH_PRECISION={other:?}: expected f32, bf16 or bf16-gemm"),
    };
    let profile: bool = env_or("HR_BENCH_PROFILE", 0u8) != 0;
    let waves_on_device = match env_or("HR_BENCH_WAVEFORMS", "host".to_string()).as_str() {
        "host" => false,
        "device" => true,
        other => panic!("HR_BENCH_WAVEFORMS={other:?}: expected host or device"),
    };
    let dev = bench_device();
    let cfg = preset(&name).expect("preset");
    let threads = rayon::current_num_threads();

    let mut rng = Rng::new(7);
    let mut ps = ParamStore::new();
    let model = HybridRetriever::new(&mut ps, cfg.clone(), &mut rng).expect("model");
    let params = ps.num_trainable();
    let mut wb = batch(b, seconds, cfg.text.vocab_size, &mut rng);
    if waves_on_device {
        wb.waveforms = wb
            .waveforms
            .to_device(dev)
            .unwrap_or_else(|e| panic!("waveforms to {dev}: {e}"));
    }
    let waves = if waves_on_device && dev != Device::Cpu {
        ", waveforms on the device"
    } else {
        ""
    };
    ps.to_device(dev)
        .and_then(|()| ps.check_device(dev))
        .unwrap_or_else(|e| panic!("parameters to {dev}: {e}"));
    let mut opt = adam(&ps);
    sync(dev);
    let rss_model = proc_status_mib("VmRSS:");
    let mem_init = gpu_memory(dev);
    let card = match dev {
        Device::Cuda(n) => cuda::context(n).map(|d| d.name.clone()).unwrap_or_default(),
        Device::Cpu => "cpu".to_string(),
    };

    eprintln!(
        "# {name} on {dev} ({card}): {params} trainable parameters (the CNN without its \
         classifier head), batch {b}, {seconds} s audio, {MAX_TOKENS}-token queries and \
         metadata, {threads} rayon threads, {}, 1 warm-up + {steps} timed steps",
        match (bf16, bf16_acts) {
            (true, true) =>
                "bf16 autocast GEMMs (bf16 operands, f32 accumulation), bf16 CNN activations",
            (true, false) =>
                "bf16 autocast GEMMs (bf16 operands, f32 accumulation), f32 activations",
            _ => "f32 (plain FP32 GEMMs)",
        }
    );
    let t = {
        let _autocast = mixed_precision(bf16, bf16_acts);
        run_steps(&model, &mut ps, &mut opt, &wb, steps, dev)
    };
    if profile {
        let _autocast = mixed_precision(bf16, bf16_acts);
        profiled_step(&model, &mut ps, &mut opt, &wb, dev);
    }
    let med = median(&t.total);
    let mel = time_mel(&wb, steps);
    match (gpu_memory(dev), mem_init) {
        (Some(m), Some(m0)) => {
            println!(
                "| preset | batch | audio | device | params (M) | step (s, median of {steps}) \
                 | forward (s) | backward (s) | Adam (s) | items/s | TFLOP/s | host mel alone (s) \
                 | peak GPU pool used (MiB) | peak GPU pool reserved (MiB) | GPU used by device (MiB) \
                 | GPU pool after init (MiB) |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            println!(
                "| {name} (Rust {precision}{waves}, {card}) | {b} | {seconds} s | {dev} | {:.2} | {med:.4} | {:.4} \
                 | {:.4} | {:.4} | {:.1} | {:.1} | {mel:.4} | {:.0} | {:.0} | {:.0} | {:.0} |",
                params as f64 / 1e6,
                median(&t.fwd),
                median(&t.bwd),
                median(&t.adam),
                b as f64 / med,
                gflop / med / 1e3,
                mib(m.pool_used_high),
                mib(m.pool_reserved_high),
                mib(m.device_total - m.device_free),
                mib(m0.pool_used),
            );
        }
        _ => {
            let hwm = proc_status_mib("VmHWM:");
            println!(
                "| preset | batch | audio | threads | params (M) | step (s, median of {steps}) \
                 | forward (s) | backward (s) | Adam (s) | CPU s/step | items/s | peak RSS (MiB) \
                 | RSS after init (MiB) |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            println!(
                "| {name} (Rust {precision}) | {b} | {seconds} s | {threads} | {:.2} | {med:.3} | {:.3} \
                 | {:.3} | {:.3} | {:.2} | {:.2} | {hwm:.0} | {rss_model:.0} |",
                params as f64 / 1e6,
                median(&t.fwd),
                median(&t.bwd),
                median(&t.adam),
                median(&t.cpu),
                b as f64 / med,
            );
            eprintln!("# host mel frontend alone (part of the step): {mel:.3} s");
        }
    }

    if breakdown {
        let _autocast = mixed_precision(bf16, bf16_acts);
        run_breakdown(&model, &mut ps, &wb, steps, dev);
    }
}

/// One more training step with the CUDA op profiler recording; prints its table.
fn profiled_step(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    opt: &mut Adam,
    wb: &WaveformBatch,
    dev: Device,
) {
    let Device::Cuda(n) = dev else {
        eprintln!("# HR_BENCH_PROFILE: CUDA only, skipped on {dev}");
        return;
    };
    sync(dev);
    let p = cuda::OpProfile::start(n).expect("start the op profile");
    ps.zero_grad().expect("zero_grad");
    let (_, cache) = model
        .forward(ps, wb, Mode::Train { seed: 9000 }, &mut LocalRows)
        .expect("forward");
    model
        .backward(ps, &cache, 1.0, &mut LocalRows)
        .expect("backward");
    drop(cache);
    opt.step(ps).expect("adam");
    let report = p.finish().expect("finish the op profile");
    println!(
        "\n| op profile of one step ({dev}): GPU busy {:.1} ms in {} calls, GPU span {:.1} ms, \
         wall {:.1} ms | | | |",
        report.busy_ms(),
        report.calls(),
        report.gpu_span_ms,
        report.wall_ms
    );
    println!("{}", report.table(45));
}

/// The log-mel on `dev` as `encode_audio` computes it: the device frontend on a GPU (from
/// host or device waveforms), the host frontend on the CPU.
fn mel_of(mel_fe: &MelFrontend, waves: &Tensor, mode: Mode, dev: Device) -> Tensor {
    match dev {
        Device::Cuda(_) => mel_fe.forward_device(waves, mode, dev),
        Device::Cpu => mel_fe.forward(waves, mode),
    }
    .expect("mel")
}

/// The step by hand (same computation as forward / backward on a waveform batch) with a timer
/// around each part, then standalone BERT and pooling copies to split the text-side costs.
fn run_breakdown(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    wb: &WaveformBatch,
    steps: usize,
    dev: Device,
) {
    let cfg = model.config().clone();
    let mel_fe = MelFrontend::new(MelConfig::default()).expect("mel");
    let cnn = model.audio_cnn().expect("preset with an audio backbone");
    let names = [
        "mel",
        "CNN fwd",
        "BERT x2 + pooling + fusion + loss fwd",
        "same, bwd",
        "CNN bwd",
    ];
    let mut parts: Vec<Vec<f64>> = vec![vec![]; names.len()];
    for step in 0..=steps {
        let mode = Mode::Train {
            seed: 2000 + step as u64,
        };
        ps.zero_grad().expect("zero_grad");
        sync(dev);
        let mut t = vec![Instant::now()];
        // encode_audio uses sub-modes 3 (mel) and 4 (CNN).
        let mel = mel_of(&mel_fe, &wb.waveforms, mode.sub(3), dev);
        sync(dev);
        t.push(Instant::now());
        let (frames, cnn_cache) = cnn
            .forward_windows(ps, &mel, mode.sub(4), WINDOW_FRAMES)
            .expect("cnn");
        sync(dev);
        t.push(Instant::now());
        let n = wb.waveforms.shape()[1];
        let fr: Vec<f64> = wb
            .valid_lengths
            .iter()
            .map(|&v| v as f64 / n as f64)
            .collect();
        let fb = RetrievalBatch {
            frame_valid: frame_mask(&fr, frames.shape()[1]),
            frames,
            queries: wb.queries.clone(),
            metadata: wb.metadata.clone(),
            metadata_present: wb.metadata_present.clone(),
            clip_ids: wb.clip_ids.clone(),
        };
        let (_, cache) = model
            .forward(ps, &fb, mode, &mut LocalRows)
            .expect("forward");
        sync(dev);
        t.push(Instant::now());
        let dframes = model
            .backward(ps, &cache, 1.0, &mut LocalRows)
            .expect("backward");
        drop(cache);
        sync(dev);
        t.push(Instant::now());
        cnn.backward_windows(ps, &cnn_cache, &dframes)
            .expect("cnn bwd");
        sync(dev);
        t.push(Instant::now());
        if step > 0 {
            for (i, p) in parts.iter_mut().enumerate() {
                p.push((t[i + 1] - t[i]).as_secs_f64());
            }
        }
    }
    let frames_shape = {
        let mel = mel_of(&mel_fe, &wb.waveforms, Mode::Eval, dev);
        let (f, _) = cnn
            .forward_windows(ps, &mel, Mode::Eval, WINDOW_FRAMES)
            .expect("cnn");
        f.shape().to_vec()
    };

    // Standalone copies of the text encoder and the pooling transformer, same shapes.
    let mut ps2 = ParamStore::new();
    let mut rng = Rng::new(11);
    let bert = BertModel::new(&mut ps2, "text", cfg.text, &mut rng).expect("bert");
    let pool = AudioPooling::new(&mut ps2, "audio_head", cfg.pooling, &mut rng).expect("pooling");
    ps2.to_device(dev).expect("standalone copies to the device");
    let frames = Tensor::randn(&frames_shape, 1.0, &mut rng)
        .and_then(|f| f.to_device(dev))
        .expect("frames");
    let valid = vec![1u8; frames_shape[0] * frames_shape[1]];
    let (mut bf, mut bb, mut pf, mut pb) = (vec![], vec![], vec![], vec![]);
    for step in 0..=steps {
        let mode = Mode::Train {
            seed: 3000 + step as u64,
        };
        ps2.zero_grad().expect("zero_grad");
        sync(dev);
        let t0 = Instant::now();
        let (q, qc) = bert.forward_cls(&ps2, &wb.queries, mode.sub(0)).expect("q");
        let (m, mc) = bert
            .forward_cls(&ps2, &wb.metadata, mode.sub(1))
            .expect("m");
        sync(dev);
        let t1 = Instant::now();
        bert.backward_cls(&mut ps2, &qc, &q).expect("q bwd");
        bert.backward_cls(&mut ps2, &mc, &m).expect("m bwd");
        sync(dev);
        let t2 = Instant::now();
        let (a, pc) = pool
            .forward(&ps2, &frames, &valid, mode.sub(2))
            .expect("pool");
        sync(dev);
        let t3 = Instant::now();
        pool.backward(&mut ps2, &pc, &a).expect("pool bwd");
        sync(dev);
        let t4 = Instant::now();
        if step > 0 {
            bf.push((t1 - t0).as_secs_f64());
            bb.push((t2 - t1).as_secs_f64());
            pf.push((t3 - t2).as_secs_f64());
            pb.push((t4 - t3).as_secs_f64());
        }
    }
    println!();
    println!(
        "| part ({}, batch {}, frames {:?}) | seconds (median of {steps}) |",
        cfg.name, frames_shape[0], frames_shape
    );
    println!("|---|---|");
    for (n, p) in names.iter().zip(&parts) {
        println!("| {n} | {:.3} |", median(p));
    }
    println!(
        "| standalone BERT fwd (queries + metadata) | {:.3} |",
        median(&bf)
    );
    println!(
        "| standalone BERT bwd (queries + metadata) | {:.3} |",
        median(&bb)
    );
    println!(
        "| standalone pooling transformer fwd | {:.3} |",
        median(&pf)
    );
    println!(
        "| standalone pooling transformer bwd | {:.3} |",
        median(&pb)
    );
    println!(
        "| (derived: in-step minus standalone; noise-level) fusion + loss + projections fwd | {:.3} |",
        median(&parts[2]) - median(&bf) - median(&pf)
    );
    println!(
        "| (derived: in-step minus standalone; noise-level) fusion + loss + projections bwd | {:.3} |",
        median(&parts[3]) - median(&bb) - median(&pb)
    );
    println!(
        "| peak RSS incl. breakdown copies (MiB) | {:.0} |",
        proc_status_mib("VmHWM:")
    );
    if let Some(m) = gpu_memory(dev) {
        println!(
            "| peak GPU pool used incl. breakdown copies (MiB) | {:.0} |",
            mib(m.pool_used_high)
        );
    }
}
