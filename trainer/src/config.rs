//! The training config: one TOML file with a section per concern, `--set key=value`
//! overrides, and a resolved form (every value filled in) written into the run directory.
//!
//! ```toml
//! [task]                      # a tasks::TaskSpec
//! task = "path-star"
//! degree = 2
//! path_len = 5
//! nodes = 50
//!
//! [data]                      # a tasks::dataset::DataSpec
//! train = 200000
//! test = 20000
//!
//! [model]
//! preset = "ntf"              # or "tiny"; fields set here override the preset
//!
//! [objective]
//! kind = "ntp"                # or "teacherless"
//!
//! [optimizer]
//! lr = 1e-4
//!
//! [schedule]
//! steps = 20000
//! batch_size = 256
//!
//! [seeds]
//! model = 0
//! data = 0
//!
//! [eval]                      # an eval::EvalOptions
//! examples = 2000
//! ```
//!
//! Unknown keys are errors, in the file and in overrides alike.

use std::path::Path;

use anyhow::{Context, Result, bail};
use eval::EvalOptions;
use models::{GptConfig, Positions};
use serde::{Deserialize, Serialize};
use tasks::TaskSpec;
use tasks::dataset::DataSpec;
use tasks::one_line;

use crate::objective::ObjectiveConfig;
use crate::sampler::SamplerConfig;

/// A whole training run's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The task (name and parameters).
    pub task: TaskSpec,
    /// Where the examples come from.
    #[serde(default)]
    pub data: DataSpec,
    /// The model's shape.
    #[serde(default)]
    pub model: ModelSection,
    /// The training objective.
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// AdamW and gradient clipping.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Steps, batch size, learning-rate schedule and how often to log, evaluate and save.
    pub schedule: ScheduleConfig,
    /// How each step's examples are drawn (a fixed split or fresh examples; structured or not).
    #[serde(default)]
    pub sampler: SamplerConfig,
    /// Seeds of everything random in training.
    #[serde(default)]
    pub seeds: Seeds,
    /// Evaluation during and after training.
    #[serde(default)]
    pub eval: EvalOptions,
}

/// Model presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 2 layers, 64 wide, 2 heads: CPU tests.
    Tiny,
    /// 6 layers, 384 wide, 6 heads: the Next-Token-Failures README model.
    Ntf,
}

/// The `[model]` section: a preset and any fields that override it. The vocabulary size and
/// sequence length come from the task unless given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Starting point; `tiny` when absent.
    pub preset: Option<Preset>,
    /// Transformer blocks.
    pub n_layers: Option<usize>,
    /// Width of the residual stream.
    pub d_model: Option<usize>,
    /// Attention heads.
    pub n_heads: Option<usize>,
    /// Hidden width of the MLP.
    pub d_ff: Option<usize>,
    /// Tie the unembedding to the token embedding.
    pub tie_embeddings: Option<bool>,
    /// LayerNorm epsilon.
    pub layer_norm_eps: Option<f64>,
    /// Standard deviation of the weight initialisation.
    pub init_std: Option<f64>,
    /// Learned positions; at least the longest sequence of the data.
    pub max_seq_len: Option<usize>,
    /// Vocabulary size; must equal the task's if given.
    pub vocab_size: Option<usize>,
    /// How positions are encoded: `learned` (the default: a table of `max_seq_len` vectors, as
    /// NTF's GPT-2), `rope` (rotary, as BST's official code) or `none`. Only the learned table
    /// ties the model to the trained length: with the others `eval robustness` scores longer
    /// prompts too.
    pub positions: Option<Positions>,
    /// Run the linear maps' matrix products with bf16 inputs and f32 accumulation (weights,
    /// gradients and the optimizer stay f32), on the CPU backend of a CPU with AVX512-BF16; an
    /// error elsewhere on the CPU backend, ignored on GPU backends. Default false. It holds for
    /// the whole process (`kernels::set_bf16_products`). Whether it pays depends on the
    /// CPU: on AMD Zen 4 the products ran 1.8x f32's speed, on an Intel Xeon without AMX
    /// (Emerald Rapids) at half of it, on a Xeon with AMX (where they run on its tiles) at 3-4x
    /// (LOG.md, 2026-12-02); `cargo bench -p benches --bench train_step -- linear_product`
    /// measures both on this machine.
    pub bf16_products: Option<bool>,
}

