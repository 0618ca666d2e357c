//! Fuzzing of the data readers: NTF's line format (path-star's `.txt` files) and JSONL (every
//! task's `.jsonl` files), fed arbitrary bytes and valid files with random damage (bytes flipped,
//! inserted or deleted, separators deleted, the file cut short, numbers replaced by huge or
//! malformed ones, invalid UTF-8, and for JSONL tokens swapped, dropped or moved between prompt
//! and target).
//!
//! The contract, checked on every case for every reader (lenient, strict, head): no panic; every
//! error is one line of text that names the file and, for a bad line, its line number (within
//! the file); the readers agree with each other; and an undamaged file reads back as written.
//!
//! Each property runs 100,000 cases by default. Measured in the dev profile on the lab's
//! two-core machine (busy with other builds at the time, so these are upper bounds): NTF
//! arbitrary bytes 6.5 s, NTF damaged files 29 s, JSONL arbitrary bytes 9 s, JSONL damaged files
//! 37 s, each alone on one thread; the whole file about 57 s with the default two test threads.
//! For a longer run set `PROPTEST_CASES` (cases per property), preferably in release mode, where
//! a million cases each took 72 s for the four together:
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test -p tasks --release --test fuzz
//! ```
//!
//! A failure is shrunk to a small case and its seed saved in `fuzz.proptest-regressions`, which
//! is replayed first on every later run.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tasks::dataset::{self, DataError, Format, LineWriter};
use tasks::path_star::PathStarParams;
use tasks::{Example, Task, TaskSpec, TextExample};

/// Cases per property: `PROPTEST_CASES`, or 100,000.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), ..ProptestConfig::default() }
}

/// Path-star tasks for NTF files: the headline setting, a wide one, the smallest, a reversed one.
fn ntf_tasks() -> &'static [Box<dyn Task>] {
    static TASKS: OnceLock<Vec<Box<dyn Task>>> = OnceLock::new();
    TASKS.get_or_init(|| {
        [(2, 5, 50, false), (5, 5, 50, false), (1, 2, 2, false), (3, 4, 20, true)]
            .into_iter()
            .map(|(degree, path_len, nodes, reverse)| {
                TaskSpec::PathStar(PathStarParams { degree, path_len, nodes, reverse }).build().unwrap()
            })
            .collect()
    })
}

/// Every task of the registry, with its default parameters, for JSONL files.
fn jsonl_tasks() -> &'static [Box<dyn Task>] {
    static TASKS: OnceLock<Vec<Box<dyn Task>>> = OnceLock::new();
    TASKS.get_or_init(|| TaskSpec::NAMES.iter().map(|n| TaskSpec::default_of(n).unwrap().build().unwrap()).collect())
}

const PATH: &str = "fuzz/data";

/// Reads `bytes` with every reader and checks the contract (see the module docs). Returns the
/// lenient reader's examples when the file was read without a single error.
fn check_readers(task: &dyn Task, format: Format, bytes: &[u8]) -> Result<Option<Vec<Example>>, TestCaseError> {
    let path = Path::new(PATH);
    let lines = bytes.split(|&b| b == b'\n').count() - bytes.ends_with(b"\n") as usize;
    let check = |e: &DataError| -> Result<(), TestCaseError> {
        let msg = e.to_string();
        prop_assert!(!msg.contains(['\n', '\r']), "not one line: {:?}", msg);
        match e {
            DataError::Line { line, .. } => {
                prop_assert!((1..=lines).contains(line), "line {} of {}: {}", line, lines, msg);
                let prefix = format!("{PATH}:{line}: ");
                prop_assert!(msg.starts_with(&prefix) && msg.len() > prefix.len(), "{}", msg);
            }
            DataError::File { .. } => prop_assert!(msg.starts_with(&format!("{PATH}: ")), "{}", msg),
            other => prop_assert!(false, "a reader failed with neither a line nor the file: {}", other),
        }
        Ok(())
    };

    let mut bad = Vec::new();
    let lenient = dataset::read_split_from(task, bytes, path, format, &mut |e| {
        bad.push(e);
        true
    });
    for e in &bad {
        check(e)?;
    }
    let strict = dataset::read_head_from(task, bytes, path, format, usize::MAX);
    let head = dataset::read_head_from(task, bytes, path, format, 3);
    for result in [&lenient, &strict, &head] {
        if let Err(e) = result {
            check(e)?;
        }
    }
    match (&lenient, &strict) {
        (Ok(examples), Ok(all)) => {
            prop_assert!(bad.is_empty());
            prop_assert_eq!(examples, all);
            let first: Vec<Example> = all.iter().take(3).cloned().collect();
            prop_assert_eq!(head.as_ref().ok(), Some(&first));
        }
        (Ok(_), Err(e)) => {
            // The strict reader stops at the first bad line the lenient one reported.
            prop_assert_eq!(bad.first().map(ToString::to_string), Some(e.to_string()));
        }
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        (Err(e), Ok(_)) => prop_assert!(false, "only the lenient reader failed: {}", e),
    }
    Ok(if bad.is_empty() { lenient.ok() } else { None })
}

