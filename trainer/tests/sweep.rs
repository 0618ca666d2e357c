//! Sweeps: grid expansion, clear errors for bad sweep files, the Slurm export of a 2×2 grid
//! (golden files), and a real sweep run twice through the CLI: the second pass skips what the
//! first finished and resumes what was interrupted.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use lab_core::sweep::{Manifest, RunStatus};
use trainer::sweep::Plan;

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
preset = "tiny"
d_model = 32
d_ff = 64
[schedule]
steps = 6
batch_size = 8
warmup_steps = 2
log_every = 2
eval_every = 0
checkpoint_every = 4
[eval]
examples = 20
pass_at_k = { prompts = 4, samples = 4 }
"#;

/// A temporary directory with `ntp.toml` (the config above) and `teacherless.toml`.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ntp.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join("teacherless.toml"),
        CONFIG.replace("[schedule]", "[objective]\nkind = \"teacherless\"\n[schedule]"),
    )
    .unwrap();
    dir
}

fn sweep_file(dir: &Path, body: &str) -> PathBuf {
    let body = body.replace("$DIR", &dir.display().to_string());
    let path = dir.join("sweep.toml");
    std::fs::write(&path, body).unwrap();
    path
}

const GRID_2X2: &str = r#"
name = "grid"
seeds = [0]
[set]
"schedule.steps" = 4
[grid]
"optimizer.lr" = [1e-3, 3e-3]
"task.nodes" = [8, 10]
[[runs]]
config = "$DIR/ntp.toml"
"#;

#[test]
fn a_grid_expands_into_every_combination_and_seed() {
    let ws = workspace();
    let file = sweep_file(
        ws.path(),
        &GRID_2X2.replace("seeds = [0]", "seeds = [0, 1]").replace(
            "[[runs]]",
            "[[runs]]\nconfig = \"$DIR/teacherless.toml\"\nname = \"tl\"\nseeds = [5]\ngrid = false\n\
             set = { \"data.test_file\" = \"{sweep}/ntp-lr0.001-nodes8-s0/test.jsonl\" }\n[[runs]]",
        ),
    );
    let file = sweep_file(ws.path(), &std::fs::read_to_string(&file).unwrap());
    // A sweep directory with a quote in its name: `{sweep}` goes in as a TOML string, escaped.
    let out = ws.path().join("o\"ut");
    let plan = Plan::load(&file, Some(&out)).unwrap();
    let names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tl-s5",
            "ntp-lr0.001-nodes8-s0",
            "ntp-lr0.001-nodes8-s1",
            "ntp-lr0.001-nodes10-s0",
            "ntp-lr0.001-nodes10-s1",
            "ntp-lr0.003-nodes8-s0",
            "ntp-lr0.003-nodes8-s1",
            "ntp-lr0.003-nodes10-s0",
            "ntp-lr0.003-nodes10-s1",
        ]
    );
    let r = &plan.runs[4];
    assert_eq!((r.group.as_str(), r.seed, r.steps), ("ntp-lr0.001-nodes10", 1, 4));
    assert_eq!(
        r.overrides,
        ["schedule.steps=4", "optimizer.lr=0.001", "task.nodes=10", "seeds.model=1", "seeds.data=1", "data.seed=1"]
    );
    // (TOML writes a string holding `"` as a literal string, in single quotes.)
    let test_file = out.join("ntp-lr0.001-nodes8-s0/test.jsonl").display().to_string();
    assert_eq!(
        plan.runs[0].overrides,
        [
            "schedule.steps=4".to_string(),
            format!("data.test_file='{test_file}'"),
            "seeds.model=5".into(),
            "seeds.data=5".into(),
            "data.seed=5".into()
        ]
    );
    // tl reads a run of the grid, so it comes in a second phase.
    assert_eq!(plan.runs[0].after, ["ntp-lr0.001-nodes8-s0"]);
    assert_eq!(plan.phases().unwrap(), vec![(1..9).collect::<Vec<_>>(), vec![0]]);
    // Slurm cannot take whitespace in its output path.
    let spaced = Plan::load(&file, Some(&ws.path().join("o ut"))).unwrap();
    let err = format!("{:#}", spaced.slurm(Path::new("/t"), Path::new("/r")).unwrap_err());
    assert!(err.contains("whitespace"), "{err}");
}

