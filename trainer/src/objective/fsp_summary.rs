//! Future summary prediction with a learned summary (Mahajan et al. 2025, arXiv 2510.14751):
//! a right-to-left LM Q reads x_{>=t+2}; its final hidden state there, through a fixed random
//! projection, is the summary of the future after the next token, and an auxiliary head on h_t
//! regresses it with a squared error.
//!
//! Q is either a frozen, pre-trained `reverse-lm` run loaded by path (`reverse_run`), or a GPT
//! of the forward model's shape trained jointly on its own right-to-left LM loss. Either way the
//! summary is a target, not a path for gradients: a summariser that the regression could move
//! would be pulled toward whatever is easiest to predict (a constant). The projection is fixed
//! for the same reason. Total = L_NTP + λ · L_summary (+ L_reverse in joint training).

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::{Gpt, GptConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::frozen::{Serves, load_frozen};
use super::{
    AuxHead, BuildContext, Heads, LabModel, LossOutput, Objective, future_depth, future_mask, heads,
    masked_cross_entropy, reverse_rows,
};

/// `[objective] kind = "fsp-summary"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SummaryConfig {
    /// Run directory of a trained `reverse-lm` run: its latest checkpoint is loaded and frozen.
    /// Absent: a reverse LM of the forward model's shape is trained jointly.
    pub reverse_run: Option<PathBuf>,
    /// Width of the summary: the reverse LM's final hidden state through a fixed random
    /// projection to this many values.
    pub summary_dim: usize,
    /// λ, the weight of the squared-error summary loss.
    pub weight: f64,
    /// Seed of the fixed projection.
    pub projection_seed: u64,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        SummaryConfig { reverse_run: None, summary_dim: 32, weight: 1.0, projection_seed: 0 }
    }
}

/// The regression head and, in joint training, the reverse LM.
#[derive(Module, Debug)]
pub struct SummaryHeads<B: Backend> {
    head: AuxHead<B>,
    reverse: Option<Gpt<B>>,
}

/// Learned-summary future prediction; see the module docs.
pub struct FspSummary<B: AutodiffBackend> {
    /// The frozen summariser, outside the trained module (no gradient can reach it).
    frozen: Option<Gpt<B::InnerBackend>>,
    /// `[d_q, summary_dim]`, entries N(0, 1 / d_q).
    projection: Vec<f32>,
    reverse_width: usize,
    summary_dim: usize,
    weight: f64,
    model: GptConfig,
}

impl<B: AutodiffBackend> FspSummary<B> {
    /// Loads the frozen reverse LM, if one is named, and draws the projection.
    pub fn new(config: &SummaryConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        if config.summary_dim == 0 {
            bail!("objective.summary_dim must be positive");
        }
        let frozen = match &config.reverse_run {
            None => None,
            Some(run) => Some(load_frozen::<B::InnerBackend>(
                run,
                "objective.reverse_run",
                Serves::ReverseLm,
                cx.model,
                cx.device,
            )?),
        };
        let reverse_width = frozen.as_ref().map_or(cx.model.d_model, |m| m.d_model());
        let mut rng = ChaCha8Rng::seed_from_u64(config.projection_seed);
        let std = (1.0 / reverse_width as f64).sqrt();
        let projection = (0..reverse_width * config.summary_dim)
            .map(|_| {
                // Box-Muller: rand 0.9 without rand_distr.
                let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * std) as f32
            })
            .collect();
        Ok(FspSummary {
            frozen,
            projection,
            reverse_width,
            summary_dim: config.summary_dim,
            weight: config.weight,
            model: cx.model.clone(),
        })
    }

    /// The summary at every forward position, `[b, t, s]`: for position j, Q's projected
    /// hidden state after reading x_{len-1} down to x_{j+2}, which sits at reversed position
    /// len - 3 - j of `hidden` (`[b, tr, d]`, Q's states of the first `tr` reversed positions).
    /// Positions without a future, or whose state lies beyond `tr`, are filled with an arbitrary
    /// row (masked).
    fn targets(&self, hidden: Tensor<B, 3>, lens: &[usize], t: usize) -> Tensor<B, 3> {
        let [b, tr, d] = hidden.dims();
        let device = hidden.device();
        let p = Tensor::<B, 2>::from_data(TensorData::new(self.projection.clone(), [d, self.summary_dim]), &device);
        let summary = hidden.matmul(p.unsqueeze::<3>().expand([b, d, self.summary_dim])); // [b, tr, s]
        let index: Vec<i32> = lens
            .iter()
            .flat_map(|&len| {
                (0..t).map(move |j| if j + 3 <= len && len - 3 - j < tr { (len - 3 - j) as i32 } else { 0 })
            })
            .collect();
        let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [b, t]), &device);
        summary.gather(1, index.unsqueeze_dim::<3>(2).expand([b, t, self.summary_dim]))
    }
}

