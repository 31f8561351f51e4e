//! GPU training-step parity: one training step of the `HybridRetriever` from raw
//! waveforms on `Device::Cuda(0)` against the CPU backend, identical parameters and batch.
//!
//! Per case: forward + backward in training mode (f32; SpecAugment, fmin/fmax jitter and every
//! dropout on with the same seed: the masks are counter-based, so both devices draw the same
//! ones; the GPU model runs the device mel frontend, `MelFrontend::forward_device`, within ~1e-5
//! of the host one that the CPU model runs), then
//! - the loss and EVERY parameter gradient are compared, and every value after the forward
//!   (BatchNorm running statistics are updated by it), as `max |gpu - cpu| / max |cpu|` per
//!   tensor, below `HR_CUDA_STEP_TOL` (default 1e-3, room for TF32 GEMMs / convolutions);
//! - one Adam step: the GPU step is compared with a CPU step from the same (GPU) gradients,
//!   below 1e-5 (the optimiser kernel alone; a gradient error would otherwise flip the sign
//!   of Adam's first update, `±lr`, wherever a gradient is near zero); the end-to-end
//!   difference (CPU step from CPU gradients) is printed in units of lr for information.
//!
//! Before the full step, each encoder runs alone (standalone copies: MobileNetV3 from the
//! host log-mel, BERT on the queries, the pooling transformer on the CNN's frames; forward and
//! a backward with the output as upstream gradient) so that a failure or a mismatch is
//! localised to a component; their comparisons count too.
//!
//! Every tensor's error is printed (`--nocapture` to see them on success). Cases: the tiny
//! preset with late, mid and no fusion (mn01), and the tiny preset with an mn04 backbone.
//! Without a CUDA device every test prints exactly one line, "skipped: no CUDA device", and
//! passes.

use std::collections::HashMap;
use std::sync::Mutex;

use hr_models::bert::BertModel;
use hr_models::exchange::LocalRows;
use hr_models::fusion::FusionKind;
use hr_models::mel::{MelConfig, MelFrontend};
use hr_models::mobilenet::{MobileNetConfig, MobileNetV3, Part, WINDOW_FRAMES};
use hr_models::pooling::{frame_mask, AudioPooling};
use hr_models::presets::preset;
use hr_models::retriever::{HybridRetriever, RetrieverConfig, WaveformBatch};
use hr_models::text::TokenBatch;
use hr_nn::optim::{Adam, AdamConfig, ParamGroup};
use hr_nn::{Mode, ParamStore};
use hr_tensor::{cuda, Device, Rng, Tensor};

/// The tests share one device and one stream: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Sample rate of the mel frontend.
const SAMPLE_RATE: usize = 32_000;

/// Learning rate of the Adam step (large, so that the update is visible next to rounding).
const LR: f64 = 1e-3;

/// The GPU, or `None` after printing the skip line (same rule as hr-tensor's parity suite).
/// `HR_CUDA_STEP_SELFTEST=1` runs the comparison CPU against CPU instead (checks the harness
/// on a machine without a GPU; every error must then be exactly 0).
fn gpu() -> Option<Device> {
    if std::env::var("HR_CUDA_STEP_SELFTEST").is_ok_and(|v| v == "1") {
        println!("self-test: comparing the CPU backend with itself");
        return Some(Device::Cpu);
    }
    hr_tensor::testing::cuda_or_skip()
}

/// Gradient / forward tolerance (`HR_CUDA_STEP_TOL`, default 1e-3).
fn tolerance() -> f64 {
    hr_core::env_or("HR_CUDA_STEP_TOL", 1e-3)
}

/// The tiny preset with `fusion` and the EfficientAT backbone `backbone`.
fn config(fusion: FusionKind, backbone: &str) -> RetrieverConfig {
    let mut cfg = preset("tiny").expect("tiny preset");
    cfg.fusion = fusion;
    cfg.audio.backbone = Some(backbone.to_string());
    cfg.pooling.in_dim = MobileNetConfig::from_name(backbone)
        .expect("backbone name")
        .last_conv;
    cfg.name = format!("tiny-{backbone}-{fusion:?}");
    cfg
}

