//! The row exchange: two "ranks" (threads) that each run half of a batch through
//! `HybridRetriever::forward` / `backward` and average their parameter
//! gradients get the loss and the gradients of one process that ran the whole batch, for every
//! fusion mode (with the split-dependent parts off: dropout, mel augmentation, CNN batch
//! statistics).

mod common;

use std::sync::{Arc, Barrier, Mutex};

use hr_models::exchange::RowExchange;
use hr_models::fusion::FusionKind;
use hr_models::presets::preset;
use hr_models::retriever::{HybridRetriever, RetrieverConfig, WaveformBatch};
use hr_models::text::TokenBatch;
use hr_models::Result;
use hr_nn::{Mode, ParamStore};
use hr_tensor::{Rng, Tensor};

/// Slots of an in-process all-gather between `n` threads.
struct Shared {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

/// One thread's end of the exchange.
struct ThreadRows {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadRows {
    /// Every rank's `data`, in rank order.
    fn all_gather(&self, data: Vec<f64>) -> Vec<Vec<f64>> {
        self.shared.slots.lock().unwrap()[self.rank] = data;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap().clone();
        self.shared.barrier.wait();
        all
    }
}

impl RowExchange for ThreadRows {
    fn gather_rows(&mut self, x: &Tensor) -> Result<(Tensor, usize)> {
        let cols = x.shape()[1];
        let all = self.all_gather(x.to_vec_f64()?);
        let offset = all[..self.rank].iter().map(|v| v.len() / cols).sum();
        let flat: Vec<f64> = all.concat();
        let rows = flat.len() / cols;
        let t = Tensor::from_vec(flat, &[rows, cols])?.to_dtype(x.dtype())?;
        Ok((t, offset))
    }

    fn gather_rows_bwd(&mut self, dy: &Tensor, offset: usize, rows: usize) -> Result<Tensor> {
        let cols = dy.shape()[1];
        let all = self.all_gather(dy.to_vec_f64()?);
        let sum: Vec<f64> = (0..all[0].len())
            .map(|i| all.iter().map(|v| v[i]).sum())
            .collect();
        let mine = sum[offset * cols..(offset + rows) * cols].to_vec();
        Ok(Tensor::from_vec(mine, &[rows, cols])?.to_dtype(dy.dtype())?)
    }

    fn gather_u64(&mut self, v: &[u64]) -> Result<Vec<u64>> {
        let all = self.all_gather(v.iter().map(|&x| x as f64).collect());
        Ok(all.concat().into_iter().map(|x| x as u64).collect())
    }
}

fn config(fusion: FusionKind) -> RetrieverConfig {
    let mut cfg = preset("tiny").unwrap();
    cfg.fusion = fusion;
    cfg.text.vocab_size = 40;
    cfg.pooling.dropout = 0.0;
    cfg.text.hidden_dropout_prob = 0.0;
    cfg.text.attention_probs_dropout_prob = 0.0;
    cfg.audio.augment = false;
    cfg.audio.frozen_batchnorm = true;
    cfg
}

/// Rows `lo..hi` of the batch (token batches re-padded to their own width).
fn rows(b: &WaveformBatch, lo: usize, hi: usize) -> WaveformBatch {
    let n = b.waveforms.shape()[1];
    let w = b.waveforms.to_vec_f32().unwrap()[lo * n..hi * n].to_vec();
    let sub = |t: &TokenBatch| {
        let seqs: Vec<Vec<u32>> = (lo..hi)
            .map(|r| {
                let (ids, mask) = (&t.ids[r * t.cols..], &t.mask[r * t.cols..]);
                (0..t.cols)
                    .filter(|&c| mask[c] != 0)
                    .map(|c| ids[c])
                    .collect()
            })
            .collect();
        TokenBatch::from_sequences(&seqs, 0)
    };
    WaveformBatch {
        waveforms: Tensor::from_vec(w, &[hi - lo, n]).unwrap(),
        valid_lengths: b.valid_lengths[lo..hi].to_vec(),
        queries: sub(&b.queries),
        metadata: sub(&b.metadata),
        metadata_present: b.metadata_present[lo..hi].to_vec(),
        clip_ids: b.clip_ids[lo..hi].to_vec(),
    }
}

/// Loss and every trainable gradient (by name) of one step.
type StepResult = (f64, Vec<(String, Vec<f64>)>);

/// One training step's loss and gradients.
fn step(cfg: &RetrieverConfig, b: &WaveformBatch, ex: &mut dyn RowExchange) -> StepResult {
    let mut ps = ParamStore::new();
    let model = HybridRetriever::new(&mut ps, cfg.clone(), &mut Rng::new(21)).unwrap();
    let mode = Mode::Train { seed: 7 };
    let (out, cache) = model.forward(&mut ps, b, mode, ex).unwrap();
    model.backward(&mut ps, &cache, 1.0, ex).unwrap();
    let grads = ps
        .iter()
        .filter(|(_, p)| p.trainable)
        .map(|(_, p)| (p.name.clone(), p.grad.to_vec_f64().unwrap()))
        .collect();
    (out.loss.scalar_f64().unwrap(), grads)
}

fn two_ranks(cfg: &RetrieverConfig, b: &WaveformBatch) -> Vec<StepResult> {
    let shared = Arc::new(Shared {
        slots: Mutex::new(vec![Vec::new(); 2]),
        barrier: Barrier::new(2),
    });
    let halves = [rows(b, 0, 2), rows(b, 2, 4)];
    std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .enumerate()
            .map(|(rank, half)| {
                let shared = shared.clone();
                s.spawn(move || step(cfg, half, &mut ThreadRows { rank, shared }))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_ranks_average_to_the_whole_batch() {
    for fusion in [FusionKind::None, FusionKind::Late, FusionKind::Mid] {
        let cfg = config(fusion);
        let b = common::waveform_batch();
        let (loss, grads) = step(&cfg, &b, &mut hr_models::exchange::LocalRows);
        let ranks = two_ranks(&cfg, &b);
        for (l, _) in &ranks {
            assert!(
                (l - loss).abs() <= 1e-5 * loss.abs(),
                "{fusion:?}: loss {l} vs {loss}"
            );
        }
        // Some gradients are zero up to rounding (a key bias: softmax ignores a constant added
        // to every score), so each parameter's scale is floored at 1e-3 of the largest
        // gradient's: errors below 1e-7 of that are rounding noise.
        let global = grads
            .iter()
            .flat_map(|(_, g)| g.iter())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (name, g)) in grads.iter().enumerate() {
            let scale = g.iter().fold(1e-3 * global, |m, x| m.max(x.abs()));
            let worst = g
                .iter()
                .enumerate()
                .map(|(j, x)| (x - (ranks[0].1[i].1[j] + ranks[1].1[i].1[j]) / 2.0).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= 1e-4 * scale,
                "{fusion:?}: {name}: max diff {worst:.3e}, max |g| {scale:.3e}"
            );
        }
    }
}
