//! Regression bands of every objective beyond NTP on the Pitfalls graph G(2,4,10), from the
//! shipped configs shortened to 600 steps (the MI schedules scaled to match: stage 2 or the end
//! of the ramp at step 300). Each band is what the seeded run reaches here (docs/log/2026-11.md, 2026-11-27);
//! a change that moves a run out of its band changed what the objective does. Besides the
//! decoding scores, each test bounds the objective's own term, so that a broken head or a
//! detached loss shows even where the decoding scores do not move.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use eval::EvalReport;
use trainer::{RunConfig, TrainOptions};

type B = Autodiff<Flex>;

/// Trains `configs/path-star/<config>` for 600 steps in `dir/<config>`; returns the final
/// evaluation and the last logged training values.
fn run(dir: &Path, config: &str, extra: &[String]) -> (EvalReport, HashMap<String, f64>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/path-star").join(config);
    let mut overrides: Vec<String> =
        ["schedule.steps=600", "schedule.eval_every=0", "eval.examples=1000"].iter().map(|s| s.to_string()).collect();
    overrides.extend_from_slice(extra);
    overrides.extend(setting_overrides());
    let config = RunConfig::load(&path, &overrides).unwrap();
    let out = dir.join(path.file_stem().unwrap());
    let options = TrainOptions { progress: false, stop_after: None, ..Default::default() };
    let outcome = trainer::train::<B>(&config, &out, false, &FlexDevice, &options).unwrap();
    let report = outcome.report.expect("the last step evaluates");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last = metrics.lines().rev().find(|l| l.contains("train/loss")).unwrap();
    let values: HashMap<String, f64> = serde_json::from_str::<HashMap<String, serde_json::Value>>(last)
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
        .collect();
    eprintln!("{config:?}\n{}{values:?}", report.table());
    (report, values)
}

/// Overrides from `LAB_TEST_OVERRIDES` (space-separated `key=value`) for every run: the bands
/// re-measured under a setting, e.g. `LAB_TEST_OVERRIDES=model.bf16_products=true` (LOG.md,
/// 2026-12-02). Unset in CI.
fn setting_overrides() -> Vec<String> {
    std::env::var("LAB_TEST_OVERRIDES").unwrap_or_default().split_whitespace().map(str::to_string).collect()
}

/// Asserts free-running exact match, decision-token accuracy and Clever-Hans rate bands, and
/// each named training value's band.
fn check(
    name: &str,
    (r, values): &(EvalReport, HashMap<String, f64>),
    exact: Range<f64>,
    decision: Range<f64>,
    clever_hans: Range<f64>,
    terms: &[(&str, Range<f64>)],
) {
    let d = r.path_star.as_ref().unwrap();
    assert!(exact.contains(&r.free.exact), "{name}: free-running exact match {} not in {exact:?}", r.free.exact);
    assert!(decision.contains(&d.decision), "{name}: decision-token accuracy {} not in {decision:?}", d.decision);
    assert!(clever_hans.contains(&d.clever_hans), "{name}: Clever-Hans rate {} not in {clever_hans:?}", d.clever_hans);
    for (key, band) in terms {
        let v = values[&format!("train/{key}")];
        assert!(band.contains(&v), "{name}: train/{key} = {v} not in {band:?}");
    }
}

fn mi_schedule() -> Vec<String> {
    vec!["objective.stage1_steps=300".into(), "objective.ramp_steps=300".into()]
}

#[test]
fn mtp_independent_heads_learn_their_offsets_and_still_cheat() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mtp.toml", &[]);
    // Head 2 predicts the token after next: from the decision position that is two unknown
    // steps ahead, so its loss stays above head 4's (the goal, named in the prompt).
    check("mtp", &r, 0.42..0.62, 0.42..0.62, 0.95..1.01, &[("loss.mtp2", 0.45..0.70), ("loss.mtp4", 0.15..0.30)]);
}

#[test]
fn mtp_sequential_modules_learn_and_still_cheat() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mtp-sequential.toml", &[]);
    check(
        "mtp-sequential",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("loss.mtp2", 0.17..0.30), ("loss.mtp3", 0.15..0.28)],
    );
}

#[test]
fn fsp_bag_of_words_slows_the_cheat() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "fsp-bow.toml", &[]);
    // At 600 steps the cheat has not fully formed (NTP's Clever-Hans rate is 1.0 by then).
    check("fsp-bow", &r, 0.20..0.37, 0.35..0.53, 0.75..0.93, &[("loss.bow", 0.60..0.90)]);
}

#[test]
fn fsp_learned_summary_regresses_the_reverse_lm_and_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "fsp-summary.toml", &[]);
    check(
        "fsp-summary",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("loss.summary", 0.15..0.27), ("loss.reverse_lm", 0.70..0.95)],
    );
}

#[test]
fn mi_two_stage_raises_the_bound_then_trains_on_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi.toml", &mi_schedule());
    check(
        "mi",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", 3.8..4.7), ("reward_gt", 0.97..1.0), ("lambda_rl", 0.999..1.001), ("lambda_infonce", 0.0..1e-9)],
    );
}

#[test]
fn mi_infonce_only_approaches_the_log_k_ceiling_and_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-infonce.toml", &mi_schedule());
    // K = 192 positions with a future per batch of 64: log K = 5.258, the bound's ceiling.
    check(
        "mi-infonce",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", 4.5..5.26), ("mi_log_k", 5.25..5.26), ("loss.infonce", 0.2..0.6)],
    );
}

#[test]
fn mi_token_rl_only_leaves_the_bound_at_chance_and_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-token-rl.toml", &mi_schedule());
    // The scorer is never trained without InfoNCE: its bound stays below zero.
    check(
        "mi-token-rl",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", -3.0..0.0), ("loss.rollout", 0.35..0.65), ("reward_gt", 0.97..1.0)],
    );
}

