//! Deterministic epoch order, global batches, rank partitioning and the resume cursor.
//!
//! The order of an epoch is a pure function of (seed, epoch, dataset shape) where the shape is the
//! caption count of every clip, fixed by the manifest: a uniform shuffle of every (clip, caption)
//! item of the split, as the authors' PyTorch `DataLoader(shuffle=True)` draws them. It does not
//! depend on the world size or the shard layout: rank `r` of `W` takes the `r`-th contiguous
//! slice of each global batch. Reading the rows a permutation asks for is the loader's business.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::Rng;

/// One training item: a (clip, caption) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Item {
    /// Clip index within the split.
    pub clip: u32,
    /// Caption index within the clip.
    pub caption: u16,
}

/// The resume state: epoch and items consumed globally (all ranks) in that epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch number.
    pub epoch: u64,
    /// Items consumed in this epoch over all ranks (a multiple of the global batch).
    pub consumed: u64,
}

/// The shape of a split that the order depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    /// Captions per clip, indexed by clip (manifest order, shard by shard).
    pub captions_per_clip: Vec<u16>,
}

impl Shape {
    /// Total number of items.
    pub fn num_items(&self) -> u64 {
        self.captions_per_clip.iter().map(|&c| c as u64).sum()
    }
}

/// Shuffling and batching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderConfig {
    /// Base seed.
    pub seed: u64,
    /// Global batch size (all ranks together).
    pub global_batch: usize,
}

/// Computes the item order of `epoch`: a uniform permutation of every (clip, caption) item.
pub fn epoch_order(shape: &Shape, cfg: &OrderConfig, epoch: u64) -> Vec<Item> {
    let mut rng = Rng::from_parts(&[cfg.seed, epoch, 0x0DE7]);
    let mut order = Vec::with_capacity(shape.num_items() as usize);
    for (clip, &n) in shape.captions_per_clip.iter().enumerate() {
        order.extend((0..n).map(|caption| Item {
            clip: clip as u32,
            caption,
        }));
    }
    rng.shuffle(&mut order);
    order
}

/// Number of full global batches per epoch (the last partial batch is dropped).
pub fn batches_per_epoch(shape: &Shape, global_batch: usize) -> u64 {
    shape.num_items() / global_batch.max(1) as u64
}

/// The items of global batch `b` of an epoch order.
pub fn global_batch(order: &[Item], b: u64, global_batch: usize) -> &[Item] {
    let start = (b as usize * global_batch).min(order.len());
    let end = (start + global_batch).min(order.len());
    &order[start..end]
}

/// Rank `rank`'s share of a global batch: the `rank`-th of `world` contiguous equal slices.
pub fn partition<T>(global: &[T], rank: usize, world: usize) -> Result<&[T]> {
    if world == 0 || rank >= world {
        return Err(DataError::Config(format!(
            "rank {rank} out of range for world size {world}"
        )));
    }
    if !global.len().is_multiple_of(world) {
        return Err(DataError::Config(format!(
            "global batch {} is not divisible by world size {world}; pick a world size dividing it",
            global.len()
        )));
    }
    let per = global.len() / world;
    Ok(&global[rank * per..(rank + 1) * per])
}

impl Cursor {
    /// The cursor after consuming global batch `b` of `epoch` (rolls over at epoch end).
    pub fn after(epoch: u64, b: u64, global_batch: usize, batches_per_epoch: u64) -> Cursor {
        if b + 1 >= batches_per_epoch {
            Cursor {
                epoch: epoch + 1,
                consumed: 0,
            }
        } else {
            Cursor {
                epoch,
                consumed: (b + 1) * global_batch as u64,
            }
        }
    }

    /// The first global batch index to produce when resuming from this cursor.
    pub fn next_batch(&self, global_batch: usize) -> Result<u64> {
        let g = global_batch.max(1) as u64;
        if !self.consumed.is_multiple_of(g) {
            return Err(DataError::Config(format!(
                "cursor consumed={} is not a multiple of the global batch {g}; resume with the global batch of the run that saved it",
                self.consumed
            )));
        }
        Ok(self.consumed / g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn shape(seed: u64) -> Shape {
        let mut rng = Rng::new(seed);
        let clips = 3 + rng.below(400);
        let captions_per_clip = (0..clips).map(|_| 1 + rng.below(5) as u16).collect();
        Shape { captions_per_clip }
    }

    fn cfg(seed: u64) -> OrderConfig {
        OrderConfig {
            seed,
            global_batch: 16,
        }
    }

    #[test]
    fn same_seed_epoch_same_order_and_different_epochs_differ() {
        for s in 0..20 {
            let sh = shape(s);
            let a = epoch_order(&sh, &cfg(s), 3);
            assert_eq!(a, epoch_order(&sh, &cfg(s), 3));
            assert_ne!(a, epoch_order(&sh, &cfg(s), 4));
        }
    }

    #[test]
    fn no_item_repeats_and_every_item_appears() {
        for s in 0..20 {
            let sh = shape(s);
            let order = epoch_order(&sh, &cfg(s), 0);
            let set: HashSet<Item> = order.iter().copied().collect();
            assert_eq!(set.len(), order.len());
            assert_eq!(order.len() as u64, sh.num_items());
        }
    }

    /// A global shuffle spreads a clip's five captions over the epoch: same-clip pairs in a
    /// batch of 32 drawn from 1000 clips x 5 captions are rare (expected 32*31/2 * 4/4999 = 0.4),
    /// where reading row groups in converter order would put most captions of a clip together.
    #[test]
    fn same_clip_pairs_per_batch_match_a_uniform_shuffle() {
        let sh = Shape {
            captions_per_clip: vec![5; 1000],
        };
        let c = OrderConfig {
            seed: 3,
            global_batch: 32,
        };
        let mut pairs = 0usize;
        let mut batches = 0usize;
        for epoch in 0..4 {
            let order = epoch_order(&sh, &c, epoch);
            for b in 0..batches_per_epoch(&sh, 32) {
                let g = global_batch(&order, b, 32);
                for i in 0..g.len() {
                    pairs += g[i + 1..].iter().filter(|x| x.clip == g[i].clip).count();
                }
                batches += 1;
            }
        }
        let mean = pairs as f64 / batches as f64;
        let expect = 32.0 * 31.0 / 2.0 * 4.0 / 4999.0;
        assert!((mean - expect).abs() < 0.1, "{mean} vs {expect}");
    }

    #[test]
    fn union_over_ranks_is_the_global_batch() {
        let sh = shape(5);
        let c = cfg(5);
        let order = epoch_order(&sh, &c, 1);
        for world in [1, 2, 4, 8, 16] {
            for b in 0..batches_per_epoch(&sh, c.global_batch) {
                let g = global_batch(&order, b, c.global_batch);
                let mut union = Vec::new();
                for r in 0..world {
                    union.extend_from_slice(partition(g, r, world).unwrap());
                }
                assert_eq!(union, g);
            }
        }
        assert!(partition(&[1, 2, 3], 0, 2).is_err());
        assert!(partition(&[1, 2], 2, 2).is_err());
    }

    #[test]
    fn cursor_roundtrip() {
        let c = Cursor::after(2, 4, 16, 10);
        assert_eq!(
            c,
            Cursor {
                epoch: 2,
                consumed: 80
            }
        );
        assert_eq!(c.next_batch(16).unwrap(), 5);
        assert_eq!(
            Cursor::after(2, 9, 16, 10),
            Cursor {
                epoch: 3,
                consumed: 0
            }
        );
        assert!(Cursor {
            epoch: 0,
            consumed: 7
        }
        .next_batch(16)
        .is_err());
    }
}
