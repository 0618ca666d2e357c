//! Where each step's examples come from: a fixed training split visited in a fresh seeded
//! permutation each epoch, or fresh examples drawn from the task every step; optionally
//! structured (each path-star graph with each of its goals). Either way the batch of any step is
//! a pure function of the seeds and the step, so that a resumed run sees exactly the batches an
//! uninterrupted one would.

use std::collections::HashSet;

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

/// `[sampler]`: how training batches are drawn. The defaults are the lab's historical
/// behaviour (a fixed split, plain batches), so older configs reproduce.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// `fixed`: the training split (`[data] train` = M examples), reshuffled every epoch, as
    /// NTF and NextLat train (NextLat: 200k graphs). `fresh`: new examples drawn from the task
    /// for every step (test instances held out), as Frydenlund's 10^8-sample runs do; the
    /// training split is then only read for statistics (memorization, tf-idf).
    pub source: Source,
    /// Path-star only: each graph in the batch is asked once for each of its d goals, side by
    /// side (Frydenlund's structured samples), so a batch holds `batch_size / d` graphs and
    /// `batch_size` must be a multiple of d. A variant that is a test instance is left out of
    /// its batch.
    pub structured: bool,
}

/// Where examples come from; see [`SamplerConfig::source`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The training split, epoch by epoch.
    #[default]
    Fixed,
    /// Fresh examples every step.
    Fresh,
}

/// The ChaCha stream of step `s`'s fresh examples is `FRESH_STREAMS + s`: far from the streams
/// the split generator uses (0 for train, 1 for test).
const FRESH_STREAMS: u64 = 1 << 32;

/// The examples of each step, for one run.
pub struct StepSampler<'a> {
    task: &'a dyn Task,
    train: &'a [Example],
    batch: usize,
    seed: u64,
    config: SamplerConfig,
    /// Instance keys of the test split, which fresh and structured examples must avoid.
    held_out: HashSet<Vec<u32>>,
    order: BatchSampler,
    degree: usize,
}

impl<'a> StepSampler<'a> {
    /// A sampler of `batch` examples per step, from `train` (or the task) under `seed`.
    pub fn new(
        config: &SamplerConfig,
        task: &'a dyn Task,
        train: &'a [Example],
        test: &[Example],
        batch: usize,
        seed: u64,
    ) -> Result<StepSampler<'a>> {
        let degree = match (config.structured, task.as_path_star()) {
            (false, _) => 1,
            (true, Some(p)) => p.params().degree as usize,
            (true, None) => bail!("sampler.structured needs a path-star task (each graph asked for each of its goals)"),
        };
        if !batch.is_multiple_of(degree) {
            bail!("sampler.structured: schedule.batch_size ({batch}) must be a multiple of the degree ({degree})");
        }
        if config.source == Source::Fixed && train.is_empty() {
            bail!("the training split is empty");
        }
        let held_out = test.iter().map(|e| task.instance_key(e)).collect();
        let order = BatchSampler::new(train.len().max(1), batch / degree, seed);
        Ok(StepSampler { task, train, batch, seed, config: config.clone(), held_out, order, degree })
    }

    /// The examples of 0-based `step`.
    pub fn examples(&mut self, step: u64) -> Vec<Example> {
        let graphs = self.batch / self.degree;
        let mut out = Vec::with_capacity(self.batch);
        match self.config.source {
            Source::Fixed => {
                for i in self.order.indices(step) {
                    let ex = &self.train[i];
                    if self.degree == 1 {
                        out.push(ex.clone());
                    } else {
                        let keep = self
                            .variants(ex)
                            .into_iter()
                            .filter(|v| !self.held_out.contains(&self.task.instance_key(v)));
                        out.extend(keep);
                    }
                }
            }
            Source::Fresh => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(FRESH_STREAMS + step);
                while out.len() < graphs * self.degree {
                    let ex = self.task.sample(&mut rng);
                    let group = if self.degree == 1 { vec![ex] } else { self.variants(&ex) };
                    // A graph any of whose variants is a test instance is drawn again, so fresh
                    // batches are always full.
                    if group.iter().all(|v| !self.held_out.contains(&self.task.instance_key(v))) {
                        out.extend(group);
                    }
                }
            }
        }
        out
    }

    fn variants(&self, ex: &Example) -> Vec<Example> {
        let star = self.task.as_path_star().expect("checked in new");
        star.with_goals(ex).expect("training examples are well-formed path-star examples")
    }
}

