//! Learning-rate schedule of the paper (docs/spec-retrieval.md section 3): linear warm-up, cosine
//! ramp-down, then a floor. Set every step from the fractional epoch.

/// Warm-up + cosine schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub lr_max: f64,
    /// Floor.
    pub lr_min: f64,
    /// Warm-up length in epochs (paper: 1).
    pub warmup_epochs: f64,
    /// Epoch at which the cosine reaches the floor (paper: the number of epochs).
    pub rampdown_stop: f64,
}

impl WarmupCosine {
    /// Learning rate at fractional epoch `e`.
    pub fn lr(&self, e: f64) -> f64 {
        let w = self.warmup_epochs;
        if e < w {
            return self.lr_max * e / w;
        }
        if e < self.rampdown_stop {
            let t = (e - w) / (self.rampdown_stop - w);
            return self.lr_min
                + (self.lr_max - self.lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        }
        self.lr_min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_paper_formula() {
        let s = WarmupCosine {
            lr_max: 2e-5,
            lr_min: 1e-7,
            warmup_epochs: 1.0,
            rampdown_stop: 25.0,
        };
        assert_eq!(s.lr(0.0), 0.0);
        assert!((s.lr(0.5) - 1e-5).abs() < 1e-18);
        assert!((s.lr(1.0) - 2e-5).abs() < 1e-18);
        let e: f64 = 7.3;
        let want =
            1e-7 + (2e-5 - 1e-7) * 0.5 * (1.0 + (std::f64::consts::PI * (e - 1.0) / 24.0).cos());
        assert!((s.lr(e) - want).abs() < 1e-18);
        assert!((s.lr(13.0) - (1e-7 + (2e-5 - 1e-7) * 0.5)).abs() < 1e-15);
        assert_eq!(s.lr(25.0), 1e-7);
        assert_eq!(s.lr(40.0), 1e-7);
    }
}
