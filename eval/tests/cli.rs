//! `eval RUN_DIR` on a run directory written by hand through the contract of `eval::run_dir`
//! (the trainer is not linked here, as in the crate itself).

use assert_cmd::Command;
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use eval::run_dir::{CheckpointMeta, checkpoint_stem};
use models::GptConfig;
use tasks::TaskSpec;
use tasks::dataset::DataSpec;
use tasks::path_star::PathStarParams;

/// A run directory written by hand: `config.toml`, and a checkpoint at `step` of a small random
/// model (`max_seq_len` positions) with its sidecar, for G(2,3,8) with `test` test examples.
fn write_run(dir: &std::path::Path, config: &str, max_seq_len: usize, step: u64, test: u64) -> std::path::PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::write(run.join("config.toml"), config).unwrap();
    let model = GptConfig::tiny(12, max_seq_len).with_d_model(32).with_d_ff(64);
    let stem = checkpoint_stem(&run, step);
    models::checkpoint::save_model(&model.init_seeded::<Flex>(step, &FlexDevice), &stem).unwrap();
    let meta = CheckpointMeta {
        step,
        model,
        task: TaskSpec::PathStar(PathStarParams { degree: 2, path_len: 3, nodes: 8, reverse: false }),
        data: DataSpec { train: 0, test, ..Default::default() },
        objective: "ntp".into(),
        teacherless: false,
    };
    std::fs::write(stem.with_extension("json"), serde_json::to_string(&meta).unwrap()).unwrap();
    run
}

#[test]
fn evaluates_the_latest_checkpoint_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    // 15 prompt tokens and 3 target tokens: 17 inputs at most.
    let run = write_run(dir.path(), "[eval]\nexamples = 30\nteacherless = true\n", 17, 7, 40);

    let out = Command::cargo_bin("eval").unwrap().arg(&run).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("at step 7") && out.contains("teacherless") && out.contains("Clever-Hans"), "{out}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!((eval["step"].as_u64(), eval["examples"].as_u64()), (Some(7), Some(30)));
    assert!(std::fs::read_to_string(run.join("failures.txt")).unwrap().len() > 10);
}

#[test]
fn refuses_what_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::cargo_bin("eval").unwrap().arg(dir.path().join("nothing")).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: ") && err.contains("is not a run directory"), "{err}");
    let out = Command::cargo_bin("eval").unwrap().arg(dir.path()).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("holds no complete checkpoint"), "{err}");
}

#[test]
fn a_test_file_too_long_for_the_model_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "", 10, 1, 5);
    let out = Command::cargo_bin("eval").unwrap().arg(&run).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("needs 17 positions but the model has 10"), "{err}");
}

#[test]
fn set_overrides_the_runs_eval_options_and_bad_ones_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "[eval]\nexamples = 20\n", 17, 3, 20);

    let eval = |sets: &[&str]| {
        let mut cmd = Command::cargo_bin("eval").unwrap();
        cmd.arg(&run);
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.assert()
    };
    let out = eval(&["pass_at_k.prompts=5", "pass_at_k.samples=4", "pass_at_k.sampling.top_k=3"]).success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(out.contains("pass@k (5 prompts x 4 samples, temperature 1, top-k 3)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["pass_at_k"]["pass_at"].as_array().unwrap().len(), 4);
    assert!(json["diversity"].is_null() && json["distance"].is_null());

    for (set, says) in [
        ("pass_at_k.sampling.top_p=0", "top_p must be in (0, 1]"),
        ("pass_at_k.sampling.temperature=-1", "temperature must be"),
        ("pass_at_k.smaples=3", "smaples"),
    ] {
        let out = eval(&[set]).failure();
        let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        assert!(err.starts_with("error: ") && err.contains(says), "{set}: {err}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_this_build_lacks_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "", 17, 1, 5);
    let out = Command::cargo_bin("eval")
        .unwrap()
        .arg(&run)
        .args(["--device", "cuda"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("eval was built without the cuda backend") && err.contains("--features cuda"), "{err}");
}