/// Token rows of the given lengths ([CLS] ... [SEP], padded with 0).
fn tokens(lengths: &[usize], vocab: usize, rng: &mut Rng) -> TokenBatch {
    let seqs: Vec<Vec<u32>> = lengths
        .iter()
        .map(|&n| {
            let mut s = vec![2u32];
            s.extend((0..n.saturating_sub(2)).map(|_| (5 + rng.below(vocab - 5)) as u32));
            s.push(3);
            s
        })
        .collect();
    TokenBatch::from_sequences(&seqs, 0)
}

/// Four host waveforms of `seconds` (two zero-padded), two rows of the same clip, one item
/// without metadata, texts of different lengths (padding in every mask).
fn batch(seconds: f64, vocab: usize, rng: &mut Rng) -> WaveformBatch {
    let n = (seconds * SAMPLE_RATE as f64) as usize;
    let valid = vec![n, n * 3 / 4, n, n / 2];
    let mut w = Tensor::randn(&[4, n], 0.1, rng).expect("waveforms");
    let data = w.as_mut_slice::<f32>().expect("host f32");
    for (row, &v) in data.chunks_mut(n).zip(&valid) {
        row[v..].iter_mut().for_each(|x| *x = 0.0);
    }
    WaveformBatch {
        waveforms: w,
        valid_lengths: valid,
        queries: tokens(&[12, 7, 16, 9], vocab, rng),
        metadata: tokens(&[5, 16, 11, 8], vocab, rng),
        metadata_present: vec![true, false, true, true],
        clip_ids: vec![10, 11, 11, 12],
    }
}

/// `max |a - b|`, `max |b|` and their ratio (0 / 0 = 0), b the CPU reference.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<(f64, f64, f64), String> {
    if a.shape() != b.shape() {
        return Err(format!("shape {:?} vs {:?}", a.shape(), b.shape()));
    }
    let (av, bv) = (
        a.to_vec_f64().map_err(|e| e.to_string())?,
        b.to_vec_f64().map_err(|e| e.to_string())?,
    );
    let (mut err, mut scale) = (0f64, 0f64);
    for (x, y) in av.iter().zip(&bv) {
        if x.is_nan() != y.is_nan() {
            return Err(format!(
                "NaN mismatch (gpu {x}, cpu {y}): an unwritten element?"
            ));
        }
        err = err.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    let rel = if scale > 0.0 { err / scale } else { err };
    Ok((err, scale, rel))
}

