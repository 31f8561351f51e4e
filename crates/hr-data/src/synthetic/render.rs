//! The audio of a synthetic scene: each event synthesised from signal primitives (tones,
//! chirps, noise bursts, strikes) under an envelope, mixed at its onset, peak-normalised.

use std::f32::consts::PI;

use super::*;

fn envelope(i: usize, n: usize, sr: f32) -> f32 {
    let ramp = (0.01 * sr) as usize;
    let a = if i < ramp {
        i as f32 / ramp as f32
    } else {
        1.0
    };
    let r = if n - i < ramp {
        (n - i) as f32 / ramp as f32
    } else {
        1.0
    };
    a.min(r)
}

fn rate_hz(e: &Event, slow: f32, fast: f32) -> f32 {
    match e.rate {
        Some(Rate::Fast) => fast,
        _ => slow,
    }
}

/// Repeated strikes: `count` onsets spread over the event, each shaped by `strike(t)`.
fn strikes(n: usize, sr: f32, count: u32, strike: &dyn Fn(f32) -> f32) -> Vec<f32> {
    let period = n / count.max(1) as usize;
    (0..n)
        .map(|i| {
            let k = i / period.max(1);
            if k as u32 >= count {
                return 0.0;
            }
            strike((i - k * period) as f32 / sr)
        })
        .collect()
}

fn lowpass(x: &mut [f32], alpha: f32) {
    let mut y = 0.0;
    for v in x.iter_mut() {
        y += alpha * (*v - y);
        *v = y;
    }
}

fn normalize_peak(x: &mut [f32]) {
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak > 0.0 {
        x.iter_mut().for_each(|v| *v /= peak);
    }
}

/// Synthesises one event's waveform (peak-normalised, before gain).
fn synth_event(e: &Event, n: usize, sr: f32, rng: &mut Rng) -> Vec<f32> {
    let f = e.freq;
    let tt = |i: usize| i as f32 / sr;
    let dur = n as f32 / sr;
    let mut x: Vec<f32> = match CLASSES[e.class].name {
        "tone" => (0..n).map(|i| (2.0 * PI * f * tt(i)).sin()).collect(),
        "hum" => (0..n)
            .map(|i| {
                (1..=5)
                    .map(|h| (2.0 * PI * f * h as f32 * tt(i)).sin() / h as f32)
                    .sum()
            })
            .collect(),
        "rising chirp" | "falling chirp" => {
            let up = CLASSES[e.class].name == "rising chirp";
            let (f0, f1) = if up { (f, 2.5 * f) } else { (2.5 * f, f) };
            (0..n)
                .map(|i| {
                    let t = tt(i);
                    (2.0 * PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur))).sin()
                })
                .collect()
        }
        "siren" => {
            let r = rate_hz(e, 0.5, 3.0);
            let fc = 750.0;
            (0..n)
                .map(|i| {
                    let t = tt(i);
                    let phase = fc * t - fc * 0.3 * (2.0 * PI * r * t).cos() / (2.0 * PI * r);
                    (2.0 * PI * phase).sin()
                })
                .collect()
        }
        "noise burst" => {
            let env = strikes(n, sr, e.count.unwrap_or(1), &|t| {
                if t < 0.15 {
                    1.0 - t / 0.15
                } else {
                    0.0
                }
            });
            env.iter().map(|a| a * rng.normal_f32()).collect()
        }
        "clicking" => {
            let period = (sr / rate_hz(e, 3.0, 12.0)) as usize;
            (0..n)
                .map(|i| {
                    let k = i % period.max(1);
                    if k < (0.003 * sr) as usize {
                        (-(k as f32) / (0.0008 * sr)).exp()
                            * if k.is_multiple_of(2) { 1.0 } else { -1.0 }
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        "bell" => strikes(n, sr, e.count.unwrap_or(1), &|t| {
            let partials = [(1.0, 1.0), (2.76, 0.5), (5.4, 0.25)];
            partials
                .iter()
                .map(|(m, a)| a * (2.0 * PI * f * m * t).sin())
                .sum::<f32>()
                * (-3.0 * t).exp()
        }),
        "drum" => strikes(n, sr, e.count.unwrap_or(1), &|t| {
            let fi = f * (1.0 + (-t / 0.03).exp());
            (2.0 * PI * fi * t).sin() * (-9.0 * t).exp()
        }),
        "whistle" => (0..n)
            .map(|i| {
                let t = tt(i);
                (2.0 * PI * f * 2.0 * (t + 0.02 / (2.0 * PI * 5.0) * (2.0 * PI * 5.0 * t).sin()))
                    .sin()
            })
            .collect(),
        "beeping" => strikes(n, sr, e.count.unwrap_or(1), &|t| {
            if t < 0.12 {
                (2.0 * PI * f * t).sin()
            } else {
                0.0
            }
        }),
        "buzzer" => (0..n)
            .map(|i| (2.0 * PI * f * tt(i)).sin().signum() * 0.6)
            .collect(),
        "rumble" => {
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal_f32()).collect();
            lowpass(&mut v, 0.01);
            lowpass(&mut v, 0.02);
            v
        }
        "hiss" => {
            let raw: Vec<f32> = (0..n).map(|_| rng.normal_f32()).collect();
            let mut lp = raw.clone();
            lowpass(&mut lp, 0.3);
            raw.iter().zip(&lp).map(|(a, b)| a - b).collect()
        }
        "wind" => {
            let r = rate_hz(e, 0.3, 2.0);
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal_f32()).collect();
            lowpass(&mut v, 0.08);
            v.iter()
                .enumerate()
                .map(|(i, s)| s * (0.55 + 0.45 * (2.0 * PI * r * tt(i)).sin()))
                .collect()
        }
        _ => {
            // warble: narrow FM at a slow or fast rate
            let r = rate_hz(e, 4.0, 15.0);
            (0..n)
                .map(|i| {
                    let t = tt(i);
                    (2.0 * PI * (f * t - f * 0.08 * (2.0 * PI * r * t).cos() / (2.0 * PI * r)))
                        .sin()
                })
                .collect()
        }
    };
    normalize_peak(&mut x);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= envelope(i, n, sr);
    }
    x
}

/// Renders a scene at [`TARGET_SR`].
pub fn render(scene: &Scene, seed: u64, index: u64) -> Vec<f32> {
    let sr = TARGET_SR as f32;
    let len = (scene.duration * sr) as usize;
    let mut rng = Rng::from_parts(&[seed, index, 0xA0D10]);
    let mut out: Vec<f32> = (0..len).map(|_| 0.003 * rng.normal_f32()).collect();
    for e in &scene.events {
        let start = ((e.start * sr) as usize).min(len);
        let n = ((e.dur * sr) as usize).min(len - start);
        if n < 32 {
            continue;
        }
        let gain = if e.loud { 0.6 } else { 0.12 };
        let x = synth_event(e, n, sr, &mut rng);
        for (o, v) in out[start..start + n].iter_mut().zip(&x) {
            *o += gain * v;
        }
    }
    let peak = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak > 0.99 {
        out.iter_mut().for_each(|v| *v *= 0.99 / peak);
    }
    out
}
