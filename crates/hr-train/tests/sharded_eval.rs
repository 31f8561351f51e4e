//! Sharded evaluation: with 2 and 3 ranks (CPU ring in threads) every rank embeds its share of
//! the clips and queries, every rank ends with the same score matrix and metrics, and those are
//! the single-process ones; the ranks first take rank 0's batch-norm statistics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hr_dist::testing::free_port;
use hr_dist::{init_ring, DistOptions, Token, WorldInfo, WorldSource};
use hr_train::dist::Dist;
use hr_train::eval_job::{evaluate_checkpoint, evaluate_checkpoint_sharded, load};
use hr_train::evaluate::EvalResult;

fn trained(dir: &std::path::Path, fusion: &str, metadata: &str) -> std::path::PathBuf {
    let extra = [
        format!("model.fusion={fusion:?}"),
        format!("model.metadata={metadata:?}"),
    ];
    common::trained_briefly(dir, &format!("{fusion}-{metadata}"), &extra)
}

/// Evaluates `run` on `world` ranks in threads; rank r > 0 starts from batch-norm statistics
/// scaled by 1 + r (as if it had seen other batches).
fn sharded(run: &std::path::Path, world: usize) -> Vec<EvalResult> {
    let port = free_port();
    let token = Token::new("sharded-eval-test").unwrap();
    let run = Arc::new(run.to_path_buf());
    let ranks: Vec<_> = (0..world)
        .map(|rank| {
            let (run, token) = (run.clone(), token.clone());
            std::thread::spawn(move || {
                let info = WorldInfo {
                    rank,
                    world_size: world,
                    local_rank: rank,
                    master_addr: "127.0.0.1".into(),
                    master_port: port,
                    source: WorldSource::Torchrun,
                };
                let opts = DistOptions {
                    timeout: Duration::from_secs(60),
                    rendezvous_timeout: Duration::from_secs(20),
                    ..DistOptions::default()
                };
                let comm = init_ring(&info, &token, &opts).unwrap();
                let mut dist = Dist::new(info, Box::new(comm));
                let mut ck = load(&run).unwrap();
                let buffers: Vec<_> = ck
                    .params
                    .iter()
                    .filter(|(_, p)| !p.trainable)
                    .map(|(id, _)| id)
                    .collect();
                assert!(!buffers.is_empty(), "the CNN has batch-norm statistics");
                for &id in &buffers {
                    let v = ck.params.value(id).to_vec_f32().unwrap();
                    let scaled: Vec<f32> = v.iter().map(|x| x * (1 + rank) as f32).collect();
                    let shape = ck.params.value(id).shape().to_vec();
                    *ck.params.value_mut(id) = hr_tensor::Tensor::from_vec(scaled, &shape).unwrap();
                }
                dist.broadcast_buffers(&mut ck.params).unwrap();
                evaluate_checkpoint_sharded(&mut ck, None, "test", 5, dist.comm())
                    .unwrap()
                    .0
            })
        })
        .collect();
    ranks.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn every_rank_reports_the_single_process_metrics() {
    let dir = tempfile::tempdir().unwrap();
    for (fusion, metadata) in [
        ("late", "keywords"),
        ("mid", "keywords"),
        ("late", "full_sentence"),
    ] {
        let run = trained(dir.path(), fusion, metadata);
        let mut ck = load(&run).unwrap();
        let (one, _) = evaluate_checkpoint(&mut ck, None, "test", 5).unwrap();
        for world in [2, 3] {
            let results = sharded(&run, world);
            for (rank, r) in results.iter().enumerate() {
                let what = format!("{fusion}/{metadata}, rank {rank} of {world}");
                // Every rank ranks the same gathered matrix: bit-identical numbers.
                assert_eq!(r.sim, results[0].sim, "{what}");
                assert_eq!(r.ranks, results[0].ranks, "{what}");
                assert_eq!(r.metrics, results[0].metrics, "{what}");
                assert_eq!(r.queries, one.queries, "{what}");
                let worst = r
                    .sim
                    .iter()
                    .zip(&one.sim)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-4, "{what}: scores differ by {worst}");
                assert!(
                    (r.metrics.map10 - one.metrics.map10).abs() < 1e-3,
                    "{what}: mAP@10 {} vs {}",
                    r.metrics.map10,
                    one.metrics.map10
                );
            }
        }
    }
}
