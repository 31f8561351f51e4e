//! NCCL backend: a world of one on GPU 0 (collectives of device tensors must return their
//! inputs, bucketed all-reduce must match [`LocalComm`] bit for bit, timing of a 25 MB
//! all-reduce), and the typed errors without a GPU or without NCCL.
//!
//! Without a CUDA device each GPU test prints exactly one line, "skipped: no CUDA device", and
//! returns. Every step prints what it ran, so a failure on a GPU machine names the call and
//! the NCCL error string.

use std::time::{Duration, Instant};

use hr_dist::{
    all_gather_rows, all_gather_rows_backward, all_reduce_tensors, any_rank, broadcast_tensors,
    init, nccl_available, nccl_version, Backend, Communicator, DistError, DistOptions, LocalComm,
    NcclComm, Token, WorldInfo, DEFAULT_BUCKET_BYTES,
};
use hr_tensor::ops::matmul;
use hr_tensor::{cuda, Device, Rng, Tensor};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The one-rank NCCL communicator on GPU 0, or `None` after printing the skip line (and
/// checking that the error is the typed one).
fn comm() -> Option<NcclComm> {
    if !cuda::driver_present() || Device::cuda(0).is_err() {
        println!("skipped: no CUDA device");
        let err = NcclComm::single(0, TIMEOUT).expect_err("NCCL without a GPU");
        assert!(
            matches!(
                err,
                DistError::BackendUnavailable {
                    backend: "nccl",
                    ..
                }
            ),
            "{err}"
        );
        return None;
    }
    match nccl_version() {
        Ok(v) => println!("NCCL version {v}"),
        Err(e) => panic!("NCCL library: {e}"),
    }
    match NcclComm::single(0, TIMEOUT) {
        Ok(c) => Some(c),
        Err(e) => panic!("NcclComm::single(0) failed: {e}"),
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed)).expect("randn")
}

fn gpu(t: &Tensor) -> Tensor {
    t.to_device(Device::Cuda(0)).expect("upload")
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().expect("download")
}

/// Asserts bit-identical values, shape and device.
fn same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.device(), want.device(), "{what}: device");
    let (g, w) = (host(got), host(want));
    let bad = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(bad.is_none(), "{what}: element {bad:?} differs");
    println!("ok: {what} {:?}", got.shape());
}

fn check<T>(what: &str, r: hr_dist::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Odd-sized gradients, an empty one, and one larger than the small buckets used below.
fn grads(seed: u64) -> Vec<Tensor> {
    let shapes: [&[usize]; 6] = [&[3, 5], &[0], &[1], &[1000], &[7, 13, 3], &[4099]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| gpu(&randn(s, seed + i as u64)))
        .collect()
}

#[test]
fn nccl_world_of_one_device_collectives() {
    let Some(mut c) = comm() else { return };
    assert_eq!((c.rank(), c.world(), c.ordinal()), (0, 1, 0));
    let gs = grads(1);
    let want = check(
        "LocalComm",
        all_reduce_tensors(&mut LocalComm, &gs, true, 1000),
    );
    for bucket in [1000, 4096 * 4, DEFAULT_BUCKET_BYTES] {
        for mean in [true, false] {
            let got = check(
                "all_reduce_tensors",
                all_reduce_tensors(&mut c, &gs, mean, bucket),
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                same(
                    &format!("all_reduce mean={mean} bucket={bucket} #{i}"),
                    g,
                    w,
                );
            }
        }
    }
    let got = check("broadcast_tensors", broadcast_tensors(&mut c, &gs, 0, 1000));
    for (i, (g, w)) in got.iter().zip(&gs).enumerate() {
        same(&format!("broadcast #{i}"), g, w);
    }
    let x = gpu(&randn(&[7, 5], 9));
    let (all, cache) = check("all_gather_rows", all_gather_rows(&mut c, &x));
    same("all_gather_rows", &all, &x);
    let dy = gpu(&randn(&[7, 5], 10));
    let dx = check(
        "all_gather_rows_backward",
        all_gather_rows_backward(&mut c, &cache, &dy),
    );
    same("all_gather_rows_backward", &dx, &dy);
    // The inputs are untouched (collectives copy on write).
    same("input kept", &gs[0], &grads(1)[0]);
}

/// `x` through `steps` GEMMs with `b` on the device (a long queue of compute-stream work).
fn gemm_chain(x: &Tensor, b: &Tensor, steps: usize) -> Tensor {
    (0..steps).fold(x.clone(), |y, _| matmul(&y, b).expect("matmul"))
}

/// The overlapped all-reduce: its side stream must wait for the kernels that made the
/// gradients (queued just before, still running), the caller's work runs beside it, and both
/// results equal the same computations without overlap. Small buckets so a bucket packs
/// pieces of several tensors (device copies on the side stream).
#[test]
fn nccl_all_reduce_alongside_orders_the_side_stream() {
    let Some(mut c) = comm() else { return };
    let n = 2048;
    let scale = 1.0 / (n as f32).sqrt();
    let mut rng = Rng::new(31);
    let b = gpu(&Tensor::randn(&[n, n], scale, &mut rng).expect("randn"));
    let x0 = gpu(&randn(&[n, n], 32));
    let small = grads(40);
    for bucket in [4 << 20, DEFAULT_BUCKET_BYTES] {
        let mut ts = small.clone();
        ts.insert(3, gemm_chain(&x0, &b, 24));
        let mut y = None;
        let start = Instant::now();
        check(
            "all_reduce_tensors_alongside",
            c.all_reduce_tensors_alongside(&mut ts, true, bucket, &mut || {
                y = Some(gemm_chain(&x0, &b, 24))
            }),
        );
        let took = start.elapsed();
        let y = y.expect("the work ran");
        let want = gemm_chain(&x0, &b, 24);
        same(&format!("reduced chain (bucket {bucket})"), &ts[3], &want);
        same(&format!("work beside it (bucket {bucket})"), &y, &want);
        for (i, (g, w)) in ts
            .iter()
            .filter(|t| t.numel() != n * n)
            .zip(&small)
            .enumerate()
        {
            same(&format!("reduced small #{i} (bucket {bucket})"), g, w);
        }
        println!("overlapped all_reduce + 24 GEMMs of {n}: {took:?}");
    }
    // A later plain collective still works (the communicator is healthy).
    let got = check(
        "all_reduce_tensors after",
        all_reduce_tensors(&mut c, &small, false, 1000),
    );
    same(
        "plain all_reduce after the overlapped one",
        &got[0],
        &small[0],
    );
}

#[test]
fn nccl_world_of_one_host_slices_and_cpu_tensors() {
    let Some(mut c) = comm() else { return };
    let v: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 3.0).collect();
    let mut b = v.clone();
    check("all_reduce_sum", c.all_reduce_sum(&mut b));
    assert_eq!(b, v, "all_reduce_sum");
    check("all_reduce_mean", c.all_reduce_mean(&mut b));
    assert_eq!(b, v, "all_reduce_mean");
    assert_eq!(check("all_gather", c.all_gather(&v)), v, "all_gather");
    assert_eq!(
        check("all_gather empty", c.all_gather(&[])),
        Vec::<f32>::new()
    );
    check("broadcast", c.broadcast(&mut b, 0));
    assert_eq!(b, v, "broadcast");
    assert!(matches!(c.broadcast(&mut b, 1), Err(DistError::Invalid(_))));
    check("barrier", c.barrier());
    assert!(check("any_rank", any_rank(&mut c, true)));
    assert!(!check("any_rank", any_rank(&mut c, false)));
    println!("ok: host-slice collectives");
    // CPU tensors through an NCCL communicator take the host path.
    let cpu: Vec<Tensor> = (0..3).map(|i| randn(&[17, 3], 20 + i)).collect();
    let got = check("cpu all_reduce", all_reduce_tensors(&mut c, &cpu, true, 64));
    for (i, (g, w)) in got.iter().zip(&cpu).enumerate() {
        same(&format!("cpu tensor all_reduce #{i}"), g, w);
    }
}