/// Gradients whose true value is exactly zero (a key bias shifts every score of a softmax row
/// equally): both devices give rounding noise, compared in absolute terms instead.
fn is_zero_grad(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// Runs `what` and turns its error into a message naming the stage and the device.
fn stage<T, E: std::fmt::Display>(
    what: &str,
    device: Device,
    r: Result<T, E>,
) -> Result<T, String> {
    r.map_err(|e| format!("{what} on {device} failed: {e}"))
}

/// zero_grad + forward + backward; returns the loss.
fn step(
    model: &HybridRetriever,
    ps: &mut ParamStore,
    batch: &WaveformBatch,
    mode: Mode,
) -> Result<f64, String> {
    let device = model.device(ps);
    stage("zero_grad", device, ps.zero_grad())?;
    let (out, cache) = stage(
        "forward",
        device,
        model.forward(ps, batch, mode, &mut LocalRows),
    )?;
    let loss = stage("loss download", device, out.loss.scalar_f64())?;
    stage(
        "backward",
        device,
        model.backward(ps, &cache, 1.0, &mut LocalRows),
    )?;
    Ok(loss)
}

/// One Adam group over every trainable parameter (AdamW decay on, to cover it).
fn adam(ps: &ParamStore) -> Adam {
    let all = ParamGroup::by_prefix(ps, "all", &[""], LR, 0.01);
    Adam::new(ps, AdamConfig::default(), vec![all]).expect("optimizer")
}

/// How far each gradient moves on the CPU when every parameter is perturbed by a relative
/// `SPREAD_EPS` (rounding-sized): some gradients are ill-conditioned at initialisation (in the
/// tiny mid-fusion model a 1e-7 change of the parameters moves the CNN's gradients by ~1%), so
/// the GPU is held to "no further from the CPU than rounding moves the CPU itself".
fn rounding_spread(
    model: &HybridRetriever,
    cpu: &ParamStore,
    batch: &WaveformBatch,
    mode: Mode,
) -> HashMap<String, f64> {
    let mut other = cpu.clone();
    perturb(&mut other, SPREAD_EPS);
    if let Err(e) = step(model, &mut other, batch, mode) {
        println!("rounding spread not measured: {e}");
        return HashMap::new();
    }
    cpu.iter()
        .zip(other.iter())
        .filter(|((_, c), _)| c.trainable)
        .filter_map(|((_, c), (_, o))| Some((c.name.clone(), rel_err(&o.grad, &c.grad).ok()?.0)))
        .collect()
}

/// Relative size of the parameter perturbation of [`rounding_spread`].
const SPREAD_EPS: f64 = 1e-7;

/// Gradients pass within `tol` of their scale or within 10x their rounding spread.
fn compare_store_spread(
    label: &str,
    gpu: &ParamStore,
    cpu: &ParamStore,
    tol: f64,
    spread: &HashMap<String, f64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut widened = 0;
    for line in compare_store(label, gpu, cpu, What::Grads, tol) {
        let Some((name, err)) = parse_failure(&line) else {
            failures.push(line);
            continue;
        };
        match spread.get(&name) {
            Some(&s) if err <= 10.0 * s => widened += 1,
            _ => failures.push(line),
        }
    }
    println!(
        "{label}: {widened} gradient(s) above tolerance but within 10x their rounding spread \
         (CPU vs CPU with parameters perturbed by {SPREAD_EPS:e})"
    );
    failures
}

/// (name, max|gpu-cpu|) of a failure line of [`compare_store_ex`].
fn parse_failure(line: &str) -> Option<(String, f64)> {
    let mut words = line.split_whitespace();
    let _label = words.next()?;
    let _kind = words.next()?;
    let name = words.next()?.to_string();
    let err = line
        .split("max|gpu-cpu| ")
        .nth(1)?
        .split(',')
        .next()?
        .parse()
        .ok()?;
    Some((name, err))
}

/// What [`compare_store`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Gradients of the trainable parameters.
    Grads,
    /// Values of every entry (buffers included).
    Values,
    /// Values of the trainable parameters.
    TrainableValues,
}

/// Compares gradients or values of `gpu` against `cpu`; prints one line per tensor and returns
/// the failures.
fn compare_store(
    label: &str,
    gpu: &ParamStore,
    cpu: &ParamStore,
    what: What,
    tol: f64,
) -> Vec<String> {
    compare_store_ex(label, gpu, cpu, what, tol, true)
}

