//! Long-range and global-constraint tasks (docs/method.md, §13.2.2): the deciding information sits
//! far from where it is used, or the output must satisfy a constraint that only its end can check.
//!
//! - [`KeyRecall`]: a key shown first decides the answer after a distractor span.
//!   `s3 s7 s1 s1 s0 ... s9 ?` → `s3`
//! - [`PrefixFunction`]: the answer is a function of the first k tokens, after a distractor span.
//!   `1 0 2 2 | 0 1 1 ... =` → `2` (sum of `1 0 2 2` mod 3, k = 4)
//! - [`GraphWalk`]: a walk on the given graph that ends at the goal after exactly n steps; many
//!   walks may be right and the verifier accepts any of them.
//!   `0 3 | 3 5 | ... / 0 5 =` → `0 3 1 3 5` (n = 4)
//!
//! The distance between the deciding token and the answer varies within a configured range, so
//! that evaluation can plot accuracy against distance.

use std::fmt::Write as _;

use petgraph::graphmap::DiGraphMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::spec::{SpecError, TaskSpec};
use crate::vocab::{DUMMY, Vocab, numerals_then};
use crate::{Example, Task, Verdict};

fn invalid(task: &'static str, msg: impl Into<String>) -> SpecError {
    SpecError::Invalid { task, msg: msg.into() }
}

