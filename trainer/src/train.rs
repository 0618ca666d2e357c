//! The explicit training loop (`forward → loss → backward → clip → AdamW step`), with metrics,
//! evaluation, atomic checkpoints and exact resume.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use eval::EvalReport;
use indicatif::{ProgressBar, ProgressStyle};
use lab_core::Batch;
use lab_core::run_dir::{
    self, Checkpoint, CheckpointMeta, Direction, Health, MAX_GOOD_WEIGHT, MetricsLine, Part, RunDir, Scored,
};
use models::{Decoder, GptConfig};
use serde_json::{Map, Value, json};
use tasks::Example;

use crate::clip::clip_grad_norm;
use crate::config::{ModelSection, RunConfig};
use crate::objective::{BuildContext, Heads, LabModel, Objective};
use crate::optim::AdamW;
use crate::sampler::StepSampler;

/// The backend initial weights are drawn on, whatever the training device.
type Host = Autodiff<Flex>;
const HOST: FlexDevice = FlexDevice;

/// How to run, beyond the config.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many steps as if the process had been killed there (for tests of
    /// `--resume`); checkpoints and metrics are left as a kill would leave them.
    pub stop_after: Option<u64>,
    /// Stop after the first evaluation whose free-running exact match reaches this, leaving
    /// the run as an interrupted one (`--resume` continues it): how the time-to-plan benchmark
    /// measures the steps a recipe needs without training out its whole budget.
    pub until_exact: Option<f64>,
    /// The command that started this invocation, for `command.txt` and the run's lock.
    pub command: String,
    /// `--set` overrides given with `--resume` (already applied to the config): recorded in
    /// `command.txt`, and the run's `config.toml` is rewritten with them.
    pub resume_overrides: Vec<String>,
}

/// What a finished (or stopped) run leaves.
#[derive(Debug)]
pub struct Outcome {
    /// Steps done.
    pub step: u64,
    /// The last evaluation, if one ran.
    pub report: Option<EvalReport>,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Sequences trained on in this invocation.
    pub sequences: u64,
    /// Tokens in those sequences (prompt and target; padding not counted).
    pub tokens: u64,
    /// Wall-clock seconds of the training steps alone: drawing each batch and the step itself,
    /// without setup, evaluations and checkpoints.
    pub training_seconds: f64,
}

impl Outcome {
    /// Training throughput of this invocation, sequences and tokens per second (data loading and
    /// evaluation included): printed, never written to `metrics.jsonl`, which holds no
    /// wall-clock value.
    pub fn throughput(&self) -> (f64, f64) {
        let s = self.seconds.max(1e-9);
        (self.sequences as f64 / s, self.tokens as f64 / s)
    }

    /// Sequences per second of the training steps alone (`training_seconds`): the figure to
    /// compare objectives' and builds' speed by, which a run's evaluation (the same work
    /// whatever the objective) would otherwise dilute.
    pub fn training_throughput(&self) -> f64 {
        self.sequences as f64 / self.training_seconds.max(1e-9)
    }
}

