//! The trainer's command line: bad input gets a one-line error, never a panic; a short run
//! writes a complete run directory.

use assert_cmd::Command;

fn fails(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `trainer train --quiet --config CONFIG --out OUT`.
fn train(config: &std::path::Path, out: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("trainer").unwrap();
    cmd.args(["train", "--quiet", "--config"]).arg(config).arg("--out").arg(out);
    cmd
}

const CONFIG: &str = r#"
[task]
task = "path-star"
degree = 2
path_len = 3
nodes = 8
[data]
train = 200
test = 20
[model]
d_model = 32
d_ff = 64
[schedule]
steps = 6
batch_size = 8
warmup_steps = 2
log_every = 2
eval_every = 0
checkpoint_every = 0
"#;

#[test]
fn bad_configs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let trainer = || {
        let mut c = Command::cargo_bin("trainer").unwrap();
        c.current_dir(dir.path()).args(["train", "--quiet", "--config"]).arg(&path);
        c
    };
    for (set, why) in [
        ("optimizer.momentum=0.9", "unknown field `momentum`"),
        ("task.nodes=3", "needs at least d(l-1)+1"),
        ("model.n_heads=5", "must divide d_model"),
        ("schedule.steps=0", "steps, batch_size and log_every must be positive"),
    ] {
        let err = fails(trainer().args(["--set", set]));
        assert!(err.contains(why), "{set}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let err = fails(Command::cargo_bin("trainer").unwrap().args(["train", "--config", "missing.toml"]));
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn a_short_run_writes_a_complete_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let run = dir.path().join("run");
    train(&path, &run).assert().success();
    for file in
        ["config.toml", "command.txt", "metrics.jsonl", "eval.json", "failures.txt", "checkpoints/step_000006.json"]
    {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["step"], 6);
    assert_eq!(eval["examples"], 20);
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn a_backend_this_build_lacks_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let err = fails(
        Command::cargo_bin("trainer")
            .unwrap()
            .args(["train", "--config"])
            .arg(&path)
            .args(["--device", "wgpu-cpu", "--out"])
            .arg(dir.path().join("run")),
    );
    assert!(err.contains("built without the wgpu backend") && err.contains("--features wgpu"), "{err}");
    let err = fails(Command::cargo_bin("trainer").unwrap().args(["train", "--device", "tpu"]));
    assert!(err.contains("tpu"), "{err}");
}

/// Results do not depend on how many threads the kernels use (`models::par`): a run large enough
/// to split its products, attention, LayerNorms and AdamW among threads logs and evaluates the
/// same on one thread as on three.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let config = CONFIG
        .replace("path_len = 3\nnodes = 8", "path_len = 5\nnodes = 50")
        .replace("d_model = 32\nd_ff = 64", "d_model = 128\nd_ff = 512")
        .replace("batch_size = 8", "batch_size = 64");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let run = |threads: &str| {
        let out = dir.path().join(format!("run-{threads}"));
        train(&path, &out).env("LAB_THREADS", threads).assert().success();
        // Every logged loss and gradient norm to the last digit, and the evaluation of the final
        // weights. (Checkpoint files differ byte-wise between any two processes: they hold
        // parameter ids drawn at random.)
        let read = |file: &str| std::fs::read_to_string(out.join(file)).unwrap();
        (read("metrics.jsonl"), read("eval.json"))
    };
    assert_eq!(run("1"), run("3"));
}