/// `lines` valid examples of `task` drawn from `seed`, as a file's lines (no newlines).
fn valid_lines(task: &dyn Task, format: Format, seed: u64, lines: usize) -> (Vec<Example>, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut writer = LineWriter::new(task, format).unwrap();
    (0..lines)
        .map(|i| {
            let ex = if i % 2 == 0 { task.sample(&mut rng) } else { task.sample_test(&mut rng) };
            let line = writer.line(&ex).to_string();
            (ex, line)
        })
        .unzip()
}

/// Bytes that matter to the parsers: separators of both formats, digits, JSON's quotes and
/// escapes, the dummy token, and the first bytes of invalid or multi-byte UTF-8.
const SPECIAL: &[u8] = b"\n\r,|/=:{}[]\"\\ \t0123456789-+$#e";

/// Bytes drawn one by one as [`interesting`] maps 16 random bits: drawing a `Vec<u16>` and mapping it
/// is several times faster than a `Vec` of a `prop_oneof!`, which is what lets a CI run afford
/// 10^5 cases.
fn interesting_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u16>(), len).prop_map(|v| v.into_iter().map(interesting).collect())
}

/// A byte from 16 random bits: half the time any byte, else one of [`SPECIAL`] or a byte that
/// starts invalid or multi-byte UTF-8.
fn interesting(bits: u16) -> u8 {
    const UTF8: &[u8] = &[0x80, 0xc3, 0xe2, 0xf0, 0xff];
    let [lo, hi] = bits.to_le_bytes();
    match hi % 8 {
        0..=3 => lo,
        4..=6 => SPECIAL[lo as usize % SPECIAL.len()],
        _ => UTF8[lo as usize % UTF8.len()],
    }
}

/// Numbers that overflow, are negative, are spelled oddly, or are not ASCII.
const ODD_NUMBERS: &[&str] = &[
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999999999999999999",
    "-1",
    "+3",
    "0x10",
    "1e3",
    "3.0",
    "007",
    "\u{0663}",
    "",
];

/// One piece of damage to a file's bytes; positions are taken modulo the file's length.
#[derive(Clone, Debug)]
enum Damage {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, Index),
    /// Deletes the n-th separator (`,|/=\n` and JSON's `" :`), whichever it is.
    DeleteSeparator(Index),
    /// Replaces the n-th run of digits with another number.
    Renumber(Index, String),
    Truncate(Index),
    /// Copies a stretch of the file elsewhere in it.
    Duplicate(Index, Index, Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    let number = prop_oneof![select(ODD_NUMBERS).prop_map(String::from), (0u32..64).prop_map(|n| n.to_string())];
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<Index>(), interesting_bytes(1..6)).prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Damage::Delete(i, n)),
        any::<Index>().prop_map(Damage::DeleteSeparator),
        (any::<Index>(), number).prop_map(|(i, n)| Damage::Renumber(i, n)),
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(a, n, b)| Damage::Duplicate(a, n, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match damage {
        Damage::Flip(i, x) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] ^= x;
        }
        Damage::Insert(i, b) => {
            let i = at(i, bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Damage::Delete(i, n) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            let n = 1 + at(n, 8.min(bytes.len() - i));
            bytes.drain(i..i + n);
        }
        Damage::DeleteSeparator(i) => {
            let seps: Vec<usize> = (0..bytes.len()).filter(|&k| b",|/=\n\" :".contains(&bytes[k])).collect();
            if !seps.is_empty() {
                bytes.remove(seps[i.index(seps.len())]);
            }
        }
        Damage::Renumber(i, n) => {
            let mut runs = Vec::new();
            let mut k = 0;
            while k < bytes.len() {
                if bytes[k].is_ascii_digit() {
                    let start = k;
                    while k < bytes.len() && bytes[k].is_ascii_digit() {
                        k += 1;
                    }
                    runs.push(start..k);
                } else {
                    k += 1;
                }
            }
            if !runs.is_empty() {
                let run = runs[i.index(runs.len())].clone();
                bytes.splice(run, n.bytes());
            }
        }
        Damage::Truncate(i) => {
            let i = at(i, bytes.len() + 1);
            bytes.truncate(i);
        }
        Damage::Duplicate(a, n, b) if !bytes.is_empty() => {
            let a = at(a, bytes.len());
            let n = 1 + at(n, 64.min(bytes.len() - a));
            let piece = bytes[a..a + n].to_vec();
            let b = at(b, bytes.len() + 1);
            bytes.splice(b..b, piece);
        }
        _ => {}
    }
}