impl ModelSection {
    /// The full model config for a task with `vocab_size` tokens whose sequences need
    /// `needed_len` positions.
    pub fn resolve(&self, vocab_size: usize, needed_len: usize) -> Result<GptConfig> {
        if let Some(v) = self.vocab_size.filter(|&v| v != vocab_size) {
            bail!("model.vocab_size = {v} but the task's vocabulary has {vocab_size} tokens");
        }
        let seq = self.max_seq_len.unwrap_or(needed_len);
        if seq < needed_len {
            bail!("model.max_seq_len = {seq} but the data needs {needed_len} positions");
        }
        let mut c = match self.preset.unwrap_or(Preset::Tiny) {
            Preset::Tiny => GptConfig::tiny(vocab_size, seq),
            Preset::Ntf => GptConfig::ntf(vocab_size, seq),
        };
        c.n_layers = self.n_layers.unwrap_or(c.n_layers);
        c.d_model = self.d_model.unwrap_or(c.d_model);
        c.n_heads = self.n_heads.unwrap_or(c.n_heads);
        c.d_ff = self.d_ff.unwrap_or(c.d_ff);
        c.tie_embeddings = self.tie_embeddings.unwrap_or(c.tie_embeddings);
        c.layer_norm_eps = self.layer_norm_eps.unwrap_or(c.layer_norm_eps);
        c.init_std = self.init_std.unwrap_or(c.init_std);
        c.positions = self.positions.unwrap_or(c.positions);
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }

    /// The section with every field written out, for the resolved config.
    pub fn from_resolved(preset: Option<Preset>, c: &GptConfig) -> ModelSection {
        ModelSection {
            preset,
            n_layers: Some(c.n_layers),
            d_model: Some(c.d_model),
            n_heads: Some(c.n_heads),
            d_ff: Some(c.d_ff),
            tie_embeddings: Some(c.tie_embeddings),
            layer_norm_eps: Some(c.layer_norm_eps),
            init_std: Some(c.init_std),
            max_seq_len: Some(c.max_seq_len),
            vocab_size: Some(c.vocab_size),
            positions: Some(c.positions),
            bf16_products: None,
        }
    }
}

/// AdamW with global-norm gradient clipping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    #[serde(default = "OptimizerConfig::default_lr")]
    pub lr: f64,
    /// Decoupled weight decay (NTF: 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Adam's beta_1.
    #[serde(default = "OptimizerConfig::default_beta1")]
    pub beta1: f32,
    /// Adam's beta_2.
    #[serde(default = "OptimizerConfig::default_beta2")]
    pub beta2: f32,
    /// Adam's epsilon (PyTorch's default; burn's own default is 1e-5).
    #[serde(default = "OptimizerConfig::default_eps")]
    pub eps: f32,
    /// Clip the gradient to this global L2 norm (as PyTorch's `clip_grad_norm_`); 0 turns
    /// clipping off.
    #[serde(default = "OptimizerConfig::default_clip")]
    pub grad_clip: f64,
}

impl OptimizerConfig {
    fn default_lr() -> f64 {
        1e-3
    }
    fn default_beta1() -> f32 {
        0.9
    }
    fn default_beta2() -> f32 {
        0.999
    }
    fn default_eps() -> f32 {
        1e-8
    }
    fn default_clip() -> f64 {
        1.0
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lr: Self::default_lr(),
            weight_decay: 0.0,
            beta1: Self::default_beta1(),
            beta2: Self::default_beta2(),
            eps: Self::default_eps(),
            grad_clip: Self::default_clip(),
        }
    }
}

/// Steps and schedules, all counted in optimizer steps (never in samples).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Optimizer steps in the run.
    pub steps: u64,
    /// Examples per step.
    #[serde(default = "ScheduleConfig::default_batch")]
    pub batch_size: usize,
    /// Steps of linear warmup from 0 to the peak learning rate.
    #[serde(default = "ScheduleConfig::default_warmup")]
    pub warmup_steps: u64,
    /// Cosine decay ends at this fraction of the peak (1.0: constant after warmup).
    #[serde(default = "ScheduleConfig::default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Write training metrics every this many steps.
    #[serde(default = "ScheduleConfig::default_log_every")]
    pub log_every: u64,
    /// Evaluate every this many steps (and at the end); 0: only at the end.
    #[serde(default = "ScheduleConfig::default_eval_every")]
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (and at the end); 0: only at the end.
    #[serde(default = "ScheduleConfig::default_checkpoint_every")]
    pub checkpoint_every: u64,
}

impl ScheduleConfig {
    fn default_batch() -> usize {
        64
    }
    fn default_warmup() -> u64 {
        100
    }
    fn default_min_lr_ratio() -> f64 {
        0.1
    }
    fn default_log_every() -> u64 {
        10
    }
    fn default_eval_every() -> u64 {
        500
    }
    fn default_checkpoint_every() -> u64 {
        500
    }

    /// Learning rate at a 0-based step: linear warmup, then cosine decay to
    /// `min_lr_ratio * peak` at the last step.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Seeds of training (the data seed of generated splits is `[data] seed`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeds {
    /// Initial weights.
    #[serde(default)]
    pub model: u64,
    /// Order in which training examples are visited.
    #[serde(default)]
    pub data: u64,
}

