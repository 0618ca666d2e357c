//! The training loop end to end on CPU: same config and seeds give identical metrics, a killed
//! and resumed run gives the metrics of an uninterrupted one, a diverging run stops cleanly.

use std::path::Path;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use trainer::{RunConfig, TrainOptions};

type B = Autodiff<Flex>;

/// A small, fast run: G(2,3,8), a 2-layer 32-wide model, 30 steps, evaluated and saved midway.
fn small_config(dir: &Path, extra: &[&str]) -> RunConfig {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        r#"
[task]
task = "path-star"
degree = 2
path_len = 3
nodes = 8

[data]
train = 500
test = 50
seed = 1

[model]
preset = "tiny"
d_model = 32
d_ff = 64

[schedule]
steps = 30
batch_size = 16
warmup_steps = 5
log_every = 5
eval_every = 10
checkpoint_every = 10

[eval]
examples = 50
"#,
    )
    .unwrap();
    RunConfig::load(&path, &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn quiet() -> TrainOptions {
    TrainOptions { progress: false, stop_after: None, ..Default::default() }
}

fn metrics(run: &Path) -> String {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap()
}

#[test]
fn same_config_and_seeds_give_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), &[]);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    trainer::train::<B>(&config, &a, false, &FlexDevice, &quiet()).unwrap();
    trainer::train::<B>(&config, &b, false, &FlexDevice, &quiet()).unwrap();
    let m = metrics(&a);
    assert_eq!(m.lines().count(), 6 + 3, "a line per 5 steps and per evaluation:\n{m}");
    assert!(m.contains("\"eval/path_star/clever_hans\""));
    assert_eq!(m, metrics(&b));
    // Another model seed gives another run.
    let c = dir.path().join("c");
    trainer::train::<B>(&small_config(dir.path(), &["seeds.model=1"]), &c, false, &FlexDevice, &quiet()).unwrap();
    assert_ne!(m, metrics(&c));
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), &[]);
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    trainer::train::<B>(&config, &whole, false, &FlexDevice, &quiet()).unwrap();
    // "Killed" at step 15: after the checkpoint at 10 and five more logged steps.
    let stopped = TrainOptions { progress: false, stop_after: Some(15), ..Default::default() };
    trainer::train::<B>(&config, &split, false, &FlexDevice, &stopped).unwrap();
    assert!(metrics(&split).contains("\"step\":15"));
    let saved: RunConfig = toml::from_str(&std::fs::read_to_string(split.join("config.toml")).unwrap()).unwrap();
    trainer::train::<B>(&saved, &split, true, &FlexDevice, &quiet()).unwrap();
    assert_eq!(metrics(&whole), metrics(&split));
    assert_eq!(
        std::fs::read_to_string(whole.join("eval.json")).unwrap(),
        std::fs::read_to_string(split.join("eval.json")).unwrap()
    );
    // The cost of the training steps continues from the checkpoint's: the interrupted run's
    // figures cover every step once, like the whole run's (the five steps after the checkpoint
    // that the "kill" lost are not counted twice). Products are counted process-wide and the
    // tests run side by side, so only their presence is checked.
    let cost = |run: &Path| lab_core::run_dir::Cost::read(run).unwrap().expect("cost.json");
    let (c_whole, c_split) = (cost(&whole), cost(&split));
    let steps = config.schedule.steps;
    assert_eq!(
        (c_whole.step, c_whole.from_step, c_whole.sequences),
        (steps, 0, steps * config.schedule.batch_size as u64)
    );
    assert_eq!((c_split.step, c_split.from_step, c_split.sequences), (c_whole.step, 0, c_whole.sequences));
    assert!(c_whole.multiply_adds > 0 && c_split.multiply_adds > 0 && c_whole.training_seconds > 0.0);
    // Starting over in a directory that holds checkpoints is refused.
    let err = trainer::train::<B>(&config, &split, false, &FlexDevice, &quiet()).unwrap_err();
    assert!(format!("{err:#}").contains("--resume"));
}

/// `until_exact` stops at the first evaluation that reaches it (the time-to-plan benchmark's
/// measurement), and not before an evaluation has run.
#[test]
fn a_run_stops_at_the_first_evaluation_that_reaches_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), &["schedule.eval_every=10"]);
    let until = |target: f64, out: &str| {
        let options = TrainOptions { progress: false, until_exact: Some(target), ..Default::default() };
        trainer::train::<B>(&config, &dir.path().join(out), false, &FlexDevice, &options).unwrap()
    };
    let anything = until(0.0, "zero");
    assert_eq!(anything.step, 10, "the first evaluation is at step 10");
    assert_eq!(anything.sequences, 10 * config.schedule.batch_size as u64);
    let unreachable = until(1.5, "never");
    assert_eq!(unreachable.step, config.schedule.steps);
}

