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

/// Results do not depend on how many threads the kernels use (`kernels::par`): a run large enough
/// to split its products, attention, LayerNorms and AdamW among threads logs and evaluates the
/// same on one thread as on three; with bf16 products too, where the CPU has them.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let config = CONFIG
        .replace("path_len = 3\nnodes = 8", "path_len = 5\nnodes = 50")
        .replace("d_model = 32\nd_ff = 64", "d_model = 128\nd_ff = 512")
        .replace("batch_size = 8", "batch_size = 64");
    let dir = tempfile::tempdir().unwrap();
    let mut precisions = vec![("f32", config.clone())];
    if kernels::bf16_supported() {
        precisions.push(("bf16", config.replace("[model]\n", "[model]\nbf16_products = true\n")));
    }
    for (precision, config) in precisions {
        let path = dir.path().join(format!("{precision}.toml"));
        std::fs::write(&path, config).unwrap();
        let run = |threads: &str| {
            let out = dir.path().join(format!("run-{precision}-{threads}"));
            train(&path, &out).env("LAB_THREADS", threads).assert().success();
            // Every logged loss and gradient norm to the last digit, and the evaluation of the
            // final weights. (Checkpoint files differ byte-wise between any two processes: they
            // hold parameter ids drawn at random.)
            let read = |file: &str| std::fs::read_to_string(out.join(file)).unwrap();
            (read("metrics.jsonl"), read("eval.json"), read("config.toml"))
        };
        let one = run("1");
        assert_eq!(one.2.contains("bf16_products = true"), precision == "bf16", "{precision}: {}", one.2);
        assert_eq!(one, run("3"), "{precision}");
    }
}

/// `trainer train --quiet --config CONFIG --out OUT` with `sets` as `--set` overrides, in `dir`.
fn config_with(dir: &std::path::Path, replace: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = CONFIG.to_string();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `trainer train --quiet --resume RUN` with `sets` as `--set` overrides.
fn resume(run: &std::path::Path, sets: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("trainer").unwrap();
    cmd.args(["train", "--quiet", "--resume"]).arg(run);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd
}

fn latest_step(run: &std::path::Path) -> Option<u64> {
    lab_core::run_dir::checkpoints(run).unwrap().last().map(|c| c.0)
}

/// Two trainers on one run directory: the second is refused (and leaves the first's
/// `command.txt` alone); a killed trainer leaves no lock behind, and its run resumes, with
/// optimizer and schedule overrides recorded.
#[test]
fn a_run_directory_has_one_writer_and_outlives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(
        dir.path(),
        &[("steps = 6", "steps = 100000000"), ("checkpoint_every = 0", "checkpoint_every = 4")],
    );
    let run = dir.path().join("run");
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("trainer"))
        .args(["train", "--quiet", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(&run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while latest_step(&run).is_none() {
        assert!(started.elapsed().as_secs() < 300, "the first trainer wrote no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let command = std::fs::read_to_string(run.join("command.txt")).unwrap();
    let err = fails(&mut train(&path, &run));
    assert!(err.contains("is in use by pid") && err.contains("trainer train"), "{err}");
    assert_eq!(std::fs::read_to_string(run.join("command.txt")).unwrap(), command);
    let err = fails(&mut resume(&run, &[]));
    assert!(err.contains("is in use by pid"), "{err}");

    first.kill().unwrap(); // SIGKILL: no clean-up of any kind
    first.wait().unwrap();
    let step = latest_step(&run).unwrap();
    let err = fails(&mut resume(&run, &["model.d_model=64"]));
    assert!(err.contains("only optimizer.* and schedule.*"), "{err}");
    resume(&run, &[&format!("schedule.steps={}", step + 2), "optimizer.lr=0.0005"]).assert().success();
    assert_eq!(latest_step(&run), Some(step + 2));
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains(&format!("steps = {}", step + 2)) && config.contains("lr = 0.0005"), "{config}");
    let command = std::fs::read_to_string(run.join("command.txt")).unwrap();
    assert!(
        command.contains(&format!("resumed at step {step}")) && command.contains("overrides: schedule.steps="),
        "{command}"
    );
}

/// A damaged checkpoint is passed over on resume, saying so, and the run continues from the
/// newest intact one.
#[test]
fn resume_falls_back_to_the_newest_intact_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(dir.path(), &[("steps = 6", "steps = 8"), ("checkpoint_every = 0", "checkpoint_every = 4")]);
    let run = dir.path().join("run");
    train(&path, &run).assert().success();
    let file = run.join("checkpoints/step_000008-optim.mpk");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = resume(&run, &[]).assert().success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("passing over checkpoint step 8") && stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("resuming from step 4"), "{stderr}");
    // The damaged checkpoint is kept aside, and step 8 is written again.
    assert!(run.join("checkpoints/set-aside-after-000004/step_000008-optim.mpk").is_file());
    assert_eq!(latest_step(&run), Some(8));
}

/// A run that diverges stops and tells the truth about what it can continue from; the advised
/// path (`--resume` with a lower learning rate) works.
#[test]
fn a_diverging_run_says_where_it_can_continue_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(dir.path(), &[("checkpoint_every = 0", "checkpoint_every = 2")]);
    let run = dir.path().join("from-the-start");
    let err = fails(train(&path, &run).args(["--set", "optimizer.lr=1e20"]));
    assert!(err.contains("before writing a good checkpoint"), "{err}");
    assert_eq!(latest_step(&run), None, "no diverged checkpoint is written");

    let run = dir.path().join("later");
    train(&path, &run).args(["--set", "schedule.steps=4"]).assert().success();
    let err = fails(&mut resume(&run, &["schedule.steps=12", "optimizer.lr=1e20"]));
    assert!(err.contains("last good checkpoint is step 4") && err.contains("--resume"), "{err}");
    assert_eq!(latest_step(&run), Some(4));
    resume(&run, &["schedule.steps=12", "optimizer.lr=1e-3"]).assert().success();
    assert_eq!(latest_step(&run), Some(12));
}

/// A start that fails (here: a test file that does not exist) leaves no directory behind.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(dir.path(), &[("test = 20", "test_file = \"missing.txt\"")]);
    let run = dir.path().join("run");
    let err = fails(&mut train(&path, &run));
    assert!(err.contains("missing.txt"), "{err}");
    assert!(!run.exists());
}
