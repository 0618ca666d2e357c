//! `eval RUN_DIR` on a run directory written by hand through the contract of `lab_core::run_dir`
//! (the trainer is not linked here, as in the crate itself).

use assert_cmd::Command;
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::module::Module;
use lab_core::run_dir::{self, CheckpointMeta, Part, checkpoint_stem};
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
    let record = model.init_seeded::<Flex>(step, &FlexDevice).into_record();
    let file = run_dir::save_part::<Flex, _>(record, &stem, Part::Model).unwrap();
    let meta = CheckpointMeta {
        step,
        model,
        task: TaskSpec::PathStar(PathStarParams { degree: 2, path_len: 3, nodes: 8, reverse: false }),
        data: DataSpec { train: 0, test, ..Default::default() },
        objective: "ntp".into(),
        teacherless: false,
        reads: Default::default(),
        files: [file].into_iter().collect(),
        health: None,
        decoder: models::DecoderKind::Gpt,
    };
    run_dir::write_sidecar(&meta, &stem).unwrap();
    run
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn eval_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::cargo_bin("eval").unwrap().args(args).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn evaluates_the_latest_checkpoint_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    // 15 prompt tokens and 3 target tokens: 17 inputs at most.
    let run = write_run(dir.path(), "[eval]\nexamples = 30\nteacherless = true\n", 17, 7, 40);

    let out = Command::cargo_bin("eval").unwrap().arg(&run).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("at step 7") && out.contains("teacherless") && out.contains("Clever-Hans"), "{out}");
    assert!(out.contains("scored 30 of 40 examples of the run's test split"), "{out}");
    // A re-evaluation writes a report of its own, named after what it scored; the training's
    // eval.json is not touched.
    let eval = read_json(&run.join("evals/step_000007-test.json"));
    assert_eq!((eval["step"].as_u64(), eval["examples"].as_u64()), (Some(7), Some(30)));
    assert_eq!((eval["scored"]["examples"].as_u64(), eval["scored"]["of"].as_u64()), (Some(30), Some(40)));
    assert!(std::fs::read_to_string(run.join("evals/step_000007-test-failures.txt")).unwrap().len() > 10);
    assert!(!run.join("eval.json").exists() && !run.join("failures.txt").exists());
}

/// A run trained with bf16 products is re-evaluated with them by default, so that `eval RUN`
/// reproduces the training's own evaluations; `--bf16-products false` evaluates in f32, under a
/// report name of its own, and each report records which. On a CPU without AVX512-BF16 the default is refused in one line that
/// says how to evaluate in f32.
#[test]
fn a_bf16_run_is_evaluated_with_bf16_products_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "[model]\nbf16_products = true\n[eval]\nexamples = 5\n", 17, 3, 10);
    let report = run.join("evals/step_000003-test.json");
    if kernels::bf16_supported() {
        let out = Command::cargo_bin("eval").unwrap().arg(&run).assert().success().get_output().stdout.clone();
        assert!(String::from_utf8(out).unwrap().contains("bf16 products"));
        assert_eq!(read_json(&report)["bf16_products"].as_bool(), Some(true));
    } else {
        let err = eval_fails(&[run.as_os_str()]);
        assert!(err.contains("bf16_products") && err.contains("--bf16-products false"), "{err}");
    }
    let out = Command::cargo_bin("eval")
        .unwrap()
        .arg(&run)
        .args(["--bf16-products", "false"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().contains("f32 products"));
    // Products other than the run's get a report of their own.
    let f32_report = run.join("evals/step_000003-test-f32.json");
    assert_eq!(read_json(&f32_report)["bf16_products"].as_bool(), Some(false));
}