#[test]
fn seeds_vary_the_data_unless_the_sweep_fixes_it() {
    let ws = workspace();
    let out = ws.path().join("out");
    let seeds = GRID_2X2.replace("seeds = [0]", "seeds = [0, 1]");
    let varied = Plan::load(&sweep_file(ws.path(), &seeds), Some(&out)).unwrap();
    let fixed = format!("fixed_data = true\n{}", seeds.replace("[grid]", "\"data.seed\" = 7\n[grid]"));
    let fixed = Plan::load(&sweep_file(ws.path(), &fixed), Some(&out)).unwrap();
    for (v, f) in varied.runs.iter().zip(&fixed.runs) {
        let data_seed = |r: &trainer::sweep::PlannedRun| {
            let c = trainer::RunConfig::load(&r.config, &r.overrides).unwrap();
            (c.data.seed, c.seeds.model, c.seeds.data)
        };
        assert_eq!(data_seed(v), (v.seed, v.seed, v.seed), "{}", v.name);
        assert_eq!(data_seed(f), (7, f.seed, f.seed), "{}", f.name);
    }
}

#[test]
fn a_run_trained_under_another_config_is_not_resumed_into_the_sweep() {
    let ws = workspace();
    let out = ws.path().join("out");
    let plan = Plan::load(&sweep_file(ws.path(), GRID_2X2), Some(&out)).unwrap();
    let run = &plan.runs[0];
    // The run's directory as a trainer leaves it, first as planned, then trained on another
    // split than the seed list asks for.
    let mut trained = trainer::RunConfig::load(&run.config, &run.overrides).unwrap();
    std::fs::create_dir_all(out.join(&run.name)).unwrap();
    trained.schedule.steps = 99; // a resume may change the schedule: not a conflict
    std::fs::write(out.join(&run.name).join("config.toml"), trained.to_toml()).unwrap();
    plan.prepare(&Default::default()).unwrap();
    trained.data.seed = 3;
    std::fs::write(out.join(&run.name).join("config.toml"), trained.to_toml()).unwrap();
    let e = format!("{:#}", plan.prepare(&Default::default()).unwrap_err());
    assert!(e.contains("was trained with data.seed = 3, but the sweep now plans 0"), "{e}");
}

#[test]
fn bad_sweep_files_are_clear_errors() {
    let ws = workspace();
    let out = ws.path().join("out");
    let err = |body: &str| {
        let file = sweep_file(ws.path(), body);
        format!("{:#}", Plan::load(&file, Some(&out)).unwrap_err())
    };
    // An unknown key in the grid names the run, the key and the config.
    let e = err(&GRID_2X2.replace("optimizer.lr", "optimizer.learning_rate"));
    assert!(e.contains("sweep run ntp-learning_rate0.001-nodes8-s0") && e.contains("learning_rate"), "{e}");
    let e = err(&GRID_2X2.replace("[grid]", "[grid]\n\"task.degree\" = 3"));
    assert!(e.contains("task.degree must be a non-empty list"), "{e}");
    let e = err(&GRID_2X2.replace("\"task.nodes\" = [8, 10]", "\"seeds.model\" = [1, 2]"));
    assert!(e.contains("seeds come from the sweep's `seeds` list"), "{e}");
    // The seed list sets data.seed unless the sweep fixes the data.
    let e = err(&GRID_2X2.replace("[grid]", "\"data.seed\" = 3\n[grid]"));
    assert!(e.contains("data.seed: the sweep's `seeds` list sets it") && e.contains("fixed_data = true"), "{e}");
    let e = err(&format!("{GRID_2X2}[[runs]]\nconfig = \"$DIR/ntp.toml\"\n"));
    assert!(e.contains("two runs are named ntp-lr0.001-nodes8-s0"), "{e}");
    let e = err(&format!("{GRID_2X2}set = {{ \"objective.kind\" = \"{{sweep}}/nothing-s0\" }}\n"));
    assert!(e.contains("reads {sweep}/nothing-s0, which this sweep does not define"), "{e}");
    let e = err("seeds = [0]\n[[runs]]\nconfig = \"$DIR/ntp.toml\"\nlr = 3\n");
    assert!(e.contains("not a sweep file") && e.contains("lr"), "{e}");
    let e = err("[[runs]]\nconfig = \"$DIR/missing.toml\"\n");
    assert!(e.contains("missing.toml"), "{e}");
    // A name is a directory inside the sweep's: nothing that would write elsewhere.
    let e = err("seeds = [0]\n[[runs]]\nname = \"../../escaped\"\nconfig = \"$DIR/ntp.toml\"\n");
    assert!(e.contains("run name \"../../escaped-s0\"") && e.contains("only letters"), "{e}");
    let e = err("name = \"../up\"\nseeds = [0]\n[[runs]]\nconfig = \"$DIR/ntp.toml\"\n");
    assert!(e.contains("sweep name \"../up\""), "{e}");
    assert!(!ws.path().parent().unwrap().join("escaped-s0").exists());
    // At least one run at a time.
    let file = sweep_file(ws.path(), GRID_2X2);
    let out = Command::cargo_bin("trainer").unwrap().args(["sweep", "--jobs", "0"]).arg(&file).assert().failure();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("--jobs") && stderr.contains("0"), "{stderr}");
}