/// [`compare_store`]; `verbose = false` prints only failures and the worst tensor.
fn compare_store_ex(
    label: &str,
    gpu: &ParamStore,
    cpu: &ParamStore,
    what: What,
    tol: f64,
    verbose: bool,
) -> Vec<String> {
    let grads = what == What::Grads;
    let mut failures = Vec::new();
    let global = if grads { max_grad(cpu) } else { max_value(cpu) };
    let mut worst = (0f64, String::new());
    for ((_, g), (_, c)) in gpu.iter().zip(cpu.iter()) {
        if what != What::Values && !c.trainable {
            continue;
        }
        let (a, b) = if grads {
            (&g.grad, &c.grad)
        } else {
            (&g.value, &c.value)
        };
        let res = rel_err(a, b);
        let (ok, line) = match res {
            Err(e) => (false, format!("{label} {}: {e}", c.name)),
            Ok((err, scale, rel)) => {
                let ok = if grads && is_zero_grad(&c.name) {
                    err <= 1e-4 * global.max(1e-30) && scale <= 1e-4 * global.max(1e-30)
                } else {
                    // Tensors whose exact value is ~0 (e.g. the bias of a batch norm whose output
                    // feeds another batch norm in training mode: its gradient cancels; running
                    // means of such outputs) hold rounding noise on both devices: they pass when
                    // the difference is below NOISE of the largest entry of the whole store.
                    rel <= tol || err <= NOISE * global
                };
                if rel > worst.0 && !(grads && is_zero_grad(&c.name)) {
                    worst = (rel, c.name.clone());
                }
                let line = format!(
                    "{label} {} {:?}: max|cpu| {scale:.3e}, max|gpu-cpu| {err:.3e}, rel {rel:.3e}{}",
                    c.name,
                    b.shape(),
                    if is_zero_grad(&c.name) && grads {
                        " (exact gradient is 0: absolute check)"
                    } else {
                        ""
                    }
                );
                (ok, line)
            }
        };
        if verbose || !ok {
            println!("{}{line}", if ok { "  " } else { "X " });
        }
        if !ok {
            failures.push(line);
        }
    }
    println!(
        "{label}: worst relative error {:.3e} ({})",
        worst.0, worst.1
    );
    failures
}

/// Largest |gradient| over every trainable parameter.
/// Noise floor of [`compare_store_ex`], relative to the largest gradient / value of the store.
const NOISE: f64 = 1e-5;

/// Largest magnitude of any value (parameters and buffers).
fn max_value(ps: &ParamStore) -> f64 {
    ps.iter()
        .flat_map(|(_, p)| p.value.to_vec_f64().unwrap_or_default())
        .fold(0f64, |m, v| m.max(v.abs()))
}

fn max_grad(ps: &ParamStore) -> f64 {
    ps.iter()
        .filter(|(_, p)| p.trainable)
        .flat_map(|(_, p)| p.grad.to_vec_f64().unwrap_or_default())
        .fold(0f64, |m, v| m.max(v.abs()))
}

/// `cpu`'s gradients replaced by copies of `gpu`'s.
fn with_grads_of(cpu: &ParamStore, gpu: &ParamStore) -> Result<ParamStore, String> {
    let mut out = cpu.clone();
    stage("zero_grad", Device::Cpu, out.zero_grad())?;
    for ((id, _), (_, g)) in cpu.iter().zip(gpu.iter()) {
        if !g.trainable {
            continue;
        }
        let host = stage(
            "gradient download",
            g.grad.device(),
            g.grad.to_device(Device::Cpu),
        )?;
        stage("gradient copy", Device::Cpu, out.accumulate(id, &host))?;
    }
    Ok(out)
}

/// The largest update difference (in units of lr) between two stores after a step.
fn max_update_diff(a: &ParamStore, b: &ParamStore) -> f64 {
    a.iter()
        .zip(b.iter())
        .filter(|((_, p), _)| p.trainable)
        .filter_map(|((_, p), (_, q))| rel_err(&p.value, &q.value).ok())
        .fold(0f64, |m, (err, _, _)| m.max(err / LR))
}

/// Compares one output tensor; returns the failure line, if any.
fn compare_tensor(label: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) -> Option<String> {
    match rel_err(gpu, cpu) {
        Ok((err, scale, rel)) => {
            let line = format!(
                "{label} {:?}: max|cpu| {scale:.3e}, max|gpu-cpu| {err:.3e}, rel {rel:.3e}",
                cpu.shape()
            );
            println!("{}{line}", if rel <= tol { "  " } else { "X " });
            (rel > tol).then_some(line)
        }
        Err(e) => Some(format!("{label}: {e}")),
    }
}