/// Epoch-wise shuffled indices into a training set.
pub struct BatchSampler {
    n: usize,
    batch: usize,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl BatchSampler {
    /// A sampler over `n` examples, `batch` per step.
    pub fn new(n: usize, batch: usize, seed: u64) -> BatchSampler {
        assert!(n > 0 && batch > 0, "a sampler needs examples and a batch size");
        BatchSampler { n, batch, seed, cached: None }
    }

    fn permutation(&mut self, epoch: u64) -> &[usize] {
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            let mut p: Vec<usize> = (0..self.n).collect();
            p.shuffle(&mut rng);
            self.cached = Some((epoch, p));
        }
        &self.cached.as_ref().expect("just filled").1
    }

    /// Indices of the examples of 0-based `step`; a batch that crosses an epoch boundary takes
    /// the rest of one permutation and the start of the next.
    pub fn indices(&mut self, step: u64) -> Vec<usize> {
        let start = step * self.batch as u64;
        (0..self.batch as u64)
            .map(|i| {
                let at = start + i;
                let (epoch, offset) = (at / self.n as u64, (at % self.n as u64) as usize);
                self.permutation(epoch)[offset]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_once_per_epoch_and_steps_are_pure() {
        let mut s = BatchSampler::new(10, 4, 1);
        let seen: Vec<usize> = (0..5).flat_map(|step| s.indices(step)).collect(); // 20 = 2 epochs
        for epoch in seen.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(seen[..10], seen[10..], "each epoch has its own order");
        let mut fresh = BatchSampler::new(10, 4, 1);
        assert_eq!(fresh.indices(3), seen[12..16]);
    }

    fn path_star(degree: u32) -> Box<dyn Task> {
        tasks::TaskSpec::PathStar(tasks::path_star::PathStarParams { degree, ..Default::default() }).build().unwrap()
    }

    #[test]
    fn fresh_batches_are_pure_functions_of_the_step_and_avoid_the_test_split() {
        let task = path_star(2);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let test: Vec<Example> = (0..50).map(|_| task.sample(&mut rng)).collect();
        let config = SamplerConfig { source: Source::Fresh, structured: false };
        let mut s = StepSampler::new(&config, task.as_ref(), &[], &test, 8, 7).unwrap();
        let (a, b) = (s.examples(3), s.examples(4));
        assert_eq!(a.len(), 8);
        assert_ne!(a, b, "every step draws new examples");
        let mut again = StepSampler::new(&config, task.as_ref(), &[], &test, 8, 7).unwrap();
        assert_eq!(again.examples(4), b);
        // Drawn from the same generator as the test split's first examples, but held out.
        let keys: HashSet<Vec<u32>> = test.iter().map(|e| task.instance_key(e)).collect();
        assert!(a.iter().chain(&b).all(|e| !keys.contains(&task.instance_key(e))));
    }

    #[test]
    fn structured_batches_hold_each_graph_with_each_goal() {
        let task = path_star(2);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let train: Vec<Example> = (0..20).map(|_| task.sample(&mut rng)).collect();
        for source in [Source::Fixed, Source::Fresh] {
            let config = SamplerConfig { source, structured: true };
            let mut s = StepSampler::new(&config, task.as_ref(), &train, &[], 8, 0).unwrap();
            let batch = s.examples(2);
            assert_eq!(batch.len(), 8);
            for pair in batch.chunks(2) {
                let p = pair[0].prefix_len;
                assert_eq!(pair[0].tokens[..p - 2], pair[1].tokens[..p - 2], "the same graph and source");
                assert_ne!(pair[0].tokens[p - 2], pair[1].tokens[p - 2], "two different goals");
            }
        }
        let odd = SamplerConfig { source: Source::Fixed, structured: true };
        let e = StepSampler::new(&odd, task.as_ref(), &train, &[], 7, 0).err().unwrap();
        assert!(e.to_string().contains("multiple of the degree (2)"), "{e}");
        let walk = tasks::TaskSpec::GraphWalk(Default::default()).build().unwrap();
        let e = StepSampler::new(&odd, walk.as_ref(), &train, &[], 8, 0).err().unwrap();
        assert!(e.to_string().contains("needs a path-star task"), "{e}");
    }
}
