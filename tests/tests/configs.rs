//! Every shipped config parses, names a buildable task and resolves to a valid model, and every
//! shipped sweep expands (each of its runs resolved), so that a documented command never dies on
//! its own config.

use std::path::PathBuf;

use trainer::RunConfig;

#[test]
fn every_shipped_config_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("sweeps")) {
                continue; // sweep files: below
            } else if path.extension().is_some_and(|e| e == "toml") {
                let config = RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                let task = config.task.build().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config.model.resolve(task.vocab().len(), 1).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "found only {seen} configs");
}

#[test]
fn every_shipped_sweep_expands() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("configs/sweeps")).unwrap() {
        let path = entry.unwrap().path();
        // Sweep files name configs relative to the repository root, where they are run from;
        // the test runs elsewhere, so the paths are made absolute in a copy.
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("config = \"configs/", &format!("config = \"{}/configs/", root.display()));
        let copy = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let plan = trainer::sweep::Plan::load(&copy, Some(&tmp.path().join("out")))
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(plan.runs.len() >= 3, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "found only {seen} sweeps");
}