/// The standalone encoders of a case on one device: returns (CNN frames, BERT CLS, pooled).
fn run_components(
    parts: &Components,
    ps: &mut ParamStore,
    wb: &WaveformBatch,
    frames_in: &Tensor,
) -> Result<[Tensor; 3], String> {
    let dev = ps.device();
    let mode = Mode::Train { seed: 77 };
    let mel = stage(
        "component mel (host)",
        dev,
        parts.mel.forward(&wb.waveforms, mode),
    )?;
    let mel = stage("component mel upload", dev, mel.to_device(dev))?;
    let (frames, cc) = stage(
        "component MobileNetV3 forward_windows",
        dev,
        parts
            .cnn
            .forward_windows(ps, &mel, mode.sub(1), WINDOW_FRAMES),
    )?;
    stage(
        "component MobileNetV3 backward_windows",
        dev,
        parts.cnn.backward_windows(ps, &cc, &upstream(&frames, 1)?),
    )?;
    let (cls, bc) = stage(
        "component BERT forward",
        dev,
        parts.bert.forward_cls(ps, &wb.queries, mode.sub(2)),
    )?;
    stage(
        "component BERT backward",
        dev,
        parts.bert.backward_cls(ps, &bc, &upstream(&cls, 2)?),
    )?;
    let x = stage("component frames upload", dev, frames_in.to_device(dev))?;
    let valid = frame_mask(&[1.0, 0.75, 1.0, 0.5], x.shape()[1]);
    let (pooled, pc) = stage(
        "component pooling forward",
        dev,
        parts.pool.forward(ps, &x, &valid, mode.sub(3)),
    )?;
    stage(
        "component pooling backward",
        dev,
        parts.pool.backward(ps, &pc, &pooled).map(|_| ()),
    )?;
    Ok([frames, cls, pooled])
}

/// Standalone copies of a case's encoders.
struct Components {
    mel: MelFrontend,
    cnn: MobileNetV3,
    bert: BertModel,
    pool: AudioPooling,
}

/// Runs the encoders alone on both devices and compares outputs and gradients.
fn check_components(
    cfg: &RetrieverConfig,
    wb: &WaveformBatch,
    dev: Device,
    tol: f64,
) -> Vec<String> {
    let name = &cfg.name;
    let backbone = cfg.audio.backbone.as_deref().unwrap_or("mn01");
    let mut rng = Rng::new(99);
    let mut cpu = ParamStore::new();
    let parts = Components {
        mel: MelFrontend::new(MelConfig::default()).expect("mel"),
        cnn: MobileNetV3::with_prefix(
            &mut cpu,
            "audio_cnn.",
            Part::Classifier,
            MobileNetConfig::from_name(backbone).expect("backbone"),
            &mut rng,
        )
        .expect("cnn"),
        bert: BertModel::new(&mut cpu, "text", cfg.text, &mut rng).expect("bert"),
        pool: AudioPooling::new(&mut cpu, "audio_head", cfg.pooling, &mut rng).expect("pooling"),
    };
    let mut gpu_ps = cpu.clone();
    if let Err(e) = gpu_ps.to_device(dev) {
        return vec![format!("{name} components: parameters to {dev}: {e}")];
    }
    // The pooling input: the CPU CNN's frames (so the pooling comparison is independent of the
    // CNN's GPU error).
    let probe = run_components(&parts, &mut cpu.clone(), wb, &zeros_frames(cfg));
    let frames_in = match probe {
        Ok([frames, _, _]) => frames,
        Err(e) => return vec![format!("{name} components on the CPU: {e}")],
    };
    let c = run_components(&parts, &mut cpu, wb, &frames_in);
    let g = run_components(&parts, &mut gpu_ps, wb, &frames_in);
    let (c, g) = match (c, g) {
        (Ok(c), Ok(g)) => (c, g),
        (Err(e), _) | (_, Err(e)) => return vec![format!("{name}: {e}")],
    };
    let labels = ["MobileNetV3 frames", "BERT CLS", "pooling output"];
    let mut failures: Vec<String> = labels
        .iter()
        .zip(g.iter().zip(&c))
        .filter_map(|(l, (g, c))| compare_tensor(&format!("{name} component {l}"), g, c, tol))
        .collect();
    failures.extend(compare_store_ex(
        &format!("{name} component grads"),
        &gpu_ps,
        &cpu,
        What::Grads,
        tol,
        false,
    ));
    failures
}