/// Objectives with heads save them beside the GPT and resume from them exactly.
#[test]
fn objectives_with_heads_resume_exactly() {
    let cases: [(&str, &[&str]); 6] = [
        ("mtp", &[]),
        ("mtp-sequential", &[]),
        ("fsp-bow", &[]),
        ("fsp-summary", &[]),
        // Stage 2 starts at step 12, between the checkpoint (10) and the stop (15).
        ("mi", &["objective.stage1_steps=12"]),
        ("mi", &["objective.schedule=joint", "objective.ramp_steps=12", "objective.pooler=attention"]),
    ];
    for (kind, extra) in cases {
        let dir = tempfile::tempdir().unwrap();
        let set = format!("objective.kind={kind}");
        let mut sets = vec![set.as_str(), "schedule.steps=20"];
        sets.extend_from_slice(extra);
        let config = small_config(dir.path(), &sets);
        let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
        trainer::train::<B>(&config, &whole, false, &FlexDevice, &quiet()).unwrap();
        assert!(whole.join("checkpoints/step_000010-heads.mpk").is_file(), "{kind}: no heads saved");
        let stopped = TrainOptions { progress: false, stop_after: Some(15), ..Default::default() };
        trainer::train::<B>(&config, &split, false, &FlexDevice, &stopped).unwrap();
        trainer::train::<B>(&config, &split, true, &FlexDevice, &quiet()).unwrap();
        assert_eq!(metrics(&whole), metrics(&split), "{kind}");
        assert!(metrics(&whole).contains("\"eval/free/exact\""), "{kind}: the GPT is evaluated");
    }
}

/// A reverse-lm run trains without forward evaluation, then serves as the frozen summariser of
/// fsp-summary by path; a run of another objective is refused as a summariser.
#[test]
fn a_reverse_lm_run_is_the_frozen_summariser_of_fsp_summary() {
    let dir = tempfile::tempdir().unwrap();
    let reverse = dir.path().join("reverse");
    let config = small_config(dir.path(), &["objective.kind=reverse-lm", "schedule.steps=20"]);
    let outcome = trainer::train::<B>(&config, &reverse, false, &FlexDevice, &quiet()).unwrap();
    assert!(outcome.report.is_none());
    let m = metrics(&reverse);
    assert!(m.contains("train/loss.reverse_lm") && !m.contains("eval/"), "{m}");

    let frozen = format!("objective.reverse_run={}", reverse.display());
    let config = small_config(dir.path(), &["objective.kind=fsp-summary", &frozen, "schedule.steps=20"]);
    let run = dir.path().join("summary");
    let outcome = trainer::train::<B>(&config, &run, false, &FlexDevice, &quiet()).unwrap();
    assert!(outcome.report.is_some());
    let m = metrics(&run);
    assert!(m.contains("train/loss.summary") && !m.contains("reverse_lm"), "{m}");

    let ntp = dir.path().join("ntp");
    trainer::train::<B>(&small_config(dir.path(), &["schedule.steps=10"]), &ntp, false, &FlexDevice, &quiet()).unwrap();
    let wrong = format!("objective.reverse_run={}", ntp.display());
    let config = small_config(dir.path(), &["objective.kind=fsp-summary", &wrong]);
    let err = trainer::train::<B>(&config, &dir.path().join("x"), false, &FlexDevice, &quiet()).unwrap_err();
    assert!(format!("{err:#}").contains("reads left to right (objective \"ntp\")"), "{err:#}");
}

/// The bag-of-words probe reads an fsp-bow run's head and refuses other runs.
#[test]
fn the_bag_probe_reads_a_bow_head() {
    let dir = tempfile::tempdir().unwrap();
    let bow = dir.path().join("bow");
    let config = small_config(dir.path(), &["objective.kind=fsp-bow", "schedule.steps=10"]);
    trainer::train::<B>(&config, &bow, false, &FlexDevice, &quiet()).unwrap();
    let p = analysis::probe::probe_bow::<B>(&bow, 50, &FlexDevice).unwrap();
    // G(2,3,8): targets of 3 nodes, so positions 1 and 2 have a token after the next one.
    assert_eq!(p.counts, [50, 50]);
    assert!(p.exact.iter().all(|r| (0.0..=1.0).contains(r)));
    let ntp = dir.path().join("ntp");
    trainer::train::<B>(&small_config(dir.path(), &["schedule.steps=5"]), &ntp, false, &FlexDevice, &quiet()).unwrap();
    assert!(analysis::probe::probe_bow::<B>(&ntp, 50, &FlexDevice).is_err());
}