/// Starts a run in `run` (which must not hold checkpoints yet) or, with `resume`, continues it
/// from its latest checkpoint. `config` is the resolved config when resuming.
pub fn train<B: AutodiffBackend>(
    config: &RunConfig,
    run: &Path,
    resume: bool,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<Outcome> {
    let started = Instant::now();
    let loaded = config.data.load(&config.task, true).context("loading the data")?;
    let (task, train, test) = (loaded.task, loaded.train, loaded.test);
    if train.is_empty() {
        bail!("the training split is empty");
    }
    let needed = eval::needed_positions(task.as_ref(), &train).max(eval::needed_positions(task.as_ref(), &test));
    let model_config = config.model.resolve(task.vocab().len(), needed)?;
    let cx = BuildContext::<B> { task: task.as_ref(), train: &train, model: &model_config, device };
    let objective = config.objective.build::<B>(&cx).context("building the objective")?;
    let mut eval_options = config.eval.clone();
    eval_options.teacherless |= objective.teacherless_eval();
    // Periodic evaluations skip pass@k (n generations per prompt); the last one runs it.
    let periodic_options = eval_options.without_pass_at_k();
    let memory = eval::TrainingTargets::new(task.as_ref(), &train);
    let mut sampler =
        StepSampler::new(&config.sampler, task.as_ref(), &train, &test, config.schedule.batch_size, config.seeds.data)?;

    // The products' precision is process-wide: set it either way, so that a run after a bf16
    // run in the same process (tests, sweeps) is f32 unless it asks. Only the CPU backend's
    // kernels read it; GPU backends run burn's products and ignore it.
    let bf16 = config.model.bf16_products.unwrap_or(false);
    let bf16_on = bf16 && kernels::serves::<B>();
    kernels::set_bf16_products(bf16_on).map_err(|e| anyhow::anyhow!("model.bf16_products: {e}"))?;
    if let (true, Some(kernel)) = (bf16_on, kernels::bf16_kernel()) {
        // Runs reproduce bit for bit only on CPUs that run the same kernel: say which this is.
        eprintln!("bf16 products on the {kernel} kernel");
    }

    let mut resolved = config.clone();
    resolved.model = ModelSection::from_resolved(config.model.preset, &model_config);
    resolved.model.bf16_products = bf16.then_some(true); // written only when on
    let meta = |step, health| CheckpointMeta {
        step,
        model: model_config.clone(),
        task: config.task.clone(),
        data: config.data.clone(),
        objective: config.objective.name().to_string(),
        teacherless: eval_options.teacherless,
        reads: if objective.decodes_forward() { Direction::Forward } else { Direction::Reverse },
        files: BTreeMap::new(),
        health: Some(health),
        decoder: objective.decoder_kind(),
    };

    let opt = &config.optimizer;
    let mut optim = AdamW::new(opt).init::<B, LabModel<B>>();

    // Everything above can fail without a trace on disk; from here on the run directory is
    // written, under its lock, for the rest of the run.
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let _lock = run_dir::lock(run, &options.command)?;
    let (mut model, start): (LabModel<B>, u64) = if resume {
        let point = run_dir::resume_point(run)?;
        for why in &point.passed_over {
            eprintln!("passing over {why}");
        }
        let checkpoint = point.checkpoint;
        if checkpoint.meta.model != model_config {
            bail!("the checkpoint's model differs from the one the run's config resolves to");
        }
        if let Some(to) = run_dir::set_aside_after(run, checkpoint.step)? {
            eprintln!("resuming from step {}; later checkpoints moved to {}", checkpoint.step, to.display());
        }
        let gpt = run_dir::load_gpt::<B>(&checkpoint, device)?;
        let model = LabModel { gpt, heads: load_heads(objective.as_ref(), &checkpoint, device)? };
        optim = optim.load_record(run_dir::load_part::<B, _>(&checkpoint, Part::Optim, device)?);
        truncate_metrics(&RunDir(run).metrics(), checkpoint.step)?;
        let mut text = std::fs::read_to_string(RunDir(run).command()).unwrap_or_default();
        text.push_str(&format!("resumed at step {}: {}", checkpoint.step, options.command));
        if !options.resume_overrides.is_empty() {
            text.push_str(&format!("overrides: {}\n", options.resume_overrides.join(" ")));
            run_dir::write_atomic(&RunDir(run).config(), resolved.to_toml().as_bytes())?;
        }
        run_dir::write_atomic(&RunDir(run).command(), text.as_bytes())?;
        (model, checkpoint.step)
    } else {
        if !run_dir::checkpoints(run)?.is_empty() {
            bail!("{} already holds checkpoints; continue it with --resume, or choose another --out", run.display());
        }
        std::fs::create_dir_all(RunDir(run).checkpoints()).with_context(|| format!("creating {}", run.display()))?;
        run_dir::write_atomic(&RunDir(run).config(), resolved.to_toml().as_bytes())?;
        run_dir::write_atomic(&RunDir(run).command(), options.command.as_bytes())?;
        let path = RunDir(run).metrics();
        File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let host = BuildContext::<Host> { task: task.as_ref(), train: &train, model: &model_config, device: &HOST };
        let host_objective = config.objective.build::<Host>(&host).context("building the objective on the host")?;
        let model =
            initial_model(config.seeds.model, &model_config, host_objective.as_ref(), objective.as_ref(), device)?;
        (model, 0)
    };

    let schedule = &config.schedule;
    let metrics_path = RunDir(run).metrics();
    let mut metrics = OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let bar = progress_bar(options.progress, schedule.steps, start);
    let pad = task.vocab().dummy();
    let mut window = Window::default();
    let mut report = None;
    let (mut sequences, mut tokens) = (0u64, 0u64);
    let mut training_seconds = 0.0;
    let mut cost = match run_dir::Cost::read(run)? {
        Some(cost) if resume && cost.step == start => cost,
        _ => run_dir::Cost { step: start, from_step: start, ..Default::default() },
    };
    cost.threads = kernels::par::threads();
    cost.device = format!("{device:?}");

    for step in start..schedule.steps {
        let step_started = Instant::now();
        let products_before = kernels::multiply_adds();
        let lr = schedule.lr(opt.lr, step);
        let examples = sampler.examples(step);
        sequences += examples.len() as u64;
        tokens += examples.iter().map(|e| e.tokens.len() as u64).sum::<u64>();
        let rows: Vec<&Example> = examples.iter().collect();
        let batch = Batch::<B>::new(&rows, pad, device);
        let (next, stats) = train_step(model, &mut optim, objective.as_ref(), &batch, step, lr, opt.grad_clip);
        model = next;
        let step_seconds = step_started.elapsed().as_secs_f64();
        training_seconds += step_seconds;
        cost.step = step + 1;
        cost.sequences += examples.len() as u64;
        cost.training_seconds += step_seconds;
        cost.multiply_adds += kernels::multiply_adds() - products_before;
        let StepStats { loss: value, values, grad_norm } = stats;
        if !value.is_finite() {
            bar.abandon();
            bail!(diverged(run, &format!("the loss became {value} at step {}", step + 1)));
        }

        let done = step + 1;
        window.add(value, &values, grad_norm);
        if done % schedule.log_every == 0 || done == schedule.steps {
            let mut line = window.take();
            line.insert("train/lr".into(), json!(lr));
            // Sequences seen so far (nominal: structured batches leave out the rare variant that
            // is a test instance), the budget unit of the planning experiments.
            line.insert("train/sequences".into(), json!(done * schedule.batch_size as u64));
            write_metrics(&mut metrics, &metrics_path, done, line)?;
        }
        let last = done == schedule.steps;
        let evaluates = objective.decodes_forward();
        if evaluates && (last || (schedule.eval_every > 0 && done % schedule.eval_every == 0)) {
            let options = if last { &eval_options } else { &periodic_options };
            let decoder = objective.decoder(&model).valid();
            let r = eval::evaluate(&decoder, task.as_ref(), &test, &memory, options);
            write_metrics(
                &mut metrics,
                &metrics_path,
                done,
                r.metrics().into_iter().map(|(k, v)| (k, json!(v))).collect(),
            )?;
            let scored =
                Scored { test: "the run's test split".into(), examples: options.scored(test.len()), of: test.len() };
            eval::files::write_report(run, done, &scored, bf16_on, &r)?;
            bar.set_message(format!("loss {value:.4} | free exact {:.3}", r.free.exact));
            report = Some(r);
        } else if done % schedule.log_every == 0 {
            let free =
                report.as_ref().map_or(String::new(), |r: &EvalReport| format!(" | free exact {:.3}", r.free.exact));
            bar.set_message(format!("loss {value:.4}{free}"));
        }
        if last || (schedule.checkpoint_every > 0 && done % schedule.checkpoint_every == 0) {
            let health = Health::new(value, max_abs_weight(&model));
            if let Some(problem) = health.problem() {
                bar.abandon();
                bail!(diverged(run, &format!("at step {done} {problem}; that checkpoint was not written")));
            }
            save_checkpoint(&model, objective.as_ref(), &optim, run, meta(done, health))?;
            cost.write(run)?;
        }
        bar.set_position(done);
        let reached = options.until_exact.is_some_and(|t| report.as_ref().is_some_and(|r| r.free.exact >= t));
        if options.stop_after == Some(done) || reached {
            bar.abandon();
            let seconds = started.elapsed().as_secs_f64();
            return Ok(Outcome { step: done, report, seconds, sequences, tokens, training_seconds });
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(Outcome { step: schedule.steps.max(start), report, seconds, sequences, tokens, training_seconds })
}

/// The run's initial weights, drawn on the host: the GPT first (so that its weights do not
/// depend on the objective's heads), then the heads, on flex under the model seed, then moved to
/// `device`. Every backend thus starts from the weights the CPU run starts from: each backend's
/// own generator draws different numbers from the same seed.
fn initial_model<B: AutodiffBackend>(
    seed: u64,
    model_config: &GptConfig,
    host_objective: &dyn Objective<Host>,
    objective: &dyn Objective<B>,
    device: &B::Device,
) -> Result<LabModel<B>> {
    // The shell on the device is built inside the lock too: its own draws are overwritten, but
    // drawn outside the lock they would interleave with another thread's seeded draws.
    let (drawn, shell) = models::seeded::<Host, _>(seed, &HOST, || {
        let drawn = LabModel { gpt: model_config.init(&HOST), heads: host_objective.init_heads(&HOST) };
        let _ = drawn.num_params(); // materialise the heads' lazy parameters inside the lock
        let shell = LabModel { gpt: model_config.init(device), heads: objective.init_heads(device) };
        let _ = shell.num_params();
        (drawn, shell)
    });
    models::transfer(drawn, shell, device).context("moving the initial weights to the device")
}

/// What one optimizer step measured.
pub struct StepStats {
    /// The total loss of the batch.
    pub loss: f64,
    /// Its named parts and the objective's other statistics, keyed as in `metrics.jsonl`
    /// (`train/loss.<part>`, `train/<stat>`).
    pub values: Vec<(String, f64)>,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One optimizer step: loss, backward, global-norm clipping, AdamW. A non-finite loss is
/// returned as measured; the caller decides what to do (the model is updated all the same, so
/// callers that stop on NaN must not save it).
pub fn train_step<B: AutodiffBackend, O: Optimizer<LabModel<B>, B>>(
    model: LabModel<B>,
    optim: &mut O,
    objective: &dyn Objective<B>,
    batch: &Batch<B>,
    step: u64,
    lr: f64,
    grad_clip: f64,
) -> (LabModel<B>, StepStats) {
    let loss = objective.loss(&model, batch, step);
    let value: f64 = loss.total.clone().into_scalar().elem();
    let scalar = |t: &burn::tensor::Tensor<B, 1>| -> f64 { t.clone().into_scalar().elem() };
    let parts = loss.parts.iter().map(|(n, t)| (format!("train/loss.{n}"), scalar(t)));
    let values = parts.chain(loss.stats.iter().map(|(n, t)| (format!("train/{n}"), scalar(t)))).collect();
    let mut grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let grad_norm = clip_grad_norm::<B, _>(&model, &mut grads, grad_clip);
    let model = optim.step(lr, model, grads);
    (model, StepStats { loss: value, values, grad_norm })
}

/// The error of a run that diverged: what happened, and the truth about what it can continue
/// from (its newest checkpoint with a finite loss and finite, bounded weights).
fn diverged(run: &Path, what: &str) -> String {
    let advice = "lower optimizer.lr or raise schedule.warmup_steps";
    match run_dir::resume_point(run) {
        Ok(point) => format!(
            "{what}. The run stopped; its last good checkpoint is step {} (finite loss, weights within {MAX_GOOD_WEIGHT:e}). \
             Continue from there with, e.g., `trainer train --resume {} --set optimizer.lr=...` ({advice}; \
             --resume accepts optimizer.* and schedule.* overrides), or start again",
            point.checkpoint.step,
            run.display()
        ),
        Err(_) => format!("{what}. The run stopped before writing a good checkpoint: {advice}, then start it again"),
    }
}

/// The largest weight magnitude of a model (a NaN anywhere makes it NaN).
pub fn max_abs_weight<B: Backend, M: Module<B>>(model: &M) -> f64 {
    struct MaxAbs(f64);
    impl<B: Backend> ModuleVisitor<B> for MaxAbs {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let m: f64 = param.val().abs().max().into_scalar().elem();
            self.0 = if m.is_nan() || self.0.is_nan() { f64::NAN } else { self.0.max(m) };
        }
    }
    let mut v = MaxAbs(0.0);
    model.visit(&mut v);
    v.0
}

/// The objective's heads saved with `checkpoint` (`None` for objectives without heads). Built
/// lazily, so the record replaces their initialisers before any draw.
pub fn load_heads<B: AutodiffBackend>(
    objective: &dyn Objective<B>,
    checkpoint: &Checkpoint,
    device: &B::Device,
) -> Result<Option<Heads<B>>> {
    let Some(heads) = objective.init_heads(device) else { return Ok(None) };
    let record = run_dir::load_part::<B, _>(checkpoint, Part::Heads, device)?;
    Ok(Some(heads.load_record(record)))
}

/// Writes the GPT, the heads and the optimizer state, each under a temporary name renamed into
/// place, then the sidecar with their sums, which marks the checkpoint complete.
fn save_checkpoint<B: AutodiffBackend, O: Optimizer<LabModel<B>, B>>(
    model: &LabModel<B>,
    objective: &dyn Objective<B>,
    optim: &O,
    run: &Path,
    mut meta: CheckpointMeta,
) -> Result<()> {
    let stem = run_dir::checkpoint_stem(run, meta.step);
    let mut files = vec![run_dir::save_part::<B, _>(model.gpt.clone().into_record(), &stem, Part::Model)?];
    if let Some(heads) = &model.heads {
        files.push(run_dir::save_part::<B, _>(heads.clone().into_record(), &stem, Part::Heads)?);
    }
    if let Decoder::BeliefState(_, decoder) = objective.decoder(model) {
        files.push(run_dir::save_part::<B, _>(decoder.into_record(), &stem, Part::Decoder)?);
    }
    files.push(run_dir::save_part::<B, _>(optim.to_record(), &stem, Part::Optim)?);
    meta.files = files.into_iter().collect();
    run_dir::write_sidecar(&meta, &stem)
}

/// Drops metric lines written after `step` (a killed run may have logged past its last
/// checkpoint; the resumed run writes them again).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let s = serde_json::from_str::<MetricsLine>(&line).ok().map(|l| l.step);
        if s.is_some_and(|s| s <= step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    run_dir::write_atomic(path, kept.as_bytes()).map(|_| ())
}

fn write_metrics(out: &mut File, path: &Path, step: u64, values: Map<String, Value>) -> Result<()> {
    let line = MetricsLine { step, values };
    writeln!(out, "{}", line.to_json())
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))
}

/// Means of training values over the steps since the last log line.
#[derive(Default)]
struct Window {
    n: usize,
    loss: f64,
    values: Vec<(String, f64)>,
    grad_norm: f64,
}

impl Window {
    fn add(&mut self, loss: f64, values: &[(String, f64)], grad_norm: f64) {
        if self.values.is_empty() {
            self.values = values.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
        }
        for (acc, (_, v)) in self.values.iter_mut().zip(values) {
            acc.1 += v;
        }
        self.n += 1;
        self.loss += loss;
        self.grad_norm += grad_norm;
    }

    fn take(&mut self) -> Map<String, Value> {
        let n = self.n.max(1) as f64;
        let mut m = Map::new();
        m.insert("train/loss".into(), json!(self.loss / n));
        for (key, v) in &self.values {
            m.insert(key.clone(), json!(v / n));
        }
        m.insert("train/grad_norm".into(), json!(self.grad_norm / n));
        *self = Window::default();
        m
    }
}

fn progress_bar(show: bool, steps: u64, start: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}, {per_sec}]")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_position(start);
    bar
}