/// A fixed random upstream gradient shaped like `y`, on `y`'s device. Not `y` itself: after a
/// LayerNorm / BatchNorm `||y||^2` is nearly constant, so `dy = y` gives parameter gradients
/// that are 0 in exact arithmetic and rounding noise on both devices.
fn upstream(y: &Tensor, seed: u64) -> Result<Tensor, String> {
    hr_tensor::testing::randn32(y.shape(), &mut Rng::new(seed))
        .to_device(y.device())
        .map_err(|e| format!("upstream gradient to {}: {e}", y.device()))
}

/// A placeholder frame input for the probe run (its pooling output is not used).
fn zeros_frames(cfg: &RetrieverConfig) -> Tensor {
    Tensor::zeros(
        &[4, 2, cfg.pooling.in_dim],
        hr_tensor::DType::F32,
        Device::Cpu,
    )
    .expect("zeros")
}

/// Conditioning probe (`HR_CUDA_STEP_PERTURB=eps`, meant with the CPU self-test): scales every
/// trainable value of the second store by `1 + eps * N(0, 1)`, i.e. rounding-sized noise, to
/// show how far a step's gradients move when nothing but the last bits differ.
fn perturb_from_env(ps: &mut ParamStore) {
    let eps = std::env::var("HR_CUDA_STEP_PERTURB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    if let Some(eps) = eps {
        println!("perturbing every trainable value by a relative {eps:e}");
        perturb(ps, eps);
    }
}

/// Scales every trainable value by `1 + eps * N(0, 1)` (seeded).
fn perturb(ps: &mut ParamStore, eps: f64) {
    let mut rng = Rng::new(5);
    for (_, p) in ps.iter_mut().filter(|(_, p)| p.trainable) {
        let v: Vec<f32> = p.value.to_vec_f32().expect("values");
        let w: Vec<f32> = v
            .iter()
            .map(|&x| x * (1.0 + eps * rng.normal()) as f32)
            .collect();
        let t = Tensor::from_vec(w, p.value.shape()).expect("perturbed");
        p.value = t.to_device(p.value.device()).expect("perturbed to device");
    }
}