#[test]
fn the_slurm_export_of_a_2x2_grid_matches_the_golden_files() {
    let ws = workspace();
    let file = sweep_file(ws.path(), GRID_2X2);
    let plan = Plan::load(&file, Some(Path::new("runs/sweeps/grid"))).unwrap();
    let files = plan.slurm(Path::new("/opt/lab/trainer"), Path::new("/home/me/lab")).unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    assert_eq!(files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["phase1.sh", "submit.sh"]);
    for (name, text) in files {
        let text = text.replace(&ws.path().display().to_string(), "$DIR");
        let path = golden.join(format!("slurm-2x2-{name}"));
        if std::env::var_os("LAB_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} (LAB_BLESS=1 writes it)", path.display()));
        assert_eq!(text, want, "{name} differs from {}", path.display());
    }
}

#[test]
fn a_sweep_skips_finished_runs_and_resumes_interrupted_ones() {
    let ws = workspace();
    let body = r#"
seeds = [0, 1]
[[runs]]
config = "$DIR/ntp.toml"
[[runs]]
config = "$DIR/teacherless.toml"
seeds = [0]
set = { "eval.examples" = 10 }
"#;
    let file = sweep_file(ws.path(), body);
    let out = ws.path().join("out");
    let sweep = || {
        let out = Command::cargo_bin("trainer")
            .unwrap()
            .current_dir(ws.path())
            .args(["sweep", file.to_str().unwrap(), "--jobs", "2", "--out", out.to_str().unwrap()])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    // A dry run lists the runs and writes the manifest, and trains nothing.
    let dry = Command::cargo_bin("trainer")
        .unwrap()
        .current_dir(ws.path())
        .args(["sweep", file.to_str().unwrap(), "--dry-run", "--out", out.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let dry = String::from_utf8(dry).unwrap();
    assert_eq!(dry.lines().filter(|l| l.starts_with("pending ")).count(), 3, "{dry}");
    assert!(Manifest::read(&out).unwrap().runs.iter().all(|r| r.status == RunStatus::Pending));
    assert!(!out.join("ntp-s0").exists());

    let first = sweep();
    assert!(first.contains("3 runs, 0 already done, 3 to run"), "{first}");
    let manifest = Manifest::read(&out).unwrap();
    assert!(manifest.runs.iter().all(|r| r.status == RunStatus::Done), "{manifest:?}");
    assert!(manifest.runs.iter().all(|r| r.result.contains_key("eval/free/exact")));
    let metrics = |name: &str| std::fs::read_to_string(out.join(name).join("metrics.jsonl")).unwrap();
    let (a, b) = (metrics("ntp-s0"), metrics("ntp-s1"));

    // Nothing to do on a second pass.
    let second = sweep();
    assert!(second.contains("3 runs, 3 already done, 0 to run"), "{second}");
    assert_eq!(metrics("ntp-s0"), a);

    // "Interrupt" ntp-s1 after its checkpoint at step 4: it is resumed, and ends as it did.
    for f in ["step_000006.json", "step_000006.mpk", "step_000006-optim.mpk"] {
        std::fs::remove_file(out.join("ntp-s1/checkpoints").join(f)).unwrap();
    }
    assert_eq!(Plan::load(&file, Some(&out)).unwrap().manifest(&Default::default()).runs[1].status, RunStatus::Started);
    let third = sweep();
    assert!(third.contains("3 runs, 2 already done, 1 to run") && third.contains("done: ntp-s1"), "{third}");
    assert_eq!(metrics("ntp-s1"), b);
    assert!(std::fs::read_to_string(out.join("ntp-s1/command.txt")).unwrap().contains("resumed"));
}