impl<B: AutodiffBackend> Objective<B> for FspSummary<B> {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let head = AuxHead::new(&self.model, self.summary_dim, device);
        let reverse = self.frozen.is_none().then(|| self.model.init(device));
        Some(Heads::Summary(SummaryHeads { head, reverse }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let Heads::Summary(h) = heads(model) else { unreachable!("fsp-summary builds a summary head") };
        let out = model.gpt.forward(batch.inputs.clone());
        let ntp = masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone());
        let rev = reverse_rows(batch);
        let mut parts = vec![("ntp".to_string(), ntp.clone())];
        let mut total = ntp;
        let hidden = match (&self.frozen, &h.reverse) {
            // A frozen Q is read only through the summaries of target positions, so it stops at
            // `future_depth` (a joint one trains on whole rows).
            (Some(q), _) => {
                let [b, _] = rev.inputs.dims();
                Tensor::from_inner(q.forward(rev.inputs.clone().slice([0..b, 0..future_depth(batch)]).inner()).hidden)
            }
            (None, Some(q)) => {
                let o = q.forward(rev.inputs.clone());
                let lm = masked_cross_entropy(o.logits, rev.targets.clone(), rev.mask.clone());
                parts.push(("reverse_lm".into(), lm.clone()));
                total = total + lm;
                o.hidden.detach()
            }
            (None, None) => unreachable!("joint training builds a reverse LM"),
        };
        debug_assert_eq!(hidden.dims()[2], self.reverse_width);
        // The summary is read from the first target on (`future_mask`), so the head's block
        // computes those positions alone.
        let from = batch.first_target();
        let target = self.targets(hidden, &rev.lens, batch.inputs.dims()[1]); // [b, t, s]
        let [b, tt, s] = target.dims();
        let target = target.slice([0..b, from..tt, 0..s]);
        let pred = h.head.forward_from(out.layers.last().expect("at least one block").clone(), from);
        let [b, t, _] = pred.dims(); // t = tt - from
        let sq = (pred - target).powi_scalar(2).mean_dim(2).reshape([b, t]);
        let mask = future_mask(batch).slice([0..b, from..tt]);
        let summary = (sq * mask.clone()).sum() / mask.sum().clamp_min(1.0);
        parts.push(("summary".into(), summary.clone()));
        LossOutput { total: total + summary.mul_scalar(self.weight), parts, stats: vec![] }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::module::AutodiffModule;
    use burn::optim::GradientsParams;

    use lab_core::run_dir;

    use super::super::test_util::*;
    use super::*;

    fn context_task() -> Box<dyn tasks::Task> {
        tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap()
    }

    fn joint(weight: f64) -> FspSummary<B> {
        let task = context_task();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        FspSummary::new(&SummaryConfig { summary_dim: 5, weight, ..SummaryConfig::default() }, &cx).unwrap()
    }

    #[test]
    fn loss_matches_an_independent_computation() {
        let obj = joint(0.7);
        let m = model(&obj, &tiny());
        let batch = batch();
        let out = obj.loss(&m, &batch, 0);
        let names: Vec<&str> = out.parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ntp", "reverse_lm", "summary"]);
        let got = scalar(out.parts[2].1.clone()) as f64;

        let Some(Heads::Summary(h)) = &m.heads else { panic!() };
        let q = h.reverse.as_ref().unwrap();
        let pred = h.head.forward(m.gpt.forward(batch.inputs.clone()).layers.last().unwrap().clone());
        let pred = pred.into_data().to_vec::<f32>().unwrap();
        let rows = ROWS;
        let (d, s) = (16, 5);
        let (mut sum, mut n) = (0.0f64, 0);
        for (r, (tokens, prefix)) in rows.iter().enumerate() {
            for t in 0..6 {
                if !(t + 1 >= *prefix && t + 2 < tokens.len()) {
                    continue;
                }
                // Q reads x_{len-1}, ..., x_{t+2} on its own: its last hidden state is the summary.
                let future: Vec<i32> = tokens[t + 2..].iter().rev().map(|&x| x as i32).collect();
                let len = future.len();
                let x = Tensor::<B, 2, Int>::from_data(TensorData::new(future, [1, len]), &FlexDevice);
                let hid = q.forward(x).hidden.into_data().to_vec::<f32>().unwrap();
                let last = &hid[(len - 1) * d..len * d];
                for c in 0..s {
                    let y: f64 = (0..d).map(|i| last[i] as f64 * obj.projection[i * s + c] as f64).sum();
                    sum += (pred[(r * 6 + t) * s + c] as f64 - y).powi(2) / s as f64;
                }
                n += 1;
            }
        }
        assert_eq!(n, 6);
        assert!((got - sum / n as f64).abs() < 1e-4, "{got} vs {}", sum / n as f64);
        let parts: Vec<f64> = out.parts.iter().map(|(_, t)| scalar(t.clone()) as f64).collect();
        assert!((scalar(out.total) as f64 - (parts[0] + parts[1] + 0.7 * parts[2])).abs() < 1e-5);
    }

    #[test]
    fn a_frozen_reverse_lm_reads_only_as_deep_as_the_summaries() {
        // The same Q frozen (its pass stops at `future_depth`) and trained jointly (whole rows):
        // the same summary loss. The test rows' depth is 3 of 7 reversed positions.
        let joint = joint(0.7);
        let m = model(&joint, &tiny());
        assert_eq!(future_depth(&batch()), 3);
        let Some(Heads::Summary(h)) = &m.heads else { panic!() };
        let frozen = FspSummary::<B> {
            frozen: Some(h.reverse.as_ref().unwrap().valid()),
            projection: joint.projection.clone(),
            reverse_width: joint.reverse_width,
            summary_dim: joint.summary_dim,
            weight: joint.weight,
            model: joint.model.clone(),
        };
        let summary = |obj: &FspSummary<B>| scalar(obj.loss(&m, &batch(), 0).parts.last().unwrap().1.clone());
        let (a, b) = (summary(&joint), summary(&frozen));
        assert!((a - b).abs() <= 1e-6 + 1e-5 * a.abs(), "joint {a}, frozen {b}");
    }

    #[test]
    fn the_summary_regression_never_reaches_the_reverse_lm() {
        // The reverse LM's gradients are those of its own loss, whatever the regression weight.
        let grads_of_reverse = |weight: f64| {
            let obj = joint(weight);
            let m = model(&obj, &tiny());
            let grads = GradientsParams::from_grads(obj.loss(&m, &batch(), 0).total.backward(), &m);
            let Some(Heads::Summary(h)) = &m.heads else { panic!() };
            struct Grads<'a>(&'a GradientsParams, Vec<Vec<f32>>);
            impl burn::module::ModuleVisitor<B> for Grads<'_> {
                fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                    let g = self.0.get::<<B as AutodiffBackend>::InnerBackend, D>(p.id).expect("a gradient");
                    self.1.push(g.into_data().to_vec::<f32>().unwrap());
                }
            }
            let mut v = Grads(&grads, vec![]);
            h.reverse.as_ref().unwrap().visit(&mut v);
            v.1
        };
        let (a, b) = (grads_of_reverse(0.0), grads_of_reverse(5.0));
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn a_frozen_reverse_lm_is_loaded_and_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny();
        let q: Gpt<B> = config.init_seeded(9, &FlexDevice);
        let stem = run_dir::checkpoint_stem(dir.path(), 5);
        std::fs::create_dir_all(stem.parent().unwrap()).unwrap();
        models::checkpoint::save_model(&q, &stem).unwrap();
        let task = context_task();
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let meta = |objective: &str| run_dir::CheckpointMeta {
            step: 5,
            model: config.clone(),
            task: tasks::TaskSpec::default_of("path-star").unwrap(),
            data: Default::default(),
            objective: objective.into(),
            teacherless: false,
            reads: if objective == "reverse-lm" { run_dir::Direction::Reverse } else { run_dir::Direction::Forward },
            files: Default::default(),
            health: None,
            decoder: models::DecoderKind::Gpt,
        };
        let write = |m: run_dir::CheckpointMeta| {
            std::fs::write(stem.with_extension("json"), serde_json::to_string(&m).unwrap()).unwrap()
        };
        let cfg = SummaryConfig { reverse_run: Some(dir.path().into()), summary_dim: 5, ..Default::default() };
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &config, device: &FlexDevice };
        write(meta("ntp"));
        let err = FspSummary::new(&cfg, &cx).err().unwrap().to_string();
        assert!(err.contains("reads left to right"), "{err}");
        write(meta("reverse-lm"));
        let obj = FspSummary::new(&cfg, &cx).unwrap();
        let m = model(&obj, &config);
        let Some(Heads::Summary(h)) = &m.heads else { panic!() };
        assert!(h.reverse.is_none(), "a frozen reverse LM is not part of the trained module");
        let frozen_before = obj.frozen.as_ref().unwrap().clone();
        let before = params(&m);
        let m = step(&obj, m, &batch());
        let after = params(&m);
        assert_eq!(before.iter().zip(&after).filter(|(a, b)| a != b).count(), before.len());
        // The frozen model is exactly the saved one, before and after the step.
        let x = Tensor::<<B as AutodiffBackend>::InnerBackend, 2, Int>::from_data(
            TensorData::new(vec![1, 2, 3, 4], [1, 4]),
            &FlexDevice,
        );
        let saved = q.valid().forward(x.clone()).hidden.into_data().to_vec::<f32>().unwrap();
        assert_eq!(frozen_before.forward(x.clone()).hidden.into_data().to_vec::<f32>().unwrap(), saved);
        assert_eq!(obj.frozen.as_ref().unwrap().forward(x).hidden.into_data().to_vec::<f32>().unwrap(), saved);
    }
}
