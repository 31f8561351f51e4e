//! The metric code against the reference fixture (`fixtures/reference/metrics.safetensors`).

use hr_train::metrics::{from_ranks, ranks};

#[test]
fn ranks_and_metrics_match_the_reference() {
    let path = hr_tensor::testing::reference_fixture("metrics.safetensors");
    let f = hr_nn::io::read_safetensors(&path).unwrap();
    let sim = f.get(&path, "similarity").unwrap();
    let (nq, nc) = (sim.shape()[0], sim.shape()[1]);
    let sim = sim.to_vec_f32().unwrap();
    let target: Vec<usize> = f
        .get(&path, "target")
        .unwrap()
        .to_vec_f64()
        .unwrap()
        .iter()
        .map(|&t| t as usize)
        .collect();
    let want: Vec<usize> = f
        .get(&path, "rank")
        .unwrap()
        .to_vec_f64()
        .unwrap()
        .iter()
        .map(|&r| r as usize)
        .collect();
    assert_eq!(target.len(), nq);
    let got = ranks(&sim, nc, &target);
    assert_eq!(got, want);
    let m = from_ranks(&got);
    let refm: serde_json::Value = serde_json::from_str(&f.metadata["metrics"]).unwrap();
    for (k, v) in [
        ("R@1", m.r1),
        ("R@5", m.r5),
        ("R@10", m.r10),
        ("mAP@10", m.map10),
    ] {
        let r = refm[k].as_f64().unwrap();
        assert!((r - v).abs() < 1e-6, "{k}: {v} vs {r}");
    }
}