fn check_gap(task: &'static str, min_gap: u32, max_gap: u32) -> Result<(), SpecError> {
    if min_gap > max_gap {
        return Err(invalid(task, format!("min_gap {min_gap} exceeds max_gap {max_gap}")));
    }
    if max_gap > 1 << 16 {
        return Err(invalid(task, format!("max_gap {max_gap} exceeds the limit of 65536")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Key recall

/// Parameters of [`KeyRecall`] (also the flags of `tasks gen key-recall`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct KeyRecallParams {
    /// Number of symbols `s0..`; keys and distractors are both drawn from them, so the model
    /// must find the key by its position, not by its kind.
    #[arg(long, default_value_t = KeyRecallParams::default().symbols)]
    pub symbols: u32,
    /// Shortest distractor span between the key and the `?`.
    #[arg(long, default_value_t = KeyRecallParams::default().min_gap)]
    pub min_gap: u32,
    /// Longest distractor span; each example draws its span length uniformly in between.
    #[arg(long, default_value_t = KeyRecallParams::default().max_gap)]
    pub max_gap: u32,
}

impl Default for KeyRecallParams {
    fn default() -> Self {
        KeyRecallParams { symbols: 16, min_gap: 4, max_gap: 64 }
    }
}

/// A key shown first decides the answer after a distractor span; see the module docs.
pub struct KeyRecall {
    params: KeyRecallParams,
    spec: TaskSpec,
    vocab: Vocab,
    query: u32,
}

impl KeyRecall {
    /// Builds the task.
    pub fn new(params: KeyRecallParams) -> Result<KeyRecall, SpecError> {
        if !(2..=4096).contains(&params.symbols) {
            return Err(invalid("key-recall", "symbols must be in 2..=4096"));
        }
        check_gap("key-recall", params.min_gap, params.max_gap)?;
        let mut names: Vec<String> = (0..params.symbols).map(|i| format!("s{i}")).collect();
        names.extend(["?".to_string(), DUMMY.to_string()]);
        let vocab = Vocab::new(names);
        let query = params.symbols;
        Ok(KeyRecall { spec: TaskSpec::KeyRecall(params.clone()), params, vocab, query })
    }

    /// Distance in positions from the key to the answer (the answer's index minus the key's),
    /// for accuracy-versus-distance curves.
    pub fn distance(example: &Example) -> usize {
        example.prefix_len
    }
}

impl Task for KeyRecall {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Example {
        let gap = rng.random_range(self.params.min_gap..=self.params.max_gap) as usize;
        let mut tokens = Vec::with_capacity(gap + 3);
        let key = rng.random_range(0..self.params.symbols);
        tokens.push(key);
        tokens.extend((0..gap).map(|_| rng.random_range(0..self.params.symbols)));
        tokens.push(self.query);
        tokens.push(key);
        Example { prefix_len: gap + 2, tokens }
    }

    fn max_target_len(&self) -> usize {
        1
    }

    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict {
        match (prefix.first(), output) {
            (Some(k), [a]) if a == k => Verdict::Valid,
            (Some(k), [a]) => Verdict::Invalid(format!(
                "answered {}, the key was {}",
                self.vocab.decode(&[*a]),
                self.vocab.decode(&[*k])
            )),
            _ => Verdict::Invalid(format!("{} tokens, expected 1", output.len())),
        }
    }

    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String> {
        let gap = prefix.len().checked_sub(2).ok_or("prompt shorter than key and `?`")?;
        if !(self.params.min_gap as usize..=self.params.max_gap as usize).contains(&gap) {
            return Err(format!("distractor span of {gap} outside {}..={}", self.params.min_gap, self.params.max_gap));
        }
        if prefix.last() != Some(&self.query) || prefix[..prefix.len() - 1].iter().any(|&t| t >= self.params.symbols) {
            return Err("expected symbols followed by `?`".into());
        }
        Ok(())
    }

    fn instance_key(&self, example: &Example) -> Vec<u32> {
        example.prefix().to_vec()
    }

    fn distance(&self, example: &Example) -> Option<usize> {
        Some(Self::distance(example))
    }

    fn describe(&self, example: &Example) -> String {
        let t = example.text(&self.vocab);
        format!(
            "{} => {}\n  key {} at position 1, answer {} tokens later",
            t.prompt,
            t.target,
            self.vocab.decode(&example.tokens[..1]),
            Self::distance(example)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Prefix function

/// The function of the first k tokens that decides the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixFn {
    /// Sum of the first k tokens modulo the alphabet size.
    SumMod,
    /// Sum of the first k tokens modulo 2.
    Parity,
    /// The most frequent of the first k tokens; ties go to the smallest symbol.
    Majority,
}

impl PrefixFn {
    /// Applies the function to the deciding tokens over an alphabet of `m` symbols.
    pub fn apply(self, xs: &[u32], m: u32) -> u32 {
        match self {
            PrefixFn::SumMod => (xs.iter().map(|&x| x as u64).sum::<u64>() % m as u64) as u32,
            PrefixFn::Parity => (xs.iter().map(|&x| x as u64).sum::<u64>() % 2) as u32,
            PrefixFn::Majority => {
                let mut counts = vec![0u32; m as usize];
                for &x in xs {
                    counts[x as usize] += 1;
                }
                // max_by_key keeps the last maximum, so scan from the top to favour the smallest.
                (0..m).rev().max_by_key(|&s| counts[s as usize]).unwrap_or(0)
            }
        }
    }
}

/// Parameters of [`PrefixFunction`] (also the flags of `tasks gen prefix-function`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct PrefixFunctionParams {
    /// The function that decides the answer.
    #[arg(long, value_enum, default_value = "sum-mod")]
    pub function: PrefixFn,
    /// Alphabet size m: tokens are `0..m` (at least 2).
    #[arg(long, default_value_t = PrefixFunctionParams::default().modulus)]
    pub modulus: u32,
    /// Number of deciding tokens at the start, k.
    #[arg(long, short = 'k', default_value_t = PrefixFunctionParams::default().k)]
    pub k: u32,
    /// Shortest distractor span between the deciding tokens and the `=`.
    #[arg(long, default_value_t = PrefixFunctionParams::default().min_gap)]
    pub min_gap: u32,
    /// Longest distractor span; each example draws its span length uniformly in between.
    #[arg(long, default_value_t = PrefixFunctionParams::default().max_gap)]
    pub max_gap: u32,
}

impl Default for PrefixFunctionParams {
    fn default() -> Self {
        PrefixFunctionParams { function: PrefixFn::SumMod, modulus: 3, k: 4, min_gap: 0, max_gap: 32 }
    }
}

/// The answer is a function of the first k tokens; see the module docs.
pub struct PrefixFunction {
    params: PrefixFunctionParams,
    spec: TaskSpec,
    vocab: Vocab,
    bar: u32,
    eq: u32,
}

impl PrefixFunction {
    /// Builds the task.
    pub fn new(params: PrefixFunctionParams) -> Result<PrefixFunction, SpecError> {
        if !(2..=4096).contains(&params.modulus) {
            return Err(invalid("prefix-function", "modulus must be in 2..=4096"));
        }
        if !(1..=4096).contains(&params.k) {
            return Err(invalid("prefix-function", "k must be in 1..=4096"));
        }
        check_gap("prefix-function", params.min_gap, params.max_gap)?;
        let vocab = numerals_then(params.modulus, &["|", "=", DUMMY]);
        let m = params.modulus;
        Ok(PrefixFunction { spec: TaskSpec::PrefixFunction(params.clone()), params, vocab, bar: m, eq: m + 1 })
    }

    /// Distance in positions from the last deciding token to the answer (the answer's index
    /// minus the deciding token's), as for key recall.
    pub fn distance(&self, example: &Example) -> usize {
        example.prefix_len + 1 - self.params.k as usize
    }
}

impl Task for PrefixFunction {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Example {
        let (m, k) = (self.params.modulus, self.params.k as usize);
        let gap = rng.random_range(self.params.min_gap..=self.params.max_gap) as usize;
        let mut tokens = Vec::with_capacity(k + gap + 3);
        tokens.extend((0..k).map(|_| rng.random_range(0..m)));
        // The `|` marks where the deciding tokens end, so that k need not be inferred.
        tokens.push(self.bar);
        tokens.extend((0..gap).map(|_| rng.random_range(0..m)));
        tokens.push(self.eq);
        let answer = self.params.function.apply(&tokens[..k], m);
        let prefix_len = tokens.len();
        tokens.push(answer);
        Example { tokens, prefix_len }
    }

    fn max_target_len(&self) -> usize {
        1
    }

    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict {
        let k = self.params.k as usize;
        if prefix.len() < k || prefix[..k].iter().any(|&t| t >= self.params.modulus) {
            return Verdict::Invalid("bad prompt: it does not start with k symbols".into());
        }
        let want = self.params.function.apply(&prefix[..k], self.params.modulus);
        match output {
            [a] if *a == want => Verdict::Valid,
            [a] => Verdict::Invalid(format!("answered {}, expected {want}", self.vocab.decode(&[*a]))),
            _ => Verdict::Invalid(format!("{} tokens, expected 1", output.len())),
        }
    }

    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String> {
        let (m, k) = (self.params.modulus, self.params.k as usize);
        let gap = prefix.len().checked_sub(k + 2).ok_or("prompt shorter than k tokens, `|` and `=`")?;
        if !(self.params.min_gap as usize..=self.params.max_gap as usize).contains(&gap) {
            return Err(format!("distractor span of {gap} outside {}..={}", self.params.min_gap, self.params.max_gap));
        }
        let symbols_ok = prefix[..k].iter().chain(&prefix[k + 1..prefix.len() - 1]).all(|&t| t < m);
        if !symbols_ok || prefix[k] != self.bar || prefix[prefix.len() - 1] != self.eq {
            return Err("expected k symbols, `|`, distractor symbols, `=`".into());
        }
        Ok(())
    }

    fn instance_key(&self, example: &Example) -> Vec<u32> {
        example.prefix().to_vec()
    }

    fn distance(&self, example: &Example) -> Option<usize> {
        Some(PrefixFunction::distance(self, example))
    }

    fn describe(&self, example: &Example) -> String {
        let t = example.text(&self.vocab);
        let k = self.params.k as usize;
        format!(
            "{} => {}\n  {:?} of {} (mod {}) = {}, answered {} tokens after the last deciding token",
            t.prompt,
            t.target,
            self.params.function,
            self.vocab.decode(&example.tokens[..k]),
            self.params.modulus,
            t.target,
            self.distance(example)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Graph walk

/// Parameters of [`GraphWalk`] (also the flags of `tasks gen graph-walk`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
// Fields left out of a config take the default (published) values.
#[serde(default, deny_unknown_fields)]
pub struct GraphWalkParams {
    /// Nodes per graph, numbered `0..nodes`.
    #[arg(long, default_value_t = GraphWalkParams::default().nodes)]
    pub nodes: u32,
    /// Out-degree of every node (distinct successors, no self-loops).
    #[arg(long, default_value_t = GraphWalkParams::default().out_degree)]
    pub out_degree: u32,
    /// Exact number of steps the walk must take; the target has steps + 1 nodes.
    #[arg(long, default_value_t = GraphWalkParams::default().steps)]
    pub steps: u32,
}

impl Default for GraphWalkParams {
    fn default() -> Self {
        GraphWalkParams { nodes: 10, out_degree: 2, steps: 6 }
    }
}

/// A walk that must end at the goal after exactly n steps; see the module docs.
///
/// Each prompt's graph has out-degree `out_degree` everywhere; the goal is drawn among the nodes
/// that some walk of exactly n steps from the start reaches, and the reference target is drawn
/// uniformly among all such walks. At every step a model must pick a successor from which the
/// goal is still reachable in the steps left: a plan, not a local rule.
pub struct GraphWalk {
    params: GraphWalkParams,
    spec: TaskSpec,
    vocab: Vocab,
    bar: u32,
    eq: u32,
    slash: u32,
}

impl GraphWalk {
    /// Builds the task.
    pub fn new(params: GraphWalkParams) -> Result<GraphWalk, SpecError> {
        let task = "graph-walk";
        if !(2..=4096).contains(&params.nodes) {
            return Err(invalid(task, "nodes must be in 2..=4096"));
        }
        if params.out_degree == 0 || params.out_degree >= params.nodes {
            return Err(invalid(task, format!("out_degree must be in 1..{} (no self-loops)", params.nodes)));
        }
        if params.steps == 0 || params.steps > 4096 {
            return Err(invalid(task, "steps must be in 1..=4096"));
        }
        // Walk counts (up to out_degree^steps) are kept in f64 to draw a uniform walk.
        if params.steps as f64 * (params.out_degree as f64).log2() > 1000.0 {
            return Err(invalid(task, "out_degree^steps is too large to count walks"));
        }
        let n = params.nodes;
        let vocab = numerals_then(n, &["|", "=", "/", DUMMY]);
        Ok(GraphWalk { spec: TaskSpec::GraphWalk(params.clone()), params, vocab, bar: n, eq: n + 1, slash: n + 2 })
    }

    fn edge_count(&self) -> usize {
        (self.params.nodes * self.params.out_degree) as usize
    }

    /// For each remaining step count t (0..=steps), whether each node reaches `goal` in exactly
    /// t steps: `reach[t][v]`.
    fn reachability(&self, g: &DiGraphMap<u32, ()>, goal: u32) -> Vec<Vec<bool>> {
        let n = self.params.nodes as usize;
        let mut reach = vec![vec![false; n]; self.params.steps as usize + 1];
        reach[0][goal as usize] = true;
        for t in 1..reach.len() {
            for v in 0..n {
                reach[t][v] = g.neighbors(v as u32).any(|w| reach[t - 1][w as usize]);
            }
        }
        reach
    }

    /// Number of steps along `walk` where some successor could no longer reach the goal in the
    /// steps left: the places where a model must plan rather than follow any edge. `None` if
    /// the prompt is malformed.
    pub fn decisions(&self, prefix: &[u32], walk: &[u32]) -> Option<usize> {
        let (g, _, goal) = self.parse_prompt(prefix).ok()?;
        let reach = self.reachability(&g, goal);
        let steps = self.params.steps as usize;
        let traps = walk
            .iter()
            .take(steps)
            .enumerate()
            .filter(|&(i, &v)| g.neighbors(v).any(|w| !reach[steps - i - 1][w as usize]))
            .count();
        Some(traps)
    }

    /// Parses `u v | ... / start goal =` into a graph, start and goal.
    fn parse_prompt(&self, prefix: &[u32]) -> Result<(DiGraphMap<u32, ()>, u32, u32), String> {
        let e = self.edge_count();
        if prefix.len() != 3 * e + 3 {
            return Err(format!("expected {} prompt tokens, found {}", 3 * e + 3, prefix.len()));
        }
        let is_node = |t: u32| t < self.params.nodes;
        let mut g = DiGraphMap::with_capacity(self.params.nodes as usize, e);
        for i in 0..e {
            let (u, v, sep) = (prefix[3 * i], prefix[3 * i + 1], prefix[3 * i + 2]);
            let want = if i + 1 < e { self.bar } else { self.slash };
            if !is_node(u) || !is_node(v) || sep != want {
                return Err(format!("edge {} is malformed", i + 1));
            }
            g.add_edge(u, v, ());
        }
        let (start, goal) = (prefix[3 * e], prefix[3 * e + 1]);
        if !is_node(start) || !is_node(goal) || prefix[3 * e + 2] != self.eq {
            return Err("expected `/ start goal =` after the edges".into());
        }
        Ok((g, start, goal))
    }
}

impl Task for GraphWalk {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Example {
        let (n, deg) = (self.params.nodes, self.params.out_degree as usize);
        // Successor lists, sorted; plain vectors rather than a petgraph map, because this runs
        // once per example (the verifier, which runs on model outputs, uses petgraph).
        let mut succ: Vec<Vec<u32>> = Vec::with_capacity(n as usize);
        let mut edges = Vec::with_capacity(self.edge_count());
        let mut others: Vec<u32> = Vec::with_capacity(n as usize);
        for u in 0..n {
            others.clear();
            others.extend((0..n).filter(|&v| v != u));
            for i in 0..deg {
                let j = rng.random_range(i as u32..others.len() as u32) as usize;
                others.swap(i, j);
                edges.push((u, others[i]));
            }
            let mut s = others[..deg].to_vec();
            s.sort_unstable();
            succ.push(s);
        }
        for i in (1..edges.len()).rev() {
            let j = rng.random_range(0..=i as u32) as usize;
            edges.swap(i, j);
        }
        let steps = self.params.steps as usize;

        // Forward reachability from the start picks a goal that some walk reaches...
        let start = rng.random_range(0..n);
        let mut at = vec![false; n as usize];
        at[start as usize] = true;
        for _ in 0..steps {
            let mut next = vec![false; n as usize];
            for v in (0..n).filter(|&v| at[v as usize]) {
                for &w in &succ[v as usize] {
                    next[w as usize] = true;
                }
            }
            at = next;
        }
        let ends: Vec<u32> = (0..n).filter(|&v| at[v as usize]).collect();
        let goal = ends[rng.random_range(0..ends.len() as u32) as usize];

        // ...and counts of walks to it (integers, exact in f64 up to 2^53) draw the reference
        // uniformly among all valid walks.
        let mut count = vec![vec![0f64; n as usize]; steps + 1];
        count[0][goal as usize] = 1.0;
        for t in 1..=steps {
            for v in 0..n as usize {
                count[t][v] = succ[v].iter().map(|&w| count[t - 1][w as usize]).sum();
            }
        }
        let mut tokens = Vec::with_capacity(3 * edges.len() + 3 + steps + 1);
        for (i, &(u, v)) in edges.iter().enumerate() {
            if i > 0 {
                tokens.push(self.bar);
            }
            tokens.extend([u, v]);
        }
        tokens.extend([self.slash, start, goal, self.eq]);
        let prefix_len = tokens.len();
        let mut node = start;
        tokens.push(node);
        for left in (0..steps).rev() {
            // Successors in sorted order, weighted by the walks still possible through them.
            let options = &succ[node as usize];
            let total: f64 = options.iter().map(|&w| count[left][w as usize]).sum();
            let mut pick = rng.random::<f64>() * total;
            let mut chosen = None;
            for &w in options {
                let c = count[left][w as usize];
                if c > 0.0 {
                    chosen = Some(w);
                    if pick < c {
                        break;
                    }
                    pick -= c;
                }
            }
            node = chosen.expect("a reachable goal leaves a successor with walks");
            tokens.push(node);
        }
        Example { tokens, prefix_len }
    }

    fn max_target_len(&self) -> usize {
        self.params.steps as usize + 1
    }

    fn verify(&self, prefix: &[u32], output: &[u32]) -> Verdict {
        let (g, start, goal) = match self.parse_prompt(prefix) {
            Ok(x) => x,
            Err(e) => return Verdict::Invalid(format!("bad prompt: {e}")),
        };
        let want = self.params.steps as usize + 1;
        if output.len() != want {
            return Verdict::Invalid(format!("{} nodes, expected {want}", output.len()));
        }
        if output[0] != start {
            return Verdict::Invalid(format!("starts at {}, not at {start}", output[0]));
        }
        for (i, w) in output.windows(2).enumerate() {
            if !g.contains_edge(w[0], w[1]) {
                return Verdict::Invalid(format!("step {}: {} -> {} is not an edge", i + 1, w[0], w[1]));
            }
        }
        if output[want - 1] != goal {
            return Verdict::Invalid(format!("ends at {}, not at the goal {goal}", output[want - 1]));
        }
        Verdict::Valid
    }

    fn check_prompt(&self, prefix: &[u32]) -> Result<(), String> {
        let (g, start, goal) = self.parse_prompt(prefix)?;
        if g.edge_count() != self.edge_count() {
            return Err("an edge is listed twice".into());
        }
        for v in 0..self.params.nodes {
            if g.neighbors(v).count() != self.params.out_degree as usize || g.contains_edge(v, v) {
                return Err(format!("node {v} does not have {} successors other than itself", self.params.out_degree));
            }
        }
        if !self.reachability(&g, goal)[self.params.steps as usize][start as usize] {
            return Err(format!("no walk of {} steps leads from {start} to {goal}", self.params.steps));
        }
        Ok(())
    }

    fn counterfactual_targets(&self, example: &Example) -> Option<Vec<Vec<u32>>> {
        // Walks of the same length from the same start that leave it by another edge than the
        // answer and end elsewhere than the goal: the answers to the same graph with another
        // goal, one per other first step (out_degree - 1 of them, as a path-star graph has d - 1
        // other arms). Diverging at the first step matters: a wrong walk that shares the
        // answer's first nodes and differs only at its last would give the same future summary
        // as the answer (the summaries never read the last token), a negative equal to the
        // positive. Each continuation is drawn uniformly among the wrong ones by a generator
        // seeded from the prompt, so the same example always gets the same counterfactuals and
        // no other stream of randomness is touched. A first step from which every walk reaches
        // the goal (it is right too) is replaced by another other first step's walk; None if
        // no other first step has a wrong walk.
        let (g, start, goal) = self.parse_prompt(example.prefix()).ok()?;
        let (n, steps) = (self.params.nodes as usize, self.params.steps as usize);
        let first = *example.target().get(1)?;
        let succ: Vec<Vec<u32>> = (0..n as u32)
            .map(|v| {
                let mut s: Vec<u32> = g.neighbors(v).collect();
                s.sort_unstable();
                s
            })
            .collect();
        // wrong[t][v]: walks of t steps from v that do not end at the goal.
        let mut wrong = vec![vec![0f64; n]; steps];
        for (v, w) in wrong[0].iter_mut().enumerate() {
            *w = if v == goal as usize { 0.0 } else { 1.0 };
        }
        for t in 1..steps {
            for v in 0..n {
                wrong[t][v] = succ[v].iter().map(|&w| wrong[t - 1][w as usize]).sum();
            }
        }
        let others: Vec<u32> = succ[start as usize].iter().copied().filter(|&w| w != first).collect();
        let usable: Vec<u32> = others.iter().copied().filter(|&w| wrong[steps - 1][w as usize] > 0.0).collect();
        if usable.is_empty() {
            return None;
        }
        let seed = example
            .prefix()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3));
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let walks = others
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let w = if wrong[steps - 1][w as usize] > 0.0 { w } else { usable[i % usable.len()] };
                let mut walk = vec![start, w];
                let mut node = w as usize;
                for left in (0..steps - 1).rev() {
                    let total: f64 = succ[node].iter().map(|&v| wrong[left][v as usize]).sum();
                    let mut pick = rng.random::<f64>() * total;
                    let mut chosen = None;
                    for &v in &succ[node] {
                        let c = wrong[left][v as usize];
                        if c > 0.0 {
                            chosen = Some(v);
                            if pick < c {
                                break;
                            }
                            pick -= c;
                        }
                    }
                    node = chosen.expect("a node with wrong walks leaves a successor with some") as usize;
                    walk.push(node as u32);
                }
                walk
            })
            .collect();
        Some(walks)
    }

    fn instance_key(&self, example: &Example) -> Vec<u32> {
        let e = self.edge_count();
        let p = example.prefix();
        let mut edges: Vec<(u32, u32)> = (0..e).map(|i| (p[3 * i], p[3 * i + 1])).collect();
        edges.sort_unstable();
        let mut key: Vec<u32> = edges.into_iter().flat_map(|(u, v)| [u, v]).collect();
        key.extend_from_slice(&p[3 * e..3 * e + 2]);
        key
    }

    fn describe(&self, example: &Example) -> String {
        let t = example.text(&self.vocab);
        let mut out = format!("{} => {}", t.prompt, t.target);
        if let Ok((_, start, goal)) = self.parse_prompt(example.prefix()) {
            let steps = self.params.steps;
            let traps = self.decisions(example.prefix(), example.target()).unwrap_or(0);
            let _ = write!(
                out,
                "\n  walk {steps} steps from {start} to {goal}; {traps} of the {steps} steps taken could have gone astray"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn prefix_functions_by_hand() {
        assert_eq!(PrefixFn::SumMod.apply(&[1, 0, 2, 2], 3), 2);
        assert_eq!(PrefixFn::Parity.apply(&[1, 0, 2, 2], 3), 1);
        assert_eq!(PrefixFn::Majority.apply(&[2, 1, 2, 1, 0], 3), 1, "ties go to the smallest");
        assert_eq!(PrefixFn::Majority.apply(&[2, 2, 1], 3), 2);
    }

    #[test]
    fn every_long_range_task_verifies_its_own_targets() {
        let tasks: Vec<Box<dyn Task>> = vec![
            Box::new(KeyRecall::new(KeyRecallParams::default()).unwrap()),
            Box::new(PrefixFunction::new(PrefixFunctionParams::default()).unwrap()),
            Box::new(
                PrefixFunction::new(PrefixFunctionParams { function: PrefixFn::Majority, ..Default::default() })
                    .unwrap(),
            ),
            Box::new(GraphWalk::new(GraphWalkParams::default()).unwrap()),
        ];
        for task in &tasks {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            for _ in 0..300 {
                let ex = task.sample(&mut rng);
                task.check(&ex).unwrap_or_else(|e| panic!("{}: {e}", task.spec().name()));
            }
        }
    }

    #[test]
    fn graph_walk_counterfactuals_are_walks_of_the_same_length_to_other_goals() {
        let t = GraphWalk::new(GraphWalkParams { nodes: 10, out_degree: 3, steps: 4 }).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..50 {
            let ex = t.sample(&mut rng);
            let (g, start, goal) = t.parse_prompt(ex.prefix()).unwrap();
            let alts = t.counterfactual_targets(&ex).expect("out-degree 3 leaves wrong walks");
            assert_eq!(alts.len(), 2, "out_degree - 1 of them");
            assert_ne!(alts[0][1], alts[1][1], "one per other first step (every first step here has wrong walks)");
            for alt in &alts {
                assert_eq!(alt.len(), ex.target().len());
                assert_eq!(alt[0], start);
                assert_ne!(alt[1], ex.target()[1], "it leaves the start by another edge");
                assert!(alt.windows(2).all(|w| g.contains_edge(w[0], w[1])), "{alt:?} follows the edges");
                assert_ne!(*alt.last().unwrap(), goal, "a counterfactual ends elsewhere");
                assert!(!t.verify(ex.prefix(), alt).is_valid());
            }
            assert_eq!(t.counterfactual_targets(&ex), Some(alts), "the same example, the same counterfactuals");
        }
    }

    #[test]
    fn graph_walk_accepts_other_valid_walks_and_rejects_near_misses() {
        // 0 -> {1, 2}, 1 -> {3, 0}, 2 -> {3, 1}, 3 -> {0, 2}: from 0 to 3 in 2 steps, both
        // 0 1 3 and 0 2 3 are right.
        let t = GraphWalk::new(GraphWalkParams { nodes: 4, out_degree: 2, steps: 2 }).unwrap();
        let v = t.vocab();
        let prefix = v.encode("0 1 | 0 2 | 1 3 | 1 0 | 2 3 | 2 1 | 3 0 | 3 2 / 0 3 =").unwrap();
        t.check_prompt(&prefix).unwrap();
        assert!(t.verify(&prefix, &[0, 1, 3]).is_valid());
        assert!(t.verify(&prefix, &[0, 2, 3]).is_valid());
        assert!(t.verify(&prefix, &[0, 1, 0]).to_string().contains("ends at 0"));
        assert!(t.verify(&prefix, &[0, 3, 3]).to_string().contains("not an edge"));
        assert!(t.verify(&prefix, &[0, 1]).to_string().contains("expected 3"));
    }

    #[test]
    fn rejects_impossible_parameters() {
        assert!(GraphWalk::new(GraphWalkParams { nodes: 4, out_degree: 4, steps: 2 }).is_err());
        assert!(GraphWalk::new(GraphWalkParams { nodes: 4, out_degree: 2, steps: 0 }).is_err());
        assert!(KeyRecall::new(KeyRecallParams { symbols: 8, min_gap: 9, max_gap: 3 }).is_err());
        assert!(PrefixFunction::new(PrefixFunctionParams { modulus: 1, ..Default::default() }).is_err());
    }
}
