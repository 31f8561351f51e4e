//! ParamStore safetensors round trip and key-mismatch reports; Adam groups and state resume.

use hr_core::testing::assert_mentions;
use hr_nn::layers::Linear;
use hr_nn::optim::{Adam, AdamConfig, ParamGroup};
use hr_nn::{Error, LoadOptions, ParamStore};
use hr_tensor::testing::randn32;
use hr_tensor::{DType, Rng, Tensor};

fn model(rng: &mut Rng, out: usize) -> ParamStore {
    let mut ps = ParamStore::new();
    Linear::new(&mut ps, "enc.fc", 4, 3, true, rng).unwrap();
    Linear::new(&mut ps, "head", 3, out, true, rng).unwrap();
    ps.add_buffer(
        "enc.running_mean",
        Tensor::full(&[3], 0.5, DType::F32).unwrap(),
    )
    .unwrap();
    ps
}

#[test]
fn save_load_round_trip_is_exact() {
    let dir = std::env::temp_dir().join(format!("hr-nn-params-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let a = model(&mut Rng::new(1), 2);
    a.save_safetensors(&path).unwrap();
    let mut b = model(&mut Rng::new(2), 2);
    b.load_safetensors(&path, &LoadOptions::default()).unwrap();
    for ((_, pa), (_, pb)) in a.iter().zip(b.iter()) {
        assert_eq!(pa.name, pb.name);
        assert_eq!(
            pa.value.to_vec_f32().unwrap(),
            pb.value.to_vec_f32().unwrap()
        );
    }
    assert_eq!(a.num_trainable(), 4 * 3 + 3 + 3 * 2 + 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mismatched_checkpoint_reports_every_key_at_once() {
    let dir = std::env::temp_dir().join(format!("hr-nn-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other.safetensors");
    let mut other = model(&mut Rng::new(1), 5);
    other
        .add("extra.weight", Tensor::full(&[2], 1.0, DType::F32).unwrap())
        .unwrap();
    other.save_safetensors(&path).unwrap();
    let mut ps = model(&mut Rng::new(1), 2);
    ps.add(
        "only_here.bias",
        Tensor::full(&[1], 0.0, DType::F32).unwrap(),
    )
    .unwrap();
    let before = ps.clone();
    let err = ps
        .load_safetensors(&path, &LoadOptions::default())
        .unwrap_err();
    let Error::KeyMismatch {
        missing,
        unexpected,
        mis_shaped,
        ..
    } = &err
    else {
        panic!("expected KeyMismatch, got {err}");
    };
    assert_eq!(missing, &vec!["only_here.bias".to_string()]);
    assert_eq!(unexpected, &vec!["extra.weight".to_string()]);
    let names: Vec<&str> = mis_shaped.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["head.bias", "head.weight"]);
    let msg = err.to_string();
    assert_mentions(&msg, &["other.safetensors", "head.weight", "[5, 3]"]);
    // Nothing was loaded on failure.
    for ((_, a), (_, b)) in before.iter().zip(ps.iter()) {
        assert_eq!(a.value.to_vec_f32().unwrap(), b.value.to_vec_f32().unwrap());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn corrupt_file_is_a_clear_error() {
    let path =
        std::env::temp_dir().join(format!("hr-nn-corrupt-{}.safetensors", std::process::id()));
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let mut ps = model(&mut Rng::new(1), 2);
    let err = ps
        .load_safetensors(&path, &LoadOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::File(hr_core::FileError::Format { .. }))
            && err.to_string().contains("hr-nn-corrupt"),
        "{err}"
    );
    std::fs::remove_file(&path).ok();
    let missing = ps.load_safetensors(
        std::path::Path::new("/nonexistent/x.safetensors"),
        &LoadOptions::default(),
    );
    assert!(matches!(
        missing,
        Err(Error::File(hr_core::FileError::Io { .. }))
    ));
}

fn fill_grads(ps: &mut ParamStore, rng: &mut Rng) {
    let ids: Vec<_> = ps
        .iter()
        .filter(|(_, p)| p.trainable)
        .map(|(id, _)| id)
        .collect();
    for id in ids {
        let g = randn32(ps.value(id).shape(), rng);
        ps.accumulate(id, &g).unwrap();
    }
}

fn groups(ps: &ParamStore) -> Vec<ParamGroup> {
    vec![
        ParamGroup::by_prefix(ps, "encoder", &["enc."], 1e-2, 0.0),
        ParamGroup::by_prefix(ps, "head", &["head."], 3e-2, 0.1),
    ]
}

/// `n` optimizer steps, each on fresh random gradients.
fn adam_steps(opt: &mut Adam, ps: &mut ParamStore, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        ps.zero_grad().unwrap();
        fill_grads(ps, rng);
        opt.step(ps).unwrap();
    }
}

/// The buffer `enc.running_mean` still holds its initial 0.5 everywhere.
fn assert_running_mean_untouched(ps: &ParamStore) {
    let v = ps
        .value(ps.id("enc.running_mean").unwrap())
        .to_vec_f32()
        .unwrap();
    assert!(v.iter().all(|&v| v == 0.5), "{v:?}");
}

#[test]
fn adam_groups_and_state_resume_exactly() {
    let dir = std::env::temp_dir().join(format!("hr-nn-adam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(5);
    let mut ps = model(&mut rng, 2);
    let mut opt = Adam::new(&ps, AdamConfig::default(), groups(&ps)).unwrap();
    assert_running_mean_untouched(&ps);
    let mut grad_rng = Rng::new(9);
    adam_steps(&mut opt, &mut ps, &mut grad_rng, 3);
    opt.save(&ps, &dir.join("opt.safetensors")).unwrap();
    let (ps_saved, rng_saved) = (ps.clone(), grad_rng.clone());
    adam_steps(&mut opt, &mut ps, &mut grad_rng, 2);
    // Resume from the saved state and replay the same two steps.
    let (mut ps2, mut rng2) = (ps_saved, rng_saved);
    let mut opt2 = Adam::new(&ps2, AdamConfig::default(), groups(&ps2)).unwrap();
    opt2.load(&ps2, &dir.join("opt.safetensors")).unwrap();
    assert_eq!(opt2.step_count(), 3);
    adam_steps(&mut opt2, &mut ps2, &mut rng2, 2);
    for ((_, a), (_, b)) in ps.iter().zip(ps2.iter()) {
        assert_eq!(
            a.value.to_vec_f32().unwrap(),
            b.value.to_vec_f32().unwrap(),
            "{}",
            a.name
        );
    }
    // Buffers are never touched by the optimiser.
    assert_running_mean_untouched(&ps);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn adam_rejects_orphans_and_overlaps() {
    let ps = model(&mut Rng::new(1), 2);
    let only_enc = vec![ParamGroup::by_prefix(&ps, "encoder", &["enc."], 1e-3, 0.0)];
    let err = Adam::new(&ps, AdamConfig::default(), only_enc).unwrap_err();
    assert!(err.to_string().contains("head.weight"), "{err}");
    let overlap = vec![
        ParamGroup::by_prefix(&ps, "all", &[""], 1e-3, 0.0),
        ParamGroup::by_prefix(&ps, "head", &["head."], 1e-3, 0.0),
    ];
    assert!(Adam::new(&ps, AdamConfig::default(), overlap).is_err());
}

#[test]
fn device_checks_name_the_first_misplaced_entry() {
    let mut rng = Rng::new(3);
    let mut ps = model(&mut rng, 2);
    assert_eq!(ps.device(), hr_tensor::Device::Cpu);
    ps.check_device(hr_tensor::Device::Cpu).unwrap();
    // Moving to the device a store is on is a no-op that keeps every value.
    let before = ps.clone();
    ps.to_device(hr_tensor::Device::Cpu).unwrap();
    for ((_, a), (_, b)) in ps.iter().zip(before.iter()) {
        assert_eq!(a.value.to_vec_f32().unwrap(), b.value.to_vec_f32().unwrap());
    }
    // A GPU model must not silently hold host tensors (no device is opened here).
    let err = ps.check_device(hr_tensor::Device::Cuda(0)).unwrap_err();
    assert!(err.to_string().contains("enc.fc.weight.value"), "{err}");
    assert!(ParamStore::new()
        .check_device(hr_tensor::Device::Cuda(0))
        .is_ok());
}

/// `accumulate` sums every gradient since `zero_grad` (the first one is taken as is), keeps the
/// caller's tensor untouched when a later one is added in place, adds onto gradients written
/// through `iter_mut`, and rejects a mis-shaped gradient.
#[test]
fn accumulate_sums_since_zero_grad() {
    let mut ps = ParamStore::new();
    let id = ps
        .add("w", Tensor::from_vec(vec![0f32; 3], &[3]).unwrap())
        .unwrap();
    let g1 = Tensor::from_vec(vec![1f32, 2.0, 3.0], &[3]).unwrap();
    let g2 = Tensor::from_vec(vec![0.5f32, 0.5, 0.5], &[3]).unwrap();
    ps.accumulate(id, &g1).unwrap();
    ps.accumulate(id, &g2).unwrap();
    assert_eq!(ps.grad(id).to_vec_f32().unwrap(), vec![1.5, 2.5, 3.5]);
    assert_eq!(
        g1.to_vec_f32().unwrap(),
        vec![1.0, 2.0, 3.0],
        "caller's tensor unchanged"
    );
    ps.zero_grad().unwrap();
    assert_eq!(ps.grad(id).to_vec_f32().unwrap(), vec![0.0; 3]);
    for (_, p) in ps.iter_mut() {
        p.grad = Tensor::from_vec(vec![10f32; 3], &[3]).unwrap();
    }
    ps.accumulate(id, &g2).unwrap();
    assert_eq!(ps.grad(id).to_vec_f32().unwrap(), vec![10.5; 3]);
    // A gradient written through `grad_mut` is accumulated onto (not replaced); another
    // entry's first gradient after `zero_grad` is still its value.
    let other = ps
        .add("v", Tensor::from_vec(vec![0f32; 3], &[3]).unwrap())
        .unwrap();
    ps.zero_grad().unwrap();
    *ps.grad_mut(id) = Tensor::from_vec(vec![10f32; 3], &[3]).unwrap();
    ps.accumulate(id, &g2).unwrap();
    ps.accumulate(other, &g1).unwrap();
    assert_eq!(ps.grad(id).to_vec_f32().unwrap(), vec![10.5; 3]);
    assert_eq!(ps.grad(other).to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0]);
    ps.zero_grad().unwrap();
    let bad = Tensor::from_vec(vec![1f32; 4], &[4]).unwrap();
    assert!(
        ps.accumulate(id, &bad).is_err(),
        "a mis-shaped first gradient is an error"
    );
}
