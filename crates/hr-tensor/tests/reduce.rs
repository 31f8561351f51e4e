//! sum_to and broadcast_to (the reduce family) on the device against the CPU backend, f32 and
//! bf16 storage: device parity cases registered with `test_device!` (`<case>_cpu`,
//! `<case>_cuda`; [`hr_tensor::testing::parity`]). Their CPU reference tests (sums and
//! broadcasts against straightforward loops, adjointness) are in `tests/elementwise.rs`
//! (`reductions_and_broadcast_are_adjoint`) and `tests/bf16.rs` (`sum_to_rounds_once`).

use hr_tensor::testing::parity::{
    bf16_host, bf16_special, check, check_bf16, check_bf16_exact, on, randn, CheckFn, MakeFn,
};
use hr_tensor::{ops, test_device, Device};

/// sum_to and broadcast_to parity cases shared by f32 and bf16: `sum_in` makes the inputs of
/// `sum_to` (checked with `sum_check`), `bcast_in` those of `broadcast_to` (`bcast_check`).
fn reduce_cases(
    dev: Device,
    (sum_in, sum_check): (MakeFn, CheckFn),
    (bcast_in, bcast_check): (MakeFn, CheckFn),
) {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[4, 5, 6], &[1, 5, 1]),
        (&[4, 5, 6], &[4, 1, 6]),
        (&[4, 5, 6], &[1, 1, 1]),
        (&[7, 3], &[7, 1]),
        (&[311, 768], &[1, 768]),
        (&[3, 1, 9], &[3, 1, 9]),
        (&[2, 3, 4, 5, 6], &[2, 1, 4, 1, 6]),
    ];
    for (i, (big, small)) in cases.iter().enumerate() {
        let x = sum_in(big, 100 + i as u64);
        sum_check(
            dev,
            &format!("sum_to {small:?}"),
            &ops::sum_to(&on(&x, dev), small).unwrap(),
            &ops::sum_to(&x, small).unwrap(),
        );
        let s = bcast_in(small, 200 + i as u64);
        bcast_check(
            dev,
            &format!("broadcast_to {big:?}"),
            &ops::broadcast_to(&on(&s, dev), big).unwrap(),
            &ops::broadcast_to(&s, big).unwrap(),
        );
    }
}

fn sum_to_and_broadcast_to(dev: Device) {
    reduce_cases(dev, (&randn, &check), (&randn, &check));
}

test_device!(sum_to_and_broadcast_to);

/// bf16 storage: sum_to within [`BF16_TOL`](hr_tensor::testing::parity::BF16_TOL) of the
/// CPU's bf16 result, broadcast_to bit-exact (signed zeros, infinities and NaN included).
fn bf16_sum_to_and_broadcast_to(dev: Device) {
    let sum_in = |shape: &[usize], seed: u64| bf16_host(shape, 1.0, 0.25, seed);
    reduce_cases(
        dev,
        (&sum_in, &check_bf16),
        (&bf16_special, &check_bf16_exact),
    );
}

test_device!(bf16_sum_to_and_broadcast_to);
