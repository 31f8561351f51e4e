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
