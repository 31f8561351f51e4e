//! The metric code against the reference fixture (`fixtures/reference/metrics.safetensors`).

use hr_nn::testing::Reference;
use hr_train::metrics::{from_ranks, ranks};

#[test]
fn ranks_and_metrics_match_the_reference() {
    let fx = Reference::open("metrics.safetensors");
    let sim = fx.get("similarity");
    let (nq, nc) = (sim.shape()[0], sim.shape()[1]);
    let sim = sim.to_vec_f32().unwrap();
    let target: Vec<usize> = fx.integers("target");
    let want: Vec<usize> = fx.integers("rank");
    assert_eq!(target.len(), nq);
    let got = ranks(&sim, nc, &target);
    assert_eq!(got, want);
    let m = from_ranks(&got);
    let refm: serde_json::Value = serde_json::from_str(&fx.file.metadata["metrics"]).unwrap();
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
