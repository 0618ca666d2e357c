//! Probes of what a trained run's heads know beyond what its next-token head decodes. The
//! question they answer: when an auxiliary objective's head predicts the future well, is the
//! plan in the representation (and merely unused by the next-token head), or is it not there?
//!
//! `fsp-bow`: at each position with a future, does the bag-of-words head recover the bag of
//! x_{t+2..t+τ} exactly (every token with p > 1/2, no other)? Reported per target position of
//! the token the position predicts, beside the rate a head that knows everything but the arm
//! would reach.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use lab_core::Batch;
use lab_core::run_dir;
use tasks::Example;

use trainer::RunConfig;
use trainer::objective::{BuildContext, Heads, ObjectiveConfig};

/// Exact bag recovery per target position (index 0 = the position predicting target token 1).
#[derive(Debug, Clone)]
pub struct BagProbe {
    /// Fraction of examples whose bag the head recovers exactly, per position.
    pub exact: Vec<f64>,
    /// Examples scored per position.
    pub counts: Vec<usize>,
}

/// Probes the latest checkpoint of an `fsp-bow` run on its first `examples` test examples.
pub fn probe_bow<B: AutodiffBackend>(run: &Path, examples: usize, device: &B::Device) -> Result<BagProbe> {
    let config = RunConfig::load(&run_dir::RunDir(run).config(), &[])
        .with_context(|| format!("{} is not a run directory", run.display()))?;
    let ObjectiveConfig::FspBow(bow) = &config.objective else {
        bail!("the probe reads bag-of-words heads; {} trained {:?}", run.display(), config.objective.name())
    };
    let checkpoint = run_dir::latest(run)?;
    let meta = &checkpoint.meta;
    let loaded = config.data.load(&config.task, false)?;
    let task = loaded.task;
    let test: Vec<&Example> = loaded.test.iter().take(examples).collect();
    let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &meta.model, device };
    let objective = config.objective.build::<B>(&cx)?;
    let gpt = run_dir::load_gpt::<B>(&checkpoint, device)?;
    let Some(Heads::Bow(head)) = trainer::train::load_heads(objective.as_ref(), &checkpoint, device)? else {
        unreachable!("fsp-bow builds a bag-of-words head")
    };

    let mut hits = Vec::<usize>::new();
    let mut counts = Vec::<usize>::new();
    for chunk in test.chunks(256) {
        let batch = Batch::<B>::new(chunk, task.vocab().dummy(), device);
        let residual = gpt.forward(batch.inputs.clone()).layers.pop().expect("a block");
        let z = head.forward(residual); // [b, t, v]
        let [_, t, v] = z.dims();
        let z = z.into_data().convert::<f32>().to_vec::<f32>().expect("f32 logits");
        for (r, ex) in chunk.iter().enumerate() {
            let len = ex.tokens.len();
            for i in ex.prefix_len.saturating_sub(1)..len.saturating_sub(2) {
                let last = bow.tau.map_or(len - 1, |tau| (i + tau).min(len - 1));
                let mut want = vec![false; v];
                for &tok in &ex.tokens[i + 2..=last] {
                    want[tok as usize] = true;
                }
                let got = (0..v).map(|k| z[(r * t + i) * v + k] > 0.0);
                let exact = got.zip(&want).all(|(g, w)| g == *w);
                let pos = i + 1 - ex.prefix_len; // 0-based target position predicted at i
                if hits.len() <= pos {
                    hits.resize(pos + 1, 0);
                    counts.resize(pos + 1, 0);
                }
                hits[pos] += exact as usize;
                counts[pos] += 1;
            }
        }
    }
    let exact = hits.iter().zip(&counts).map(|(&h, &c)| h as f64 / c.max(1) as f64).collect();
    Ok(BagProbe { exact, counts })
}