impl RunConfig {
    /// Reads a config file and applies `key=value` overrides (dotted keys, TOML values; a
    /// value that is not valid TOML is taken as a string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        RunConfig::parse(&text, overrides, &path.display().to_string())
    }

    /// Parses a config's text (read from `origin`, for messages) and applies overrides. Every
    /// error is one line that names the line and column, or the key.
    pub fn parse(text: &str, overrides: &[String], origin: &str) -> Result<RunConfig> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("parsing {origin}: {}", one_line(&e.to_string())))?;
        for o in overrides {
            lab_core::overrides::apply_override(&mut table, o)?;
        }
        let config: RunConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid config {origin}: {}", one_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let s = &self.schedule;
        if s.steps == 0 || s.batch_size == 0 || s.log_every == 0 {
            bail!("schedule: steps, batch_size and log_every must be positive");
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            bail!("optimizer.lr must be a positive number");
        }
        if !s.checkpoint_every.is_multiple_of(s.log_every) {
            bail!(
                "schedule.checkpoint_every ({}) must be a multiple of schedule.log_every ({}), so that a run resumed \
                 from a checkpoint logs the same averages as an uninterrupted one",
                s.checkpoint_every,
                s.log_every
            );
        }
        if !(0.0..=1.0).contains(&s.min_lr_ratio) {
            bail!("schedule.min_lr_ratio must be in [0, 1]");
        }
        self.eval.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("configs serialise to TOML")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINIMAL: &str =
        "[task]\ntask = \"path-star\"\ndegree = 2\npath_len = 4\nnodes = 10\n[schedule]\nsteps = 10\n";

    fn load(text: &str, overrides: &[&str]) -> Result<RunConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        RunConfig::load(&path, &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn overrides_reach_every_section_and_unknown_keys_fail() {
        let c = load(
            MINIMAL,
            &["optimizer.lr=3e-4", "model.preset=ntf", "objective.kind=teacherless", "task.reverse=true"],
        )
        .unwrap();
        assert_eq!(c.optimizer.lr, 3e-4);
        assert_eq!(c.model.preset, Some(Preset::Ntf));
        assert_eq!(c.objective, ObjectiveConfig::Teacherless);
        assert!(matches!(c.task, TaskSpec::PathStar(ref p) if p.reverse));
        let err = format!("{:#}", load(MINIMAL, &["optimizer.learning_rate=1"]).unwrap_err());
        assert!(err.contains("learning_rate"), "{err}");
        let err = format!("{:#}", load(&format!("{MINIMAL}[model]\nwidth = 3\n"), &[]).unwrap_err());
        assert!(err.contains("width"), "{err}");
    }

    #[test]
    fn resolved_configs_round_trip_through_toml() {
        let mut c = load(MINIMAL, &[]).unwrap();
        c.model = ModelSection::from_resolved(Some(Preset::Tiny), &c.model.resolve(14, 15).unwrap());
        let back: RunConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = ScheduleConfig {
            steps: 110,
            batch_size: 1,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            log_every: 1,
            eval_every: 0,
            checkpoint_every: 0,
        };
        assert!((s.lr(1.0, 0) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 10) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn model_sections_resolve_against_the_task() {
        let m = ModelSection { preset: Some(Preset::Ntf), n_layers: Some(2), ..Default::default() };
        let c = m.resolve(54, 31).unwrap();
        assert_eq!((c.n_layers, c.d_model, c.vocab_size, c.max_seq_len), (2, 384, 54, 31));
        assert!(ModelSection { vocab_size: Some(3), ..Default::default() }.resolve(54, 31).is_err());
        assert!(ModelSection { max_seq_len: Some(8), ..Default::default() }.resolve(54, 31).is_err());
        assert!(ModelSection { n_heads: Some(5), ..Default::default() }.resolve(54, 31).is_err());
    }

    /// Cases per property: `PROPTEST_CASES` when set (the long run:
    /// `PROPTEST_CASES=1000000 cargo test -p trainer --release never_panic`), else 50,000, so
    /// that the loader meets 10^5 cases in the default suite.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
    }

    /// The configs the lab ships, as mutation seeds.
    fn shipped() -> &'static [String] {
        static SHIPPED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        SHIPPED.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/path-star");
            ["ntp.toml", "mi.toml", "fsp-summary.toml"]
                .iter()
                .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
                .collect()
        })
    }

    fn assert_one_line(result: Result<RunConfig>) -> Result<(), TestCaseError> {
        if let Err(e) = result {
            let msg = format!("{e:#}");
            prop_assert!(!msg.contains('\n') && !msg.is_empty(), "{}", msg);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the config loader: a config or a one-line error.
        #[test]
        fn arbitrary_configs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            assert_one_line(RunConfig::parse(&String::from_utf8_lossy(&bytes), &[], "fuzz.toml"))?;
        }

        /// Shipped configs with a byte changed, inserted or cut, and an arbitrary override, never
        /// panic the loader.
        #[test]
        fn mutated_configs_never_panic(
            which in 0usize..3, at in 0usize..4000, byte in any::<u8>(), how in 0u8..4, set in "[a-z_.]{1,20}=[ -~]{0,12}"
        ) {
            let mut bytes = shipped()[which].clone().into_bytes();
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 => bytes.truncate(at),
                _ => {}
            }
            let overrides = if how == 3 { vec![set] } else { vec![] };
            assert_one_line(RunConfig::parse(&String::from_utf8_lossy(&bytes), &overrides, "fuzz.toml"))?;
        }
    }
}
