//! Sampling a next token from logits: greedy, temperature, top-k and top-p (nucleus), on the
//! host, from a per-row seeded generator.
//!
//! Every generation has its own ChaCha stream, named by the evaluation seed, a purpose and the
//! (prompt, sample) pair, so a sample does not depend on which rows share its batch, on the
//! batch size, or on how many other samples were drawn: re-running an evaluation with the same
//! seed reproduces every sample, and asking for more samples keeps the first ones.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a next token is chosen from the model's logits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Softmax temperature (1 when left out: a table that sets only `top_k` or `top_p` samples
    /// rather than silently decoding greedily). 0 decodes greedily (argmax) and ignores `top_k`
    /// and `top_p`.
    #[serde(default = "Sampling::one")]
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens before sampling (0: keep all).
    #[serde(default)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (nucleus sampling; 1: keep all).
    #[serde(default = "Sampling::one")]
    pub top_p: f64,
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_greedy() {
            return f.write_str("greedy");
        }
        write!(f, "temperature {}", self.temperature)?;
        if self.top_k > 0 {
            write!(f, ", top-k {}", self.top_k)?;
        }
        if self.top_p < 1.0 {
            write!(f, ", top-p {}", self.top_p)?;
        }
        Ok(())
    }
}

impl Sampling {
    fn one() -> f64 {
        1.0
    }

    /// Argmax decoding.
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 }
    }

    /// Plain sampling from the model's distribution at `temperature`.
    pub fn with_temperature(temperature: f64) -> Sampling {
        Sampling { temperature, ..Sampling::greedy() }
    }

    /// Whether this is argmax decoding (no randomness).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the parameters; the error says which one is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be a finite number >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }

    /// The probabilities this sampler draws from, given one position's logits: zero outside the
    /// kept set, renormalised inside it. Greedy decoding puts all mass on the first maximum.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f64> {
        let mut p = vec![0.0; logits.len()];
        if logits.is_empty() {
            return p;
        }
        // Most likely first; ties keep the lower id first so that the result is deterministic.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.is_greedy() {
            p[order[0]] = 1.0;
            return p;
        }
        let keep = if self.top_k == 0 { order.len() } else { self.top_k.min(order.len()) };
        let order = &order[..keep];
        let max = logits[order[0]] as f64;
        let weights: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / self.temperature).exp()).collect();
        let total: f64 = weights.iter().sum();
        // Nucleus: the shortest prefix of the sorted tokens whose mass reaches top_p (never empty).
        let mut kept = 0;
        let mut mass = 0.0;
        for w in &weights {
            kept += 1;
            mass += w / total;
            if mass >= self.top_p {
                break;
            }
        }
        let kept_total: f64 = weights[..kept].iter().sum();
        for (&i, w) in order[..kept].iter().zip(&weights) {
            p[i] = w / kept_total;
        }
        p
    }

    /// Draws a token id from one position's logits.
    pub fn choose(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> u32 {
        let p = self.distribution(logits);
        if self.is_greedy() {
            return p.iter().position(|&x| x == 1.0).unwrap_or(0) as u32;
        }
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut last = 0;
        for (i, &x) in p.iter().enumerate() {
            if x > 0.0 {
                acc += x;
                last = i;
                if u < acc {
                    return i as u32;
                }
            }
        }
        // Rounding can leave the sum a hair under u; the last kept token takes that sliver.
        last as u32
    }
}

/// What a generator is used for; each purpose has its own streams, so that adding pass@k to an
/// evaluation does not change its diversity samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Samples for diversity and creativity.
    Diversity = 1,
    /// Samples for pass@k.
    PassAtK = 2,
}

/// The generator of sample `sample` of prompt `prompt`.
pub fn stream(seed: u64, purpose: Purpose, prompt: usize, sample: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((purpose as u64) << 56) | ((prompt as u64) << 20) | sample as u64);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn distributions_by_hand() {
        // Logits ln 4, ln 2, ln 1, ln 1: at temperature 1 the probabilities are 1/2, 1/4, 1/8, 1/8.
        let l = [4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let s = Sampling::with_temperature(1.0);
        assert!(close(&s.distribution(&l), &[0.5, 0.25, 0.125, 0.125]));
        // Greedy: all mass on the first maximum.
        assert_eq!(Sampling::greedy().distribution(&[1.0, 3.0, 3.0]), vec![0.0, 1.0, 0.0]);
        // Top-k 2 renormalises the two best: 2/3, 1/3.
        let k2 = Sampling { top_k: 2, ..s };
        assert!(close(&k2.distribution(&l), &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]));
        // Top-p 0.7: 1/2 < 0.7 <= 3/4, so the two best are kept.
        let p = Sampling { top_p: 0.7, ..s };
        assert!(close(&p.distribution(&l), &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]));
        // Top-p 0.5 keeps the best alone (its mass reaches 0.5 exactly).
        let p = Sampling { top_p: 0.5, ..s };
        assert!(close(&p.distribution(&l), &[1.0, 0.0, 0.0, 0.0]));
        // Temperature 2 takes square roots of the odds: 2, sqrt 2, 1, 1.
        let t = Sampling::with_temperature(2.0).distribution(&l);
        let z = 2.0 + 2f64.sqrt() + 2.0;
        assert!(close(&t, &[2.0 / z, 2f64.sqrt() / z, 1.0 / z, 1.0 / z]));
    }

    #[test]
    fn draws_follow_the_distribution_and_are_reproducible() {
        let l = [4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let s = Sampling::with_temperature(1.0);
        let draw = |seed| {
            let mut rng = stream(seed, Purpose::PassAtK, 3, 0);
            (0..20_000).map(|_| s.choose(&l, &mut rng)).collect::<Vec<u32>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let share = |t| a.iter().filter(|&&x| x == t).count() as f64 / a.len() as f64;
        for (t, want) in [(0, 0.5), (1, 0.25), (2, 0.125), (3, 0.125)] {
            assert!((share(t) - want).abs() < 0.015, "token {t}: {} vs {want}", share(t));
        }
        // Top-k 1 at any temperature is greedy.
        let mut rng = stream(0, Purpose::Diversity, 0, 0);
        assert!((0..100).all(|_| Sampling { top_k: 1, ..s }.choose(&l, &mut rng) == 0));
        // Streams differ by prompt, sample and purpose.
        let first = |p, i, s| stream(1, p, i, s).random::<u64>();
        assert_ne!(first(Purpose::Diversity, 0, 0), first(Purpose::Diversity, 0, 1));
        assert_ne!(first(Purpose::Diversity, 0, 0), first(Purpose::Diversity, 1, 0));
        assert_ne!(first(Purpose::Diversity, 0, 0), first(Purpose::PassAtK, 0, 0));
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(Sampling::with_temperature(-1.0).validate().is_err());
        assert!(Sampling { top_p: 0.0, ..Sampling::with_temperature(1.0) }.validate().unwrap_err().contains("top_p"));
        assert!(Sampling { top_k: 5, top_p: 0.9, temperature: 0.7 }.validate().is_ok());
    }
}