/// AvataRL reads its critic, a finished run of another objective, by path.
#[test]
fn avatarl_trains_against_a_frozen_critic() {
    let dir = tempfile::tempdir().unwrap();
    let critic = dir.path().join("critic");
    trainer::train::<B>(&small_config(dir.path(), &["schedule.steps=10"]), &critic, false, &FlexDevice, &quiet())
        .unwrap();
    let set = format!("objective.critic_run={}", critic.display());
    let config = small_config(dir.path(), &["objective.kind=avatarl", &set, "schedule.steps=20"]);
    let run = dir.path().join("avatarl");
    trainer::train::<B>(&config, &run, false, &FlexDevice, &quiet()).unwrap();
    let m = metrics(&run);
    assert!(m.contains("train/loss.avatarl") && m.contains("train/reward_gt") && m.contains("eval/free/exact"), "{m}");
    // Without a critic the objective says what it needs.
    let config = small_config(dir.path(), &["objective.kind=avatarl"]);
    let err = trainer::train::<B>(&config, &dir.path().join("x"), false, &FlexDevice, &quiet()).unwrap_err();
    assert!(format!("{err:#}").contains("critic_run"), "{err:#}");
}

/// A run whose loss becomes NaN stops, writes no checkpoint of the diverged weights and says
/// that none is good (the path with a good checkpoint is `trainer/tests/cli.rs`'s).
#[test]
fn a_diverging_run_stops_with_a_clear_message_and_writes_no_bad_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), &["optimizer.lr=1e30", "optimizer.grad_clip=0", "schedule.warmup_steps=0"]);
    let run = dir.path().join("run");
    let err = format!("{:#}", trainer::train::<B>(&config, &run, false, &FlexDevice, &quiet()).unwrap_err());
    assert!(err.contains("the loss became NaN"), "{err}");
    assert!(err.contains("before writing a good checkpoint"), "{err}");
    assert!(lab_core::run_dir::checkpoints(&run).unwrap().is_empty());
}

/// Every task family goes through the loop and the evaluator (variable-length prompts,
/// end-of-target tokens, triangle's separate test prompts) without an error.
#[test]
fn every_task_family_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    for (i, task) in
        ["key-recall", "prefix-function", "graph-walk", "sibling", "triangle", "circle", "line"].iter().enumerate()
    {
        let mut overrides = vec![
            format!("task={{ task = \"{task}\" }}"),
            "data.train=200".into(),
            "data.test=20".into(),
            "schedule.steps=4".into(),
            "schedule.eval_every=0".into(),
            "eval.examples=20".into(),
        ];
        if matches!(*task, "circle" | "line") {
            overrides.push("task.entities=10".into());
            overrides.push(format!("task.nodes={}", if *task == "circle" { 9 } else { 10 }));
        }
        let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let config = small_config(dir.path(), &refs);
        let outcome = trainer::train::<B>(&config, &dir.path().join(format!("run{i}")), false, &FlexDevice, &quiet())
            .unwrap_or_else(|e| panic!("{task}: {e:#}"));
        let report = outcome.report.unwrap();
        assert_eq!(report.examples, 20, "{task}");
        assert!(report.path_star.is_none());
    }
}

/// The MI analysis of a finished run: one bound per target position with a future, never above
/// log K, the critic learning something, the same numbers on a second pass.
#[test]
fn mi_analysis_reports_a_bound_per_position() {
    use analysis::mi::{MiAnalysisOptions, analyse};

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trainer::train::<B>(&small_config(dir.path(), &[]), &run, false, &FlexDevice, &quiet()).unwrap();
    let options =
        MiAnalysisOptions { k: 8, horizon: 2, summary_dim: 16, steps: 60, examples: 40, ..Default::default() };
    let a = analyse::<B>(&run, &options, &FlexDevice).unwrap();
    // G(2,3,8): 3 target tokens; the states predicting tokens 1 and 2 have a future.
    let positions: Vec<usize> = a.per_position.iter().map(|p| p.position).collect();
    assert_eq!(positions, [1, 2]);
    assert_eq!((a.k, a.step), (8, 30));
    assert!((a.log_k - 8f64.ln()).abs() < 1e-9);
    assert!(a.per_position.iter().all(|p| p.rows == 40 && p.bound <= a.log_k + 1e-9), "{a:?}");
    // A 30-step model's states say little about their future (whether the critic can find
    // information where there is some is a unit test of analysis::mi).
    assert!(a.critic_final_loss <= a.log_k + 1e-3, "{a:?}");
    let peaks: usize = a.peak_tokens.iter().map(|t| t.peaks).sum();
    assert!(peaks <= 40 && !a.peak_tokens.is_empty());
    assert_eq!(a, analyse::<B>(&run, &options, &FlexDevice).unwrap());
    let bad = MiAnalysisOptions { k: 1, ..options };
    assert!(analyse::<B>(&run, &bad, &FlexDevice).unwrap_err().to_string().contains("k >= 2"));
}
