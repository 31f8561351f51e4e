//! The CUDA side of `Device` on machines without a driver, and host tensor basics.

use hr_tensor::{cuda, DType, Device, Error, Tensor};

#[test]
fn cuda_without_driver_is_a_typed_error_not_a_panic() {
    if cuda::driver_present() {
        // On a GPU machine the device opens and a round trip through it is exact.
        let dev = Device::cuda(0).expect("driver present: cuda:0 opens");
        let t = Tensor::from_vec(vec![1f32, -2.0, 3.5], &[3]).unwrap();
        let back = t.to_device(dev).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(back.to_vec_f32().unwrap(), vec![1.0, -2.0, 3.5]);
        println!("CUDA driver present: round trip through {dev} checked");
        return;
    }
    println!("skipped: no CUDA device (checked the typed error instead)");
    let err = Device::cuda(0).unwrap_err();
    assert!(
        matches!(err, Error::CudaUnavailable { ordinal: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("driver"), "{err}");
    let err = Device::parse("cuda:3").unwrap_err();
    assert!(
        matches!(err, Error::CudaUnavailable { ordinal: 3, .. }),
        "{err}"
    );
    let t = Tensor::from_vec(vec![1f32], &[1]).unwrap();
    assert!(t.to_device(Device::Cuda(0)).is_err());
}

#[test]
fn device_parsing() {
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert!(matches!(
        Device::parse("tpu").unwrap_err(),
        Error::InvalidArgument { .. }
    ));
}

#[test]
fn tensor_basics() {
    let t = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
    assert!(matches!(
        t.reshape(&[4, 2]).unwrap_err(),
        Error::ShapeMismatch { op: "reshape", .. }
    ));
    assert!(Tensor::from_vec(vec![1f32; 5], &[2, 3]).is_err());
    let bf = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(bf.dtype(), DType::BF16);
    assert_eq!(bf.to_vec_f32().unwrap(), t.to_vec_f32().unwrap());
    let mut c = t.clone();
    c.as_mut_slice::<f32>().unwrap()[0] = 9.0;
    assert_eq!(
        t.to_vec_f32().unwrap()[0],
        1.0,
        "copy on write keeps the original"
    );
    assert!(t.as_slice::<f64>().is_err());
    assert!(Tensor::full(&[usize::MAX, 4], 0.0, DType::F32).is_err());
}

/// The GPU's bad-input paths: a device ordinal that does not exist, an allocation larger than
/// the card, a kernel that does not compile (the error carries NVRTC's log) and a compute
/// capability NVRTC does not know. Each is a typed error, never a panic or a hang.
#[test]
fn gpu_bad_input_is_a_typed_error() {
    if !cuda::driver_present() || Device::cuda(0).is_err() {
        println!("skipped: no CUDA device");
        return;
    }
    let err = Device::cuda(64).unwrap_err();
    println!("cuda:64 -> {err}");
    assert!(
        matches!(err, Error::CudaUnavailable { ordinal: 64, .. }),
        "{err}"
    );

    // 2^40 f32 = 4 TiB: more than any card.
    let err = Tensor::zeros(&[1usize << 40], DType::F32, Device::Cuda(0)).unwrap_err();
    println!("4 TiB allocation -> {err}");
    let msg = err.to_string().to_lowercase();
    assert!(msg.contains("memory") || msg.contains("alloc"), "{err}");
    // The device is still usable afterwards.
    let t = Tensor::from_vec(vec![2f32; 4], &[4]).unwrap();
    let back = t.to_device(Device::Cuda(0)).unwrap().to_vec_f32().unwrap();
    assert_eq!(back, vec![2.0; 4]);

    let broken = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }";
    let err = cuda::compile_source(0, "broken.cu", broken, "sm_90").unwrap_err();
    println!("broken kernel -> {err}");
    let msg = err.to_string();
    assert!(
        msg.contains("broken.cu") && msg.contains("undefined_name"),
        "{err}"
    );

    let ok = "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }";
    assert!(!cuda::compile_source(0, "ok.cu", ok, "sm_90")
        .unwrap()
        .is_empty());
    let err = cuda::compile_source(0, "ok.cu", ok, "sm_999").unwrap_err();
    println!("sm_999 -> {err}");
    assert!(err.to_string().contains("sm_999"), "{err}");
}

/// Large uploads go through reused page-locked staging buffers: round trips stay exact when the
/// same size repeats (a buffer is refilled only after its previous copy finished) and across
/// more distinct sizes than are kept.
#[test]
fn large_uploads_through_pinned_staging_round_trip() {
    if !cuda::driver_present() || Device::cuda(0).is_err() {
        println!("skipped: no CUDA device");
        return;
    }
    let mut on_gpu = Vec::new();
    for (i, n) in [
        1usize << 20,
        (1 << 20) + 3,
        5 << 20,
        1 << 20,
        (1 << 20) + 7,
        3 << 20,
        2 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let v: Vec<f32> = (0..n).map(|k| (k % 1000) as f32 + i as f32 * 0.5).collect();
        let t = Tensor::from_vec(v.clone(), &[n]).unwrap();
        on_gpu.push((v, t.to_device(Device::Cuda(0)).unwrap()));
    }
    for (v, g) in &on_gpu {
        assert_eq!(&g.to_vec_f32().unwrap(), v);
    }
    println!("7 uploads of 1-5 Mi floats through pinned staging: exact");
}

/// `OpProfile` records every kernel, cuBLAS call and upload of a region on a GPU; without a
/// driver starting one is a typed error.
#[test]
fn op_profile_records_kernels_and_gemms() {
    if !cuda::driver_present() {
        println!("skipped: no CUDA device (checked the typed error instead)");
        assert!(matches!(
            cuda::OpProfile::start(0).unwrap_err(),
            Error::CudaUnavailable { ordinal: 0, .. }
        ));
        return;
    }
    let dev = Device::cuda(0).unwrap();
    let a = Tensor::from_vec(vec![0.5f32; 64 * 64], &[64, 64]).unwrap();
    let p = cuda::OpProfile::start(0).unwrap();
    assert!(cuda::OpProfile::start(0).is_err(), "one profile at a time");
    let a = a.to_device(dev).unwrap();
    let c = hr_tensor::ops::matmul(&a, &a).unwrap();
    let _ = hr_tensor::ops::relu(&c).unwrap();
    let _ = hr_tensor::ops::relu(&c).unwrap();
    let report = p.finish().unwrap();
    println!("{}", report.table(10));
    let calls = |name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.name == name)
            .map_or(0, |r| r.calls)
    };
    assert_eq!(calls("upload"), 1);
    assert_eq!(calls("cublas sgemm"), 1);
    assert_eq!(report.calls(), 4, "{:?}", report.rows);
    assert!(report.busy_ms() > 0.0 && report.busy_ms() <= report.gpu_span_ms * 1.01);
    // Recording has stopped: a new profile can start and sees nothing of the old one.
    let empty = cuda::OpProfile::start(0).unwrap().finish().unwrap();
    assert_eq!(empty.calls(), 0);
}
