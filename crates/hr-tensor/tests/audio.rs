//! Audio front end: `frame_signal` (pre-emphasis, padding, framing and windowing of
//! waveforms) on the device against the CPU backend, as a device parity case registered with
//! `test_device!` (`<case>_cpu`, `<case>_cuda`; [`hr_tensor::testing::parity`]).

use hr_tensor::testing::parity::{on, randn, uniform, Report};
use hr_tensor::{ops, test_device, Device, Error};

fn frame_signal_audio(dev: Device) {
    let mut report = Report::new(dev);
    // (batch, samples, n_fft, hop): odd lengths, the minimum length for the padding, odd n_fft,
    // hop > n_fft, and the paper geometry (32 kHz, 1024 / 320) at 2 x 10 s.
    let cases: [(usize, usize, usize, usize); 6] = [
        (1, 7, 4, 1),
        (3, 1001, 64, 17),
        (2, 514, 1024, 320),
        (2, 99, 9, 4),
        (1, 200, 16, 40),
        (2, 320_000, 1024, 320),
    ];
    for (i, &(b, n, n_fft, hop)) in cases.iter().enumerate() {
        let x = randn(&[b, n], 1200 + i as u64);
        let w = uniform(&[n_fft], 0.0, 1.0, 1300 + i as u64);
        let cpu = ops::frame_signal(&x, &w, hop, 0.97).unwrap();
        let name = format!("frame_signal b {b} n {n} n_fft {n_fft} hop {hop}");
        // Same f32 operations in the same order (no contraction): expected to be exact.
        report.check(
            &name,
            ops::frame_signal(&on(&x, dev), &on(&w, dev), hop, 0.97),
            &cpu,
        );
    }
    let short = on(&randn(&[2, 5], 1400), dev);
    let w = on(&uniform(&[8], 0.0, 1.0, 1401), dev);
    let err = ops::frame_signal(&short, &w, 2, 0.97).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok frame_signal on a too-short waveform: {err}");
    report.finish("frame_signal_audio");
}

test_device!(frame_signal_audio);
