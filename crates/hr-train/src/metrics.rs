//! Text -> audio retrieval metrics (docs/spec-retrieval.md section 4).
//!
//! The rank of a query's target clip is 1-based. Ties are broken deterministically by clip index
//! (a stable sort of the clips by descending similarity): a clip with the same similarity as the
//! target ranks ahead of it only when its index is lower.

use serde::{Deserialize, Serialize};

/// R@1/5/10 and mAP@10 over a set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Share of queries whose target ranks first.
    #[serde(rename = "R@1")]
    pub r1: f64,
    /// Share of queries whose target ranks in the top 5.
    #[serde(rename = "R@5")]
    pub r5: f64,
    /// Share of queries whose target ranks in the top 10.
    #[serde(rename = "R@10")]
    pub r10: f64,
    /// Mean over queries of `1/rank` when `rank <= 10`, else 0.
    #[serde(rename = "mAP@10")]
    pub map10: f64,
    /// Number of queries (0 when a reader finds none recorded).
    #[serde(default)]
    pub queries: usize,
}

/// Rank (1-based) of `target` in one row of similarities, ties broken by clip index.
pub fn target_rank(row: &[f32], target: usize) -> usize {
    let t = row[target];
    let ahead = row
        .iter()
        .enumerate()
        .filter(|&(j, &s)| s > t || (s == t && j < target))
        .count();
    ahead + 1
}

/// Ranks of every query's target; `sim` is `[queries, clips]` row-major.
pub fn ranks(sim: &[f32], clips: usize, targets: &[usize]) -> Vec<usize> {
    targets
        .iter()
        .enumerate()
        .map(|(q, &t)| target_rank(&sim[q * clips..(q + 1) * clips], t))
        .collect()
}

/// Metrics from target ranks.
pub fn from_ranks(ranks: &[usize]) -> RetrievalMetrics {
    let n = ranks.len().max(1) as f64;
    let share = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let map10 = ranks
        .iter()
        .map(|&r| if r <= 10 { 1.0 / r as f64 } else { 0.0 })
        .sum::<f64>()
        / n;
    RetrievalMetrics {
        r1: share(1),
        r5: share(5),
        r10: share(10),
        map10,
        queries: ranks.len(),
    }
}

/// The `k` best clips of one row, by descending similarity with ties by ascending index
/// (a partial selection, then a sort of the `k`: linear in the row for search over millions).
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let better = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx.into_iter().map(|i| (i, row[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_clip_index() {
        let row = [0.5, 0.9, 0.5, 0.5];
        assert_eq!(target_rank(&row, 1), 1);
        assert_eq!(target_rank(&row, 0), 2);
        assert_eq!(target_rank(&row, 2), 3);
        assert_eq!(target_rank(&row, 3), 4);
        let top: Vec<usize> = top_k(&row, 3).into_iter().map(|x| x.0).collect();
        assert_eq!(top, vec![1, 0, 2]);
    }

    #[test]
    fn metrics_from_ranks() {
        let m = from_ranks(&[1, 2, 11, 5]);
        assert_eq!(m.r1, 0.25);
        assert_eq!(m.r5, 0.75);
        assert_eq!(m.r10, 0.75);
        assert!((m.map10 - (1.0 + 0.5 + 0.2) / 4.0).abs() < 1e-12);
    }
}