#[test]
fn nccl_world_of_one_through_init() {
    if !cuda::driver_present() || Device::cuda(0).is_err() {
        println!("skipped: no CUDA device");
        return;
    }
    let opts = DistOptions {
        backend: Backend::Nccl,
        device: Some(0),
        ..DistOptions::default()
    };
    let token = Token::new("unused-in-a-world-of-one").expect("token");
    let mut c = check("init", init(&WorldInfo::single(), &token, &opts));
    let x = gpu(&randn(&[64], 3));
    let got = check(
        "all_reduce_tensors",
        all_reduce_tensors(c.as_mut(), std::slice::from_ref(&x), false, 1 << 20),
    );
    same("init(Backend::Nccl) all_reduce", &got[0], &x);
}

#[test]
fn nccl_all_reduce_25mb_timing() {
    let Some(mut c) = comm() else { return };
    let n = DEFAULT_BUCKET_BYTES / 4;
    let t = vec![gpu(&randn(&[n], 5))];
    let time = |c: &mut NcclComm, iters: u32| {
        let start = Instant::now();
        for _ in 0..iters {
            check(
                "all_reduce 25 MB",
                all_reduce_tensors(c, &t, true, DEFAULT_BUCKET_BYTES),
            );
        }
        start.elapsed() / iters
    };
    time(&mut c, 3);
    let per = time(&mut c, 20);
    let gbs = (n * 4) as f64 / per.as_secs_f64() / 1e9;
    println!(
        "nccl all_reduce_tensors of 25 MB (world 1, device path): {per:?} per call, {gbs:.1} GB/s"
    );
    let mut h = host(&t[0]);
    let start = Instant::now();
    for _ in 0..5 {
        check("host all_reduce 25 MB", c.all_reduce_sum(&mut h));
    }
    println!(
        "nccl all_reduce_sum of 25 MB host slice (staged through the device): {:?} per call",
        start.elapsed() / 5
    );
}

#[test]
fn nccl_unavailable_is_a_typed_error_and_auto_falls_back() {
    if nccl_available(0).is_ok() {
        println!("skipped: NCCL is available here (the GPU tests cover it)");
        return;
    }
    let err = nccl_available(0).expect_err("unavailable");
    println!("nccl unavailable: {err}");
    assert!(matches!(
        err,
        DistError::BackendUnavailable {
            backend: "nccl",
            ..
        }
    ));
    let token = Token::new("t").expect("token");
    let nccl = DistOptions {
        backend: Backend::Nccl,
        device: Some(0),
        ..DistOptions::default()
    };
    let err = init(&WorldInfo::single(), &token, &nccl)
        .map(|_| ())
        .expect_err("nccl");
    assert!(matches!(err, DistError::BackendUnavailable { .. }), "{err}");
    let no_device = DistOptions {
        device: None,
        ..nccl.clone()
    };
    let err = init(&WorldInfo::single(), &token, &no_device)
        .map(|_| ())
        .expect_err("device");
    assert!(matches!(err, DistError::Invalid(_)), "{err}");
    let auto = DistOptions {
        backend: Backend::Auto,
        ..nccl
    };
    let c = init(&WorldInfo::single(), &token, &auto).expect("auto gives LocalComm");
    assert_eq!((c.rank(), c.world()), (0, 1));
}
