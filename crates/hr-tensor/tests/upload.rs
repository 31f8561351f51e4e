//! `Tensor::upload_ahead`: the copy-stream upload gives the same tensor as `to_device`, also
//! while kernels run on the compute stream and when uploads of one size follow each other
//! (the staging buffer is reused only after its previous copy finished).

use hr_tensor::{ops, testing, Device, Tensor};

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + k).sin()).collect()
}

#[test]
fn upload_ahead_on_the_cpu_is_the_tensor() {
    let t = Tensor::from_vec(ramp(10, 0.0), &[2, 5]).unwrap();
    let u = t.upload_ahead(Device::Cpu).unwrap().ready().unwrap();
    assert_eq!(u.to_vec_f32().unwrap(), t.to_vec_f32().unwrap());
    assert_eq!(u.shape(), &[2, 5]);
}

#[test]
fn upload_ahead_equals_to_device_beside_running_kernels() {
    let Some(dev) = testing::cuda_or_skip() else {
        return;
    };
    // Queue a long GEMM chain on the compute stream, then upload batches behind it.
    let a = Tensor::from_vec(ramp(512 * 512, 1.0), &[512, 512])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let mut x = a.clone();
    let mut pending = Vec::new();
    for k in 0..6 {
        x = ops::matmul(&x, &a).unwrap();
        let host = Tensor::from_vec(ramp(1 << 21, k as f32), &[8, 1 << 18]).unwrap();
        pending.push((host.clone(), host.upload_ahead(dev).unwrap()));
    }
    for (host, up) in pending {
        let t = up.ready().unwrap();
        // A kernel reading the upload on the compute stream sees the copied data.
        let doubled = ops::scale(&t, 2.0).unwrap().to_vec_f32().unwrap();
        let want: Vec<f32> = host.to_vec_f32().unwrap().iter().map(|v| v * 2.0).collect();
        assert_eq!(doubled, want);
    }
    assert!(x.to_vec_f32().is_ok());
}