/// `--test-file F` scores F under a name of its own, with the count scored and F's total; an
/// empty F is an error, not a report of zeros.
#[test]
fn a_test_file_gets_its_own_report_with_what_was_scored() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "[eval]\nexamples = 3\n", 17, 2, 10);
    std::fs::write(run.join("eval.json"), "the training's own").unwrap();
    let file = dir.path().join("deg_2_path_3_nodes_8_test_5.txt");
    let lines = "0,1|1,2|0,3|3,4/0,2=0,1,2\n0,1|1,2|0,3|3,4/0,4=0,3,4\n".repeat(2) + "0,1|1,2|0,3|3,4/0,2=0,1,2\n";
    std::fs::write(&file, lines).unwrap();
    let out = Command::cargo_bin("eval").unwrap().arg(&run).arg("--test-file").arg(&file).assert().success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(out.contains("scored 3 of 5 examples of"), "{out}");
    let eval = read_json(&run.join("evals/step_000002-deg_2_path_3_nodes_8_test_5.json"));
    assert_eq!(eval["scored"]["test"].as_str(), Some(file.to_str().unwrap()));
    assert_eq!((eval["scored"]["examples"].as_u64(), eval["scored"]["of"].as_u64()), (Some(3), Some(5)));
    // Other options get another report.
    Command::cargo_bin("eval").unwrap().arg(&run).args(["--examples", "0"]).assert().success();
    let reports: Vec<String> = std::fs::read_dir(run.join("evals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(std::fs::read_to_string(run.join("eval.json")).unwrap(), "the training's own");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = eval_fails(&[run.as_os_str(), "--test-file".as_ref(), empty.as_os_str()]);
    assert!(err.contains("empty.txt"), "{err}");
}

/// Changed or truncated weights are caught by the sidecar's checksum, not scored as a model
/// that predicts nothing; no report is written.
#[test]
fn a_damaged_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "", 17, 4, 5);
    let file = checkpoint_stem(&run, 4).with_extension("mpk");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let err = eval_fails(&[run.as_os_str()]);
    assert!(err.contains("step_000004.mpk has changed since it was written"), "{err}");
    std::fs::write(&file, &bytes[..middle]).unwrap();
    let err = eval_fails(&[run.as_os_str()]);
    assert!(err.contains("truncated"), "{err}");
    assert!(!run.join("evals").exists());
}

#[test]
fn refuses_what_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::cargo_bin("eval").unwrap().arg(dir.path().join("nothing")).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: ") && err.contains("is not a run directory"), "{err}");
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let out = Command::cargo_bin("eval").unwrap().arg(dir.path()).assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("holds no complete checkpoint"), "{err}");
    let err = eval_fails(&[dir.path().as_os_str(), "--step".as_ref(), "3".as_ref()]);
    assert!(err.contains("no complete checkpoint at step 3"), "{err}");
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
    let reports: Vec<_> = std::fs::read_dir(run.join("evals")).unwrap().map(|e| e.unwrap().path()).collect();
    let json = read_json(reports.iter().find(|p| p.to_string_lossy().ends_with(".json")).unwrap());
    assert_eq!(json["pass_at_k"]["pass_at"].as_array().unwrap().len(), 4);
    assert!(json["diversity"].is_null() && json["distance"].is_null());

    for (set, says) in [
        ("pass_at_k.sampling.top_p=0", "top_p must be in (0, 1]"),
        ("pass_at_k.sampling.temperature=-1", "temperature must be"),
        ("pass_at_k.smaples=3", "smaples"),
        ("batch_size=0", "eval.batch_size must be at least 1"),
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

/// `eval export` writes a checkpoint's GPT as safetensors that PyTorch tools open: an 8-byte
/// header length, a JSON header with nanoGPT's names, then the tensors.
#[test]
fn export_writes_safetensors_with_nanogpt_names() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "", 17, 3, 5);
    let out = dir.path().join("model.safetensors");
    Command::cargo_bin("eval").unwrap().args(["export"]).arg(&run).arg("--out").arg(&out).assert().success();
    let bytes = std::fs::read(&out).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let attn = &header["transformer.h.0.attn.c_attn.weight"];
    assert_eq!(attn["shape"], serde_json::json!([96, 32]), "{header}");
    assert_eq!(attn["dtype"], "F32");
    assert!(header["lm_head.weight"].is_object() && header["transformer.wpe.weight"]["shape"][0] == 17);
    // A damaged checkpoint is not exported.
    std::fs::write(checkpoint_stem(&run, 3).with_extension("mpk"), b"garbage").unwrap();
    let err = eval_fails(&["export".as_ref(), run.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert!(err.contains("truncated or damaged"), "{err}");
}