/// A file's lines joined with newlines, with 0-2 blank lines after the last (which are allowed).
fn join(lines: &[String], trailing: usize) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.push_str(&"\n".repeat(trailing));
    text.into_bytes()
}

/// Damage at the level of tokens, which keeps the JSON well-formed so that the lines reach the
/// tasks' checks and verifiers.
#[derive(Clone, Debug)]
enum TokenDamage {
    /// Replaces a token with another token of the vocabulary.
    Replace(Index, Index),
    Drop(Index),
    /// Inserts a token of the vocabulary.
    Insert(Index, Index),
    /// Moves the boundary between prompt and target by one token either way.
    MoveBoundary(bool),
    SwapPromptAndTarget,
    /// Inserts a name that is no token.
    Unknown(Index, String),
}

fn token_damage() -> impl Strategy<Value = TokenDamage> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| TokenDamage::Replace(i, t)),
        2 => any::<Index>().prop_map(TokenDamage::Drop),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| TokenDamage::Insert(i, t)),
        2 => any::<bool>().prop_map(TokenDamage::MoveBoundary),
        1 => Just(TokenDamage::SwapPromptAndTarget),
        1 => (any::<Index>(), "\\PC{0,12}").prop_map(|(i, s)| TokenDamage::Unknown(i, s)),
    ]
}

fn damage_tokens(task: &dyn Task, ex: &Example, damages: &[TokenDamage]) -> String {
    let vocab = task.vocab();
    let mut tokens: Vec<String> = vocab.decode(&ex.tokens).split(' ').map(String::from).collect();
    let mut split = ex.prefix_len;
    let token = |t: &Index| vocab.names()[t.index(vocab.len())].clone();
    for d in damages {
        let len = tokens.len();
        match d {
            TokenDamage::Replace(i, t) if len > 0 => tokens[i.index(len)] = token(t),
            TokenDamage::Drop(i) if len > 0 => {
                let i = i.index(len);
                tokens.remove(i);
                split -= (i < split) as usize;
            }
            TokenDamage::Insert(i, t) => {
                let i = i.index(len + 1);
                tokens.insert(i, token(t));
                split += (i < split) as usize;
            }
            TokenDamage::MoveBoundary(later) => {
                split = if *later { (split + 1).min(len) } else { split.saturating_sub(1) };
            }
            TokenDamage::SwapPromptAndTarget => {
                tokens.rotate_left(split);
                split = len - split;
            }
            TokenDamage::Unknown(i, s) => {
                let i = i.index(len + 1);
                tokens.insert(i, s.clone());
                split += (i < split) as usize;
            }
            _ => {}
        }
    }
    let text = TextExample { prompt: tokens[..split].join(" "), target: tokens[split..].join(" ") };
    serde_json::to_string(&text).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// NTF reader, arbitrary bytes (biased towards NTF's alphabet).
    #[test]
    fn ntf_reader_on_arbitrary_bytes(
        task in 0..ntf_tasks().len(),
        bytes in interesting_bytes(0..160),
    ) {
        check_readers(ntf_tasks()[task].as_ref(), Format::Ntf, &bytes)?;
    }

    /// NTF reader, valid files damaged.
    #[test]
    fn ntf_reader_on_damaged_files(
        task in 0..ntf_tasks().len(),
        seed in any::<u64>(),
        lines in 1usize..4,
        trailing in 0usize..3,
        damages in proptest::collection::vec(damage(), 0..4),
    ) {
        let task = ntf_tasks()[task].as_ref();
        let (examples, lines) = valid_lines(task, Format::Ntf, seed, lines);
        let mut bytes = join(&lines, trailing);
        for d in &damages {
            apply(&mut bytes, d);
        }
        let read = check_readers(task, Format::Ntf, &bytes)?;
        if damages.is_empty() {
            prop_assert_eq!(read, Some(examples));
        }
    }

    /// JSONL reader, arbitrary bytes (biased towards JSON's alphabet), for every task.
    #[test]
    fn jsonl_reader_on_arbitrary_bytes(
        task in 0..jsonl_tasks().len(),
        bytes in interesting_bytes(0..160),
    ) {
        check_readers(jsonl_tasks()[task].as_ref(), Format::Jsonl, &bytes)?;
    }

    /// JSONL reader, valid files damaged byte by byte or token by token, for every task.
    #[test]
    fn jsonl_reader_on_damaged_files(
        task in 0..jsonl_tasks().len(),
        seed in any::<u64>(),
        lines in 1usize..4,
        trailing in 0usize..3,
        tokens in proptest::collection::vec(token_damage(), 0..3),
        damages in proptest::collection::vec(damage(), 0..3),
    ) {
        let task = jsonl_tasks()[task].as_ref();
        let (examples, mut lines) = valid_lines(task, Format::Jsonl, seed, lines);
        if !tokens.is_empty() {
            lines[0] = damage_tokens(task, &examples[0], &tokens);
        }
        let mut bytes = join(&lines, trailing);
        for d in &damages {
            apply(&mut bytes, d);
        }
        let read = check_readers(task, Format::Jsonl, &bytes)?;
        if tokens.is_empty() && damages.is_empty() {
            prop_assert_eq!(read, Some(examples));
        }
    }
}