/// One case: build on the CPU, copy to the GPU, step both, compare everything.
fn run_case(cfg: RetrieverConfig, seconds: f64) {
    let Some(dev) = gpu() else { return };
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = cfg.name.clone();
    let tol = tolerance();
    let mut rng = Rng::new(42);
    let mut cpu = ParamStore::new();
    let vocab = cfg.text.vocab_size;
    let model = HybridRetriever::new(&mut cpu, cfg, &mut rng).expect("model");
    let wb = batch(seconds, vocab, &mut rng);
    let mut gpu_ps = cpu.clone();
    gpu_ps.to_device(dev).expect("parameters to the GPU");
    gpu_ps
        .check_device(dev)
        .expect("every parameter on the GPU");
    perturb_from_env(&mut gpu_ps);
    println!(
        "case {name}: {} trainable parameters, waveforms {:?}, device {dev} ({})",
        cpu.num_trainable(),
        wb.waveforms.shape(),
        match dev {
            Device::Cuda(n) => cuda::context(n).map(|d| d.name.clone()).unwrap_or_default(),
            Device::Cpu => "host".to_string(),
        }
    );

    let mut failures = check_components(model.config(), &wb, dev, tol);
    let mode = Mode::Train { seed: 1234 };
    let loss_cpu = step(&model, &mut cpu, &wb, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
    let loss_gpu = step(&model, &mut gpu_ps, &wb, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
    let loss_rel = (loss_gpu - loss_cpu).abs() / loss_cpu.abs().max(1e-12);
    println!("{name} loss: cpu {loss_cpu:.7}, gpu {loss_gpu:.7}, rel {loss_rel:.3e}");

    if loss_rel.is_nan() || loss_rel > tol {
        failures.push(format!("loss rel {loss_rel:.3e}"));
    }
    let spread = rounding_spread(&model, &cpu, &wb, mode);
    failures.extend(compare_store_spread(
        &format!("{name} grad"),
        &gpu_ps,
        &cpu,
        tol,
        &spread,
    ));
    failures.extend(compare_store(
        &format!("{name} value after forward"),
        &gpu_ps,
        &cpu,
        What::Values,
        tol,
    ));

    // Adam: GPU step vs a CPU step from the GPU's gradients (the kernel), then end to end.
    let mut cpu_shared = with_grads_of(&cpu, &gpu_ps).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (mut o_gpu, mut o_cpu, mut o_shared) = (adam(&gpu_ps), adam(&cpu), adam(&cpu_shared));
    o_gpu
        .step(&mut gpu_ps)
        .unwrap_or_else(|e| panic!("{name}: Adam step on {dev} failed: {e}"));
    o_cpu.step(&mut cpu).expect("Adam on the CPU");
    o_shared.step(&mut cpu_shared).expect("Adam on the CPU");
    failures.extend(compare_store(
        &format!("{name} value after Adam (same gradients)"),
        &gpu_ps,
        &cpu_shared,
        What::TrainableValues,
        1e-5,
    ));
    println!(
        "{name} Adam end to end (CPU gradients on the CPU): max update difference {:.3} lr \
         (sign flips of near-zero gradients give up to 2 lr)",
        max_update_diff(&gpu_ps, &cpu)
    );
    assert!(
        failures.is_empty(),
        "{name}: {} comparisons above tolerance:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tiny_late_step_matches_cpu() {
    run_case(config(FusionKind::Late, "mn01"), 2.0);
}

#[test]
fn tiny_mid_step_matches_cpu() {
    run_case(config(FusionKind::Mid, "mn01"), 2.0);
}

#[test]
fn tiny_none_step_matches_cpu() {
    run_case(config(FusionKind::None, "mn01"), 2.0);
}

#[test]
fn mn04_late_step_matches_cpu() {
    run_case(config(FusionKind::Late, "mn04"), 2.0);
}

#[test]
fn frames_on_another_device_are_an_error() {
    let Some(dev) = gpu() else { return };
    if dev == Device::Cpu {
        return; // the self-test has only one device
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = config(FusionKind::Late, "mn01");
    cfg.audio.backbone = None;
    let mut rng = Rng::new(5);
    let mut ps = ParamStore::new();
    let model = HybridRetriever::new(&mut ps, cfg.clone(), &mut rng).expect("model");
    ps.to_device(dev).expect("to the GPU");
    let wb = batch(1.0, cfg.text.vocab_size, &mut rng);
    let fb = hr_models::retriever::RetrievalBatch {
        frames: Tensor::randn(&[4, 3, cfg.pooling.in_dim], 1.0, &mut rng).expect("frames"),
        frame_valid: vec![1; 12],
        queries: wb.queries,
        metadata: wb.metadata,
        metadata_present: wb.metadata_present,
        clip_ids: wb.clip_ids,
    };
    let err = model
        .forward(&mut ps, &fb, Mode::Eval, &mut LocalRows)
        .expect_err("host frames with GPU parameters must fail");
    println!("expected error: {err}");
    assert!(err.to_string().contains("device mismatch"), "{err}");
}
