//! ARCHITECTURE.md's table of layers is the truth about which workspace crate links which: every
//! crate's manifest (`[dependencies]` and `[dev-dependencies]`) names exactly the workspace crates
//! its row lists. A crate that starts to lean on a peer (the evaluator on the trainer, the model on
//! the tasks, lab-core on an objective) fails here until the map is changed, in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The workspace's root (this crate is `tests/` inside it).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace")
}

/// The rows of ARCHITECTURE.md's "## Layers" table: crate → the crates it may link.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text.split("\n## Layers\n").nth(1).expect("a ## Layers section").split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let links = cells[1].split(',').map(str::trim).filter(|c| *c != "—").map(String::from).collect();
        rows.insert(name, links);
    }
    rows
}

/// The workspace crates each member's manifest names (package name → linked workspace crates).
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let members: Vec<String> =
        manifest["workspace"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    let packages: Vec<(String, toml::Table)> = members
        .iter()
        .map(|dir| {
            let text = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
            let table: toml::Table = toml::from_str(&text).unwrap();
            (table["package"]["name"].as_str().unwrap().to_string(), table)
        })
        .collect();
    let names: BTreeSet<String> = packages.iter().map(|(n, _)| n.clone()).collect();
    packages
        .into_iter()
        .map(|(name, table)| {
            let links = ["dependencies", "dev-dependencies"]
                .iter()
                .filter_map(|section| table.get(*section).and_then(|s| s.as_table()))
                .flat_map(|deps| deps.keys().cloned())
                .filter(|dep| names.contains(dep))
                .collect();
            (name, links)
        })
        .collect()
}

#[test]
fn the_crates_link_what_architecture_md_says_and_nothing_else() {
    let (documented, actual) = (documented(), actual());
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md's layers list every workspace crate"
    );
    for (name, links) in &actual {
        assert_eq!(links, &documented[name], "{name}: its manifest links these (left); ARCHITECTURE.md says (right)");
    }
}

/// Objectives never import the evaluator: the loss is the trainer's, the scores the evaluator's.
#[test]
fn objectives_do_not_import_the_evaluator() {
    let mut files = vec![root().join("trainer/src/objective")];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("eval::"), "{} names eval::", path.display());
            checked += 1;
        }
    }
    assert!(checked > 10, "the objectives were found ({checked} files)");
}

#[test]
fn the_layers_hold() {
    let actual = actual();
    // The invariants the table encodes, said once more so that a change to the table itself
    // that breaks one is caught too.
    assert!(actual["tasks"].is_empty() && actual["kernels"].is_empty(), "tasks and kernels stand alone");
    assert!(!actual["models"].contains("tasks"), "the model knows no task");
    assert!(!actual["eval"].contains("trainer"), "the evaluator never links the trainer");
    for base in ["tasks", "kernels", "models", "lab-core", "eval", "trainer"] {
        assert!(!actual[base].contains("analysis"), "{base} links the analyses");
    }
    // tasks is plain data: no burn among its dependencies of any kind.
    let tasks: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("tasks/Cargo.toml")).unwrap()).unwrap();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let deps = tasks.get(section).and_then(|s| s.as_table());
        assert!(deps.is_none_or(|d| !d.keys().any(|k| k.starts_with("burn"))), "tasks links burn ({section})");
    }
}
