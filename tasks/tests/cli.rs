//! The `tasks` command line as a user meets it: defaults that just work, files that check,
//! identical bytes from identical seeds, and one-line errors for bad input.

use std::fs;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

fn tasks(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("tasks").unwrap();
    cmd.current_dir(dir);
    cmd
}

/// Runs a command that must fail and returns its stderr, checking that it is a short error,
/// not a panic.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    stderr
}

#[test]
fn gen_path_star_with_no_arguments_writes_the_paper_dataset() {
    let dir = TempDir::new().unwrap();
    tasks(dir.path())
        .args(["gen", "path-star"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 200000 train + 20000 test path-star G(2,5,50) examples"));
    let data = dir.path().join("data/path-star/deg_2_path_5_nodes_50_seed_0");
    let test = data.join("deg_2_path_5_nodes_50_test_20000.txt");
    assert_eq!(fs::read_to_string(&test).unwrap().lines().count(), 20_000);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["task"]["task"], "path-star");
    assert_eq!(manifest["vocab"].as_array().unwrap().len(), 54);
    assert_eq!(manifest["splits"]["train"]["examples"], 200_000);
    assert_eq!(manifest["splits"]["test"]["sha256"].as_str().unwrap().len(), 64);
    tasks(dir.path())
        .args(["check"])
        .arg(&test)
        .assert()
        .success()
        .stdout(predicate::str::contains("20000 examples of path-star G(2,5,50), all valid, checksum matches"));
}

#[test]
fn every_task_generates_files_that_check_and_show() {
    let dir = TempDir::new().unwrap();
    for task in ["path-star", "key-recall", "prefix-function", "graph-walk", "sibling", "triangle", "circle", "line"] {
        let out = dir.path().join(task);
        tasks(dir.path())
            .args(["gen", task, "--train", "300", "--test", "50", "--seed", "3", "--out"])
            .arg(&out)
            .assert()
            .success();
        for entry in fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "manifest.json" {
                continue;
            }
            tasks(dir.path()).arg("check").arg(&path).assert().success().stdout(predicate::str::contains("all valid"));
            tasks(dir.path()).args(["show", "-n", "2", "--file"]).arg(&path).assert().success();
        }
        tasks(dir.path()).args(["show", task, "-n", "2"]).assert().success();
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = TempDir::new().unwrap();
    let generate = |name: &str, seed: &str, format: &str| {
        let out = dir.path().join(name);
        tasks(dir.path())
            .args([
                "gen",
                "graph-walk",
                "--train",
                "2000",
                "--test",
                "200",
                "--seed",
                seed,
                "--format",
                format,
                "--out",
            ])
            .arg(&out)
            .assert()
            .success();
        (fs::read(out.join("train.jsonl")).unwrap(), fs::read(out.join("manifest.json")).unwrap())
    };
    let a = generate("a", "7", "jsonl");
    assert_eq!(a, generate("b", "7", "jsonl"));
    assert_ne!(a.0, generate("c", "8", "jsonl").0);
}

#[test]
fn ntf_format_is_for_path_star_only() {
    let dir = TempDir::new().unwrap();
    let err = fails(tasks(dir.path()).args(["gen", "sibling", "--format", "ntf", "--train", "5", "--test", "5"]));
    assert!(err.contains("ntf format is for path-star only"), "{err}");
}

#[test]
fn impossible_graphs_are_refused_in_one_line() {
    let dir = TempDir::new().unwrap();
    for (args, why) in [
        (vec!["--degree", "2", "--path-len", "5", "--nodes", "8"], "needs at least d(l-1)+1 = 9 nodes"),
        (vec!["--degree", "0"], "degree must be at least 1"),
        (vec!["--path-len", "1"], "path length must be at least 2"),
    ] {
        let err = fails(tasks(dir.path()).args(["gen", "path-star"]).args(&args));
        assert!(err.contains(why), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn unknown_tasks_and_flags_are_usage_errors() {
    let dir = TempDir::new().unwrap();
    let err = fails(tasks(dir.path()).args(["gen", "maze"]));
    assert!(err.contains("unrecognized subcommand 'maze'"), "{err}");
    let err = fails(tasks(dir.path()).args(["gen", "path-star", "--colour", "red"]));
    assert!(err.contains("unexpected argument '--colour'"), "{err}");
    let err = fails(tasks(dir.path()).args(["gen", "path-star", "--nodes", "many"]));
    assert!(err.contains("invalid value 'many'"), "{err}");
}

#[test]
fn unwritable_output_is_an_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let err = fails(
        tasks(dir.path()).args(["gen", "path-star", "--train", "10", "--test", "10", "--out"]).arg(file.join("sub")),
    );
    assert!(err.starts_with("error: ") && err.contains("a-file/sub"), "{err}");
}

#[test]
fn malformed_ntf_lines_are_reported_with_their_line_numbers() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("deg_2_path_5_nodes_50_test_3.txt");
    fs::write(
        &file,
        "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12\n\
         32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,3,19,47,28\n\
         garbage\n",
    )
    .unwrap();
    let out = tasks(dir.path()).arg("check").arg(&file).assert().failure().get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("_test_3.txt:2: target: ends at 28, not at the goal 12"), "{stderr}");
    assert!(stderr.contains("_test_3.txt:3: missing `/`"), "{stderr}");
    assert!(String::from_utf8(out.stdout).unwrap().contains("1 valid and 2 bad lines"));
}

#[test]
fn check_needs_to_know_the_task() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("mystery.txt");
    fs::write(&file, "1,2/1,2=1,2\n").unwrap();
    let err = fails(tasks(dir.path()).arg("check").arg(&file));
    assert!(err.contains("cannot tell which task wrote"), "{err}");
    // Naming the task works.
    tasks(dir.path())
        .arg("check")
        .arg(&file)
        .args(["path-star", "--degree", "1", "--path-len", "2", "--nodes", "3"])
        .assert()
        .success();
    let err = fails(tasks(dir.path()).args(["check", "no-such-file.txt"]));
    assert!(err.contains("no such file"), "{err}");
}

