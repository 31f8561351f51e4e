//! The fused contrastive loss on the device against the CPU backend (loss, row / column
//! log-sum-exps, backward from either side's statistics, determinism, typed errors), as device
//! parity cases registered with `test_device!` (`<case>_cpu`, `<case>_cuda`;
//! [`hr_tensor::testing::parity`]). The CPU op itself is tested against the composed unfused ops
//! in `tests/fused.rs`.

use hr_tensor::testing::parity::{on, randn, uniform, Report};
use hr_tensor::{ops, test_device, Device, Error};

/// Groups of `per` items (captions of one clip) spread over the batch by a fixed permutation.
fn caption_groups(n: usize, per: usize) -> Vec<u32> {
    (0..n).map(|i| (((i * 37 + 11) % n) / per) as u32).collect()
}

fn contrastive_loss_fused(dev: Device) {
    let mut report = Report::new(dev);
    // (n, captions per clip, score magnitude): one item, all-distinct groups, 5 captions per
    // clip (the real data), more rows than the forward kernel's 128 threads, pairs, one group,
    // and +-50 scores (tau = 0.05) for the max trick.
    let cases: [(usize, usize, f32); 8] = [
        (1, 1, 1.0),
        (7, 1, 3.0),
        (33, 5, 2.0),
        (130, 5, 1.0),
        (130, 5, 50.0),
        (257, 2, 50.0),
        (33, 33, 50.0),
        (512, 5, 20.0),
    ];
    for (i, &(n, per, mag)) in cases.iter().enumerate() {
        let groups = caption_groups(n, per);
        let s = uniform(&[n, n], -mag, mag, 1500 + i as u64);
        let sg = on(&s, dev);
        let name = |what: &str| format!("contrastive {what} n {n} per {per} mag {mag}");
        let (loss, stats) = ops::contrastive_loss(&s, &groups).unwrap();
        match ops::contrastive_loss(&sg, &groups) {
            Ok((lg, stg)) => {
                report.check(&name("loss"), Ok(lg.clone()), &loss);
                report.check(&name("row_lse"), Ok(stg.row_lse.clone()), &stats.row_lse);
                report.check(&name("col_lse"), Ok(stg.col_lse.clone()), &stats.col_lse);
                // The loss is summed in a fixed order (no atomics): bit-identical on a rerun.
                let again = ops::contrastive_loss(&sg, &groups).unwrap().0;
                assert_eq!(
                    lg.to_vec_f64().unwrap(),
                    again.to_vec_f64().unwrap(),
                    "{}: not deterministic",
                    name("loss")
                );
                // Backward from the GPU's own statistics (f32 log-sum-exps: at |S| = 50 their
                // rounding moves exp(S - lse) by about 4e-6 relative, inside TOL).
                let dg = ops::contrastive_loss_bwd(&sg, &groups, &stg, 1.7);
                let dc = ops::contrastive_loss_bwd(&s, &groups, &stats, 1.7).unwrap();
                report.check(&name("bwd (gpu stats)"), dg, &dc);
            }
            Err(e) => report.check(&name("forward"), Err(e), &loss),
        }
        // Backward alone, from the CPU's statistics.
        let cpu_stats = hr_tensor::ContrastiveStats {
            row_lse: on(&stats.row_lse, dev),
            col_lse: on(&stats.col_lse, dev),
        };
        report.check(
            &name("bwd (cpu stats)"),
            ops::contrastive_loss_bwd(&sg, &groups, &cpu_stats, -0.3),
            &ops::contrastive_loss_bwd(&s, &groups, &stats, -0.3).unwrap(),
        );
    }
    // An empty batch and a non-square score matrix are typed errors.
    let err = ops::contrastive_loss(&on(&randn(&[2, 2], 1600), dev), &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = ops::contrastive_loss(&on(&randn(&[3, 4], 1601), dev), &[0, 1, 2]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    println!("ok contrastive_loss on an empty batch and a non-square matrix: typed errors");
    report.finish("contrastive_loss_fused");
}

test_device!(contrastive_loss_fused);
