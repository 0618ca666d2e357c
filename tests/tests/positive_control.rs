//! The positive control, on every change: a planner that passes 0.95 free-running exact match
//! where NTP, trained the same way on the same data for as many sequences, stays at 1/d. Without
//! it nothing in the default suite would notice that planning broke (the bands in
//! `objectives.rs` stop at 600 steps, before any planner has planned).
//!
//! The default suite runs the cheapest setting the search found (LOG.md, 2026-12-07 (fifth
//! session); configs/sweeps/ladder-g2310.toml and control-search.toml): FSP's bag-of-words summary
//! on NTF's smallest graph, G(2,3,10), at 192k sequences, about a CPU-minute per run. On
//! generated splits, as here, it passed 0.95 in 3 seeds of 3 by 160k sequences (the time-to-plan
//! benchmark); on NTF's test file, whose held-out graphs change the training set, in 2 of 3
//! (0.997 / 0.915 / 1.000). No setting was found that is
//! within about three CPU-minutes: where planners are fast (path length 3), NTP finds the one-hop
//! shortcut soon after (one seed of three by 256k sequences at width 64, all three by 64k at
//! width 128); where NTP stays stuck (path length 4), nothing tried made BST plan in fewer than
//! about 500k sequences (a higher learning rate, fresh examples, width 128, 8 nodes).
//!
//! The long control, BST on G(2,4,10) at its planning budget of 768k sequences, is ignored: over
//! ten minutes in the test profile. `cargo test -p tests --test positive_control -- --ignored`.

use std::path::PathBuf;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use eval::EvalReport;
use trainer::{RunConfig, TrainOptions};

type B = Autodiff<Flex>;

/// Trains `configs/path-star/<config>` with `overrides`, without intermediate evaluations.
fn train(config: &str, overrides: &[&str]) -> EvalReport {
    let dir = tempfile::tempdir().unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/path-star").join(config);
    let overrides: Vec<String> = ["schedule.eval_every=0", "schedule.checkpoint_every=0"]
        .iter()
        .chain(overrides)
        .map(|s| s.to_string())
        .collect();
    let config = RunConfig::load(&path, &overrides).unwrap();
    let options = TrainOptions { progress: false, ..Default::default() };
    let outcome = trainer::train::<B>(&config, dir.path(), false, &FlexDevice, &options).unwrap();
    let report = outcome.report.expect("the last step evaluates");
    eprintln!("{}\n{}", path.display(), report.table());
    report
}

/// The planner passes 0.95 free-running exact on the whole test split; NTP stays at 1/d, and for
/// the Clever-Hans reason: every step after the decision is right when forced, the decision is a
/// coin flip.
fn check(planner: &str, plans: &EvalReport, ntp: &EvalReport) {
    assert_eq!((plans.examples, ntp.examples), (2000, 2000), "the whole test split is scored");
    assert!(plans.free.exact >= 0.95, "{planner}: free-running exact {}", plans.free.exact);
    assert!((ntp.free.exact - 0.5).abs() <= 0.05, "NTP: free-running exact {}", ntp.free.exact);
    let cheat = ntp.path_star.as_ref().expect("path-star diagnostics");
    assert!(cheat.clever_hans >= 0.95 && (cheat.decision - 0.5).abs() <= 0.05, "NTP: {cheat:?}");
}

#[test]
#[ignore = "over ten minutes on two cores; run with --ignored"]
fn bst_plans_the_pitfalls_graph_where_ntp_cheats_at_768k_sequences() {
    let steps = ["schedule.steps=12000"];
    check("BST", &train("bst.toml", &steps), &train("ntp.toml", &steps));
}

/// The cheap control: FSP's bag-of-words summary on NTF's smallest graph, G(2,3,10), at 192k
/// sequences (3,000 steps), where the ladder's first rung had it at 0.997 / 0.915 / 1.000 over
/// three seeds and NTP at 0.466 in all three (LOG.md, 2026-12-07 (fifth session)). Seed 0.
#[test]
fn fsp_bow_plans_the_smallest_ntf_graph_where_ntp_cheats_at_192k_sequences() {
    let rung = ["task.path_len=3", "schedule.steps=3000"];
    check("FSP-BoW", &train("fsp-bow.toml", &rung), &train("ntp.toml", &rung));
}
