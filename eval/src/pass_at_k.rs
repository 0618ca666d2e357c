//! pass@k: the chance that at least one of k generations solves a prompt, estimated without bias
//! from n ≥ k generations of which c are right (Chen et al. 2021):
//!
//! pass@k = E_prompts[ 1 − C(n − c, k) / C(n, k) ].
//!
//! Comparing objectives over k = 1 … 64 separates two effects (the RLVR analysis of Yue et al.
//! 2025): an objective that only re-weights what the model could already reach raises pass@1 but
//! not pass@64, while one that widens what it can reach raises the large-k end.

use serde::{Deserialize, Serialize};

/// The largest k reported.
pub const MAX_K: usize = 64;

/// The unbiased estimate of pass@k for one prompt with `c` right among `n` generations.
///
/// Computed as 1 − ∏_{i = n − c + 1}^{n} (1 − k / i), which equals the binomial form without its
/// overflow.
pub fn estimate(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n && k >= 1 && k <= n, "pass@k needs 1 <= k <= n and c <= n (n {n}, c {c}, k {k})");
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// pass@k over a set of prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    /// Prompts sampled from.
    pub prompts: usize,
    /// Generations per prompt (n).
    pub samples: usize,
    /// How tokens were drawn.
    pub sampling: String,
    /// pass@k for k = 1, 2, …, min(n, 64): index k − 1.
    pub pass_at: Vec<f64>,
}

impl PassAtK {
    /// Averages the estimate over prompts; `right[i]` counts prompt `i`'s right generations.
    pub fn new(right: &[usize], samples: usize, sampling: String) -> PassAtK {
        let ks = samples.min(MAX_K);
        let pass_at = (1..=ks)
            .map(|k| {
                let sum: f64 = right.iter().map(|&c| estimate(samples, c, k)).sum();
                if right.is_empty() { 0.0 } else { sum / right.len() as f64 }
            })
            .collect();
        PassAtK { prompts: right.len(), samples, sampling, pass_at }
    }

    /// pass@k, if k was estimated.
    pub fn at(&self, k: usize) -> Option<f64> {
        k.checked_sub(1).and_then(|i| self.pass_at.get(i).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binomial(n: u64, k: u64) -> f64 {
        (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
    }

    #[test]
    fn estimates_by_hand() {
        // n = 4, c = 1: pass@1 = 1/4; pass@2 = 1 − C(3,2)/C(4,2) = 1 − 3/6 = 1/2; pass@4 = 1.
        assert!((estimate(4, 1, 1) - 0.25).abs() < 1e-12);
        assert!((estimate(4, 1, 2) - 0.5).abs() < 1e-12);
        assert_eq!(estimate(4, 1, 4), 1.0);
        // Nothing right: 0 for every k; everything right: 1.
        assert_eq!(estimate(64, 0, 64), 0.0);
        assert_eq!(estimate(10, 10, 1), 1.0);
        // pass@1 is the share right, and the product form equals the binomial form.
        assert!((estimate(64, 16, 1) - 0.25).abs() < 1e-12);
        for (n, c, k) in [(64, 3, 8), (20, 7, 5), (50, 1, 49), (64, 10, 32)] {
            let want = 1.0 - binomial(n - c, k) / binomial(n, k);
            assert!((estimate(n as usize, c as usize, k as usize) - want).abs() < 1e-9, "{n} {c} {k}");
        }
    }

    #[test]
    fn curves_average_prompts_and_never_fall() {
        // Two prompts: one always right, one right once in four.
        let p = PassAtK::new(&[4, 1], 4, "temperature 1".into());
        assert_eq!(p.pass_at.len(), 4);
        assert!((p.at(1).unwrap() - (1.0 + 0.25) / 2.0).abs() < 1e-12);
        assert!((p.at(2).unwrap() - (1.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(p.at(4), Some(1.0));
        assert_eq!(p.at(5), None);
        let long = PassAtK::new(&[0, 3, 17, 64], 100, String::new());
        assert_eq!(long.pass_at.len(), MAX_K);
        assert!(long.pass_at.windows(2).all(|w| w[0] <= w[1] + 1e-12));
    }
}
