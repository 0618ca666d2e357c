//! Every shipped config parses, names a buildable task and resolves to a valid model, so that a
//! documented command never dies on its own config.

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