#[test]
fn mi_joint_moves_its_weights_and_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-joint.toml", &mi_schedule());
    check(
        "mi-joint",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", 3.7..4.6), ("lambda_infonce", 0.0099..0.0101), ("lambda_rl", 0.999..1.001)],
    );
}

#[test]
fn mi_future_tokens_summary_cannot_see_the_prompt_and_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-future-tokens.toml", &mi_schedule());
    // In-batch negatives (K = 192) and a summary of the future tokens alone: the bound is what
    // the tokens x_(t+1..t+4) say about h_t, far below scheme B's (which read the prompt).
    // Measured: bound 2.02 nats of 5.26 (scheme B's mi.toml: 3.8-4.7 at the same step).
    check(
        "mi-future-tokens",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", 1.6..2.5), ("mi_log_k", 5.25..5.26), ("reward_gt", 0.97..1.0)],
    );
}

#[test]
fn mi_counterfactual_negatives_are_the_other_arm() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-counterfactual.toml", &mi_schedule());
    // K = d = 2: the bound's ceiling is log 2 = 0.693, reached only by a state that knows the
    // arm; the decision's reward is split between the goal's arm and the other.
    // Measured at 600 steps: bound 0.21 of 0.693 nats (over every position with a future, most of
    // them after the arm is read), and the ground truth's bonus (λ_gt = 0.5) keeps 0.99 of the
    // decision's reward on the goal's arm: the reward adds little beyond NTP there.
    check(
        "mi-counterfactual",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[
            ("mi_bound", 0.1..0.35),
            ("mi_log_k", 0.693..0.694),
            ("decision_reward_arm", 0.95..1.0),
            ("decision_reward_other_arms", 0.0..0.03),
        ],
    );
}

#[test]
fn mi_scheme_a_trains_its_reverse_lm_and_contrasts_the_other_arm() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "mi-scheme-a.toml", &mi_schedule());
    // Measured at 600 steps: exact 0.512, bound 0.18 of 0.693 nats (0.26 while the reverse LM
    // still read the goal first: a leak, fixed), the reverse LM at 0.86 nats a token (it must
    // guess the prompt's edges from their right; it reads the path well).
    check(
        "mi-scheme-a",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("mi_bound", 0.10..0.30), ("mi_log_k", 0.693..0.694), ("loss.reverse_lm", 0.75..0.95)],
    );
}

#[test]
fn avatarl_with_an_ntp_critic_still_cheats() {
    let dir = tempfile::tempdir().unwrap();
    // The critic: the NTP run of the Pitfalls band test, trained here.
    run(dir.path(), "ntp.toml", &[]);
    let critic = format!("objective.critic_run={}", dir.path().join("ntp").display());
    let r = run(dir.path(), "avatarl.toml", &[critic]);
    // The ground truth always carries the capped reward (1.5); the action set has 4-5 tokens.
    check(
        "avatarl",
        &r,
        0.42..0.62,
        0.42..0.62,
        0.95..1.01,
        &[("reward_gt", 1.49..1.51), ("action_set", 4.0..5.0), ("loss.avatarl", 0.03..0.12)],
    );
}

#[test]
fn bst_trains_its_text_head_and_evaluation_decodes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "bst.toml", &[]);
    // At 600 steps (38,400 sequences) BST is still learning to walk the graph (Clever-Hans rate
    // 0.92, teacher-forced position 3 at 0.84); it plans only from ~6,000 steps on (the ignored
    // test below). G(2,4,10) has 10 pairs a sequence (t from the `=` on, gaps of at least 2).
    check(
        "bst",
        &r,
        0.25..0.40,
        0.33..0.46,
        0.85..0.97,
        &[("loss.next", 0.50..0.60), ("loss.prev", 0.58..0.70), ("pairs", 639.5..640.5)],
    );
    assert_eq!(r.0.decoder, models::DecoderKind::BeliefState);
    // The checkpoint decodes the same way when evaluation loads it from disk: the sidecar names
    // the decoder and its part holds the text head and the empty suffix's state.
    let run_dir = dir.path().join("bst");
    let checkpoint = lab_core::run_dir::latest(&run_dir).unwrap();
    assert_eq!(checkpoint.meta.decoder, models::DecoderKind::BeliefState);
    let decoder = eval::decode::load_decoder::<Flex>(&checkpoint, &FlexDevice).unwrap();
    let config = RunConfig::load(&run_dir.join("config.toml"), &[]).unwrap();
    let loaded = config.data.load(&config.task, true).unwrap();
    let train = eval::TrainingTargets::new(loaded.task.as_ref(), &loaded.train);
    let again = eval::evaluate(&decoder, loaded.task.as_ref(), &loaded.test, &train, &config.eval);
    assert_eq!(again.free, r.0.free);
    assert_eq!(again.forced, r.0.forced);
}

#[test]
fn next_lat_predicts_its_latents_at_600_steps() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), "next-lat.toml", &[]);
    // The latent and self-distillation terms slow next-token learning at first: at 600 steps
    // NextLat has not yet reached NTP's cheat (NTP: exact 0.5, Clever-Hans 1.0 by then). Each
    // rollout step's terms are bounded, so a detached or broken transition model shows.
    check(
        "next-lat",
        &r,
        0.10..0.22,
        0.22..0.34,
        0.72..0.86,
        &[
            ("loss.latent1", 0.04..0.09),
            ("loss.latent2", 0.06..0.12),
            ("loss.kl1", 0.05..0.10),
            ("loss.kl2", 0.04..0.09),
            ("loss.ntp", 0.62..0.74),
        ],
    );
}