#[test]
fn a_changed_file_fails_its_checksum() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("d");
    tasks(dir.path()).args(["gen", "circle", "--train", "20", "--test", "5", "--out"]).arg(&out).assert().success();
    let test = out.join("test.jsonl");
    let mut lines: Vec<String> = fs::read_to_string(&test).unwrap().lines().map(String::from).collect();
    lines.swap(0, 1);
    fs::write(&test, lines.join("\n") + "\n").unwrap();
    let err = fails(tasks(dir.path()).arg("check").arg(&test));
    assert!(err.contains("checksum differs"), "{err}");
}

const NTF_LINE: &str = "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12";

#[test]
fn check_refuses_a_file_without_examples_in_one_line() {
    let dir = TempDir::new().unwrap();
    for (name, text, task, why) in [
        ("empty.jsonl", "", Some("key-recall"), "empty.jsonl: no examples (the file is empty)"),
        ("deg_2_path_5_nodes_50_test_0.txt", "\n\n", None, "_test_0.txt: no examples (only blank lines)"),
    ] {
        let file = dir.path().join(name);
        fs::write(&file, text).unwrap();
        let err = fails(tasks(dir.path()).arg("check").arg(&file).args(task));
        assert!(err.starts_with("error: ") && err.trim_end().ends_with(why), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        let err = fails(tasks(dir.path()).args(["show", "--file"]).arg(&file));
        assert!(err.contains("no examples") || err.contains("cannot tell which task"), "{err}");
    }
}

#[test]
fn check_accepts_blank_lines_at_the_end_only() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("deg_2_path_5_nodes_50_test_2.txt");
    fs::write(&file, format!("{NTF_LINE}\n{NTF_LINE}\n\n")).unwrap();
    tasks(dir.path()).arg("check").arg(&file).assert().success().stdout(predicate::str::contains("2 examples"));
    fs::write(&file, format!("{NTF_LINE}\n\n{NTF_LINE}\n\n")).unwrap();
    let out = tasks(dir.path()).arg("check").arg(&file).assert().failure().get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr, format!("{}:2: blank line (blank lines may only end a file)\n", file.display()));
    assert!(String::from_utf8(out.stdout).unwrap().contains("2 valid and 1 bad lines"));
}

#[test]
fn a_failed_gen_leaves_nothing_behind() {
    let dir = TempDir::new().unwrap();
    // G(1,2,2) has two instances: the test split is written before the training split fails.
    let err = fails(
        tasks(dir.path())
            .args(["gen", "path-star", "-d", "1", "-l", "2", "-N", "2", "--train", "10", "--test", "50"])
            .args(["--out", "new/data"]),
    );
    assert!(err.contains("too few distinct instances"), "{err}");
    assert!(!dir.path().join("new").exists());
    // The same with the default output directory.
    fails(tasks(dir.path()).args([
        "gen",
        "path-star",
        "-d",
        "1",
        "-l",
        "2",
        "-N",
        "2",
        "--train",
        "10",
        "--test",
        "50",
    ]));
    assert!(!dir.path().join("data").exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn os_errors_are_reported_once() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    for args in [
        vec!["show", "--file", "deg_2_path_5_nodes_50_test_9.txt"],
        vec!["gen", "path-star", "--train", "10", "--test", "10", "--out", "a-file/sub"],
    ] {
        let err = fails(tasks(dir.path()).args(&args));
        assert_eq!(err.matches("os error").count(), 1, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