/// The damage helpers do damage: a flipped separator makes a bad line, reported by number.
#[test]
fn damage_is_reported_by_line_number() {
    let task = &ntf_tasks()[0];
    let (_, lines) = valid_lines(task.as_ref(), Format::Ntf, 1, 3);
    let mut bytes = join(&lines, 0);
    let second = lines[0].len() + 1;
    let slash = second + lines[1].find('/').unwrap();
    bytes[slash] = b'x';
    let err = dataset::read_head_from(task.as_ref(), &bytes[..], Path::new(PATH), Format::Ntf, 10).unwrap_err();
    assert_eq!(err.to_string(), format!("{PATH}:2: missing `/` before source,goal"));
}

/// The damage reaches past the parsers into the tasks' checks: some damaged lines still parse
/// but fail a task's prompt check or verifier, and some are still valid examples.
#[test]
fn damage_reaches_the_tasks_checks() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut classify = |task: &dyn Task, format: Format, bytes: &[u8]| {
        let mut bad = Vec::new();
        let read = dataset::read_split_from(task, bytes, Path::new(PATH), format, &mut |e| {
            bad.push(e.to_string());
            true
        });
        let kind = match (read, bad.first()) {
            (Err(_), _) => "file".to_string(),
            (Ok(_), None) => "valid".to_string(),
            (Ok(_), Some(msg)) => {
                let msg = msg.split_once(": ").map_or("", |(_, m)| m);
                if msg.starts_with("prompt:") || msg.starts_with("target:") {
                    msg[..6].to_string()
                } else if msg.contains("is not a node number") {
                    "not a number".into()
                } else {
                    msg.split(' ').next().unwrap_or_default().to_string()
                }
            }
        };
        *kinds.entry(format!("{format:?} {kind}")).or_default() += 1;
    };
    let ntf = (0..ntf_tasks().len(), any::<u64>(), proptest::collection::vec(damage(), 1..3));
    let jsonl = (0..jsonl_tasks().len(), any::<u64>(), proptest::collection::vec(token_damage(), 1..3));
    for _ in 0..3000 {
        let (task, seed, damages) = ntf.new_tree(&mut runner).unwrap().current();
        let task = ntf_tasks()[task].as_ref();
        let (_, lines) = valid_lines(task, Format::Ntf, seed, 1);
        let mut bytes = join(&lines, 0);
        damages.iter().for_each(|d| apply(&mut bytes, d));
        classify(task, Format::Ntf, &bytes);
        let (task, seed, damages) = jsonl.new_tree(&mut runner).unwrap().current();
        let task = jsonl_tasks()[task].as_ref();
        let (examples, _) = valid_lines(task, Format::Jsonl, seed, 1);
        let line = damage_tokens(task, &examples[0], &damages);
        classify(task, Format::Jsonl, format!("{line}\n").as_bytes());
    }
    // 3,000 lines of each format; at least 1% of them in each of these classes.
    for kind in
        ["Ntf valid", "Ntf prompt", "Ntf target", "Ntf not a number", "Jsonl valid", "Jsonl prompt", "Jsonl target"]
    {
        assert!(kinds.get(kind).is_some_and(|&n| n >= 30), "{kind}: {kinds:#?}");
    }
}
