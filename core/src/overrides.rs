//! `--set key=value`: one override of a TOML table, as the trainer's config loader, the
//! evaluator's `[eval]` options and the sweep's `[set]` apply them.

use anyhow::{Context, Result, bail};

/// Applies one `--set key=value` to a TOML table: dotted keys reach into sections (created when
/// absent), and the value is read as TOML (a bare word that is not TOML is taken as a string).
/// Errors are one line that names the key.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment:?}: expected key=value, e.g. optimizer.lr=3e-4"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {assignment:?}: {key:?} is not a key (expected e.g. optimizer.lr)");
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, path) = parts.split_last().expect("split gives at least one part");
    let mut node = table;
    for p in path {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("--set {key:?}: {p:?} is not a section"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dotted_keys_reach_into_sections_and_values_are_toml() {
        let mut t = toml::Table::new();
        apply_override(&mut t, "optimizer.lr=3e-4").unwrap();
        apply_override(&mut t, "task.kind=path-star").unwrap();
        apply_override(&mut t, "eval.pass_at_k.samples=8").unwrap();
        assert_eq!(t["optimizer"]["lr"].as_float(), Some(3e-4));
        assert_eq!(t["task"]["kind"].as_str(), Some("path-star"));
        assert_eq!(t["eval"]["pass_at_k"]["samples"].as_integer(), Some(8));
    }

    #[test]
    fn malformed_assignments_are_one_line_errors() {
        let mut t: toml::Table = toml::from_str("lr = 1.0").unwrap();
        for bad in ["lr", "=3", ".lr=3", "a..b=1", "lr.x=1"] {
            let err = format!("{:#}", apply_override(&mut t, bad).unwrap_err());
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::overrides::tests::cases(), ..ProptestConfig::default() })]

        /// Arbitrary assignments never panic: they apply or give one line.
        #[test]
        fn arbitrary_assignments_never_panic(key in ".{0,12}", raw in ".{0,24}") {
            let mut t: toml::Table = toml::from_str("[optimizer]\nlr = 1.0\n").unwrap();
            if let Err(e) = apply_override(&mut t, &format!("{key}={raw}")) {
                let msg = format!("{e:#}");
                prop_assert!(!msg.contains('\n'), "{}", msg);
            }
        }
    }

    /// Cases per property: `PROPTEST_CASES` when set (the long run:
    /// `PROPTEST_CASES=1000000 cargo test -p lab-core --release never_panic`), else 50,000, so
    /// that each parser meets 10^5 cases (two properties each) in the default suite.
    pub(crate) fn cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
    }
}
