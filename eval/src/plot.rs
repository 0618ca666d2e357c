//! `eval plot DIR`: the lab's standard figures, as PNG and SVG, for a run or a sweep directory.
//!
//! - `loss`: the training loss per group (mean over seeds) against the step;
//! - `positions`: accuracy per target position, teacher-forced (solid) versus free-running
//!   (dashed) — the Pitfalls picture;
//! - `pass_at_k`: pass@k against k (log scale);
//! - `creativity`: creativity, diversity and memorization per group (creative tasks);
//! - `mi_bound`: the InfoNCE bound on I(h_t; F_t) over training (MI-shaped objectives);
//! - `mi_positions`: the bound per target position from `analysis mi` (`mi_analysis.json`), for
//!   the runs that have one.
//!
//! A figure whose data no run has is not drawn. Text is drawn with DejaVu Sans Mono, embedded
//! (`eval/assets`, Bitstream Vera licence), so no system font library is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use lab_core::run_dir::{self, RunDir};

use crate::compare::{RunResult, collect};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            unreachable!("the embedded font is a valid TrueType file");
        }
    });
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Palette index (series of one group share it).
    pub color: usize,
}

/// A line chart.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// X is log2 of the quantity (ticks are labelled 2^x).
    pub log2_x: bool,
    /// Y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// How many x ticks to aim for (integer axes: one per value).
    pub x_ticks: usize,
    /// Legend in the upper right corner (for falling curves) instead of the lower right.
    pub legend_top: bool,
}

/// A grouped bar chart: per group, one bar per measure.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// The groups (x axis).
    pub groups: Vec<String>,
    /// Measures: name and one value per group (`None`: no bar).
    pub measures: Vec<(String, Vec<Option<f64>>)>,
}

/// A figure.
#[derive(Clone, Debug)]
pub enum Figure {
    /// Lines.
    Lines(LineChart),
    /// Bars.
    Bars(BarChart),
}

const SIZE: (u32, u32) = (960, 600);

fn color(i: usize) -> RGBColor {
    // Colour-blind-safe (Okabe-Ito), then repeats.
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    P[i % P.len()]
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = bounds(xs);
    let (y0, y1) = c.y_range.unwrap_or_else(|| {
        let (a, b) = bounds(ys);
        let pad = (b - a).abs().max(1e-9) * 0.05;
        (a - pad, b + pad)
    });
    let log2_x = c.log2_x;
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(c.x_label.as_str())
        .y_desc(c.y_label.as_str())
        .x_labels(c.x_ticks)
        .x_label_formatter(&|x| if log2_x { format!("{}", 2f64.powf(*x).round()) } else { format!("{x}") })
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .draw()?;
    for s in &c.series {
        let style = ShapeStyle::from(&color(s.color)).stroke_width(2);
        let label = s.label.clone();
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
        };
        // A series without a label (another seed of a group already in the legend) gets no
        // legend entry.
        if label.is_empty() {
            continue;
        }
        let dashed = s.dashed;
        anno.label(label).legend(move |(x, y)| {
            if dashed {
                PathElement::new(vec![(x, y), (x + 8, y)], style)
            } else {
                PathElement::new(vec![(x, y), (x + 20, y)], style)
            }
        });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(if c.legend_top { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::LowerRight })
        .draw()?;
    root.present()
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &BarChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let n = c.groups.len().max(1);
    let m = c.measures.len().max(1);
    let top = c.measures.iter().flat_map(|(_, v)| v.iter().flatten().copied()).fold(0f64, f64::max).max(1e-9);
    let groups = c.groups.clone();
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..top * 1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 { groups.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc(c.y_label.as_str())
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .draw()?;
    let width = 0.8 / m as f64;
    for (j, (name, values)) in c.measures.iter().enumerate() {
        let style = ShapeStyle::from(&color(j)).filled();
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let x = i as f64 + 0.1 + j as f64 * width;
            v.map(|v| Rectangle::new([(x, 0.0), (x + width * 0.92, v)], style))
        });
        chart
            .draw_series(bars)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], ShapeStyle::from(&color(j)).filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
}

fn bounds(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> DrawResult<DB> {
    match figure {
        Figure::Lines(c) => draw_lines(root, c),
        Figure::Bars(c) => draw_bars(root, c),
    }
}

/// Writes `figure` as `<stem>.png` and `<stem>.svg`.
pub fn write(figure: &Figure, stem: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let fail = |p: &Path, e: String| anyhow::anyhow!("drawing {}: {e}", p.display());
    draw(&BitMapBackend::new(&png, SIZE).into_drawing_area(), figure).map_err(|e| fail(&png, e.to_string()))?;
    draw(&SVGBackend::new(&svg, SIZE).into_drawing_area(), figure).map_err(|e| fail(&svg, e.to_string()))?;
    Ok(vec![png, svg])
}

/// A metric of `metrics.jsonl` against the step, averaged over the runs of a group at each step
/// every run of the group logged.
fn curve(runs: &[&RunResult], dir: &Path, key: &str) -> Result<Vec<(f64, f64)>> {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for line in run_dir::read_metrics(&dir.join(&r.name))? {
            if let Some(x) = line.get(key) {
                by_step.entry(line.step).or_default().push(x);
            }
        }
    }
    Ok(by_step
        .into_iter()
        .filter(|(_, xs)| xs.len() == runs.len())
        .map(|(s, xs)| (s as f64, xs.iter().sum::<f64>() / xs.len() as f64))
        .collect())
}

/// A metric against the sequences trained on when it was measured (`train/sequences` of the
/// same step), averaged over the runs of a group where every run has it; empty for runs logged
/// before `train/sequences` existed.
fn curve_by_sequences(runs: &[&RunResult], dir: &Path, key: &str) -> Result<Vec<(f64, f64)>> {
    let mut by_step: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for r in runs {
        let (mut seen, mut values) = (BTreeMap::new(), BTreeMap::new());
        for line in run_dir::read_metrics(&dir.join(&r.name))? {
            if let Some(n) = line.get("train/sequences") {
                seen.insert(line.step, n);
            }
            if let Some(x) = line.get(key) {
                values.insert(line.step, x);
            }
        }
        for (step, x) in values {
            if let Some(&n) = seen.get(&step) {
                by_step.entry(step).or_default().push((n, x));
            }
        }
    }
    Ok(by_step
        .into_values()
        .filter(|ps| ps.len() == runs.len())
        .map(|ps| {
            let k = ps.len() as f64;
            (ps.iter().map(|p| p.0).sum::<f64>() / k, ps.iter().map(|p| p.1).sum::<f64>() / k)
        })
        .collect())
}

/// One series per group from an analysis file each run may hold (`mi_analysis.json`,
/// `mi_plan.json`): its `per_position` bounds against `x_key`, averaged over the group's runs that
/// have the file, and the largest ceiling (`ceiling_key`) among them.
fn analysis_series(
    order: &[String],
    groups: &BTreeMap<String, Vec<&RunResult>>,
    root: &Path,
    file: &str,
    x_key: &str,
    ceiling_key: &str,
    label: &dyn Fn(&str) -> String,
) -> Result<(Vec<Series>, Option<f64>)> {
    let (mut series, mut ceiling) = (Vec::new(), None::<f64>);
    for (i, g) in order.iter().enumerate() {
        let mut sums: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for r in &groups[g] {
            let Ok(text) = std::fs::read_to_string(root.join(&r.name).join(file)) else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("reading {file}"))?;
            if let Some(c) = v[ceiling_key].as_f64() {
                ceiling = Some(ceiling.map_or(c, |a| a.max(c)));
            }
            for p in v["per_position"].as_array().into_iter().flatten() {
                if let (Some(x), Some(b)) = (p[x_key].as_u64(), p["bound"].as_f64()) {
                    let e = sums.entry(x).or_default();
                    e.0 += b;
                    e.1 += 1;
                }
            }
        }
        let points: Vec<(f64, f64)> = sums.into_iter().map(|(p, (s, n))| (p as f64, s / n as f64)).collect();
        if !points.is_empty() {
            series.push(Series { label: label(g), points, dashed: false, color: i });
        }
    }
    Ok((series, ceiling))
}

fn mean_of(runs: &[&RunResult], key: &str) -> Option<f64> {
    let xs: Vec<f64> = runs.iter().filter_map(|r| r.metrics.get(key).copied()).collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The figures for the runs of `dir` (a run directory, a sweep directory, or a directory of
/// runs), grouped as `eval compare` groups them.
pub fn figures(dir: &Path) -> Result<Vec<(String, Figure)>> {
    // A single run directory is plotted as a one-run sweep of its parent.
    let dir = dir.canonicalize().with_context(|| format!("{} is not a directory", dir.display()))?;
    let (root, runs) = if RunDir(&dir).is_run() {
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let name = dir.file_name().and_then(|n| n.to_str()).context("a run directory has a name")?.to_string();
        let (done, _) = collect(&parent)?;
        let runs: Vec<RunResult> = done.into_iter().filter(|r| r.name == name).collect();
        if runs.is_empty() {
            bail!("{} has not finished (no eval.json of its last step)", dir.display());
        }
        (parent, runs)
    } else {
        let (runs, _) = collect(&dir)?;
        if runs.is_empty() {
            bail!("{} has no finished run yet", dir.display());
        }
        (dir.clone(), runs)
    };
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in &runs {
        if !groups.contains_key(&r.group) {
            order.push(r.group.clone());
        }
        groups.entry(r.group.clone()).or_default().push(r);
    }
    let label = |g: &str| {
        let n = groups[g].len();
        if n > 1 { format!("{g} ({n} seeds)") } else { g.to_string() }
    };
    let mut figs = Vec::new();

    let mut loss = Vec::new();
    let mut bound = Vec::new();
    for (i, g) in order.iter().enumerate() {
        let points = curve(&groups[g], &root, "train/loss")?;
        if !points.is_empty() {
            loss.push(Series { label: label(g), points, dashed: false, color: i });
        }
        let points = curve(&groups[g], &root, "train/mi_bound")?;
        if !points.is_empty() {
            bound.push(Series { label: label(g), points, dashed: false, color: i });
        }
    }
    if !loss.is_empty() {
        figs.push((
            "loss".into(),
            Figure::Lines(LineChart {
                title: "training loss".into(),
                x_label: "step".into(),
                y_label: "loss (total)".into(),
                series: loss,
                log2_x: false,
                y_range: None,
                x_ticks: 10,
                legend_top: true,
            }),
        ));
    }

    // The budget figure of the planning experiments: free-running exact match against the
    // sequences seen, one line per run (a group's seeds in its colour), so that a bimodal
    // objective shows as the seeds it is made of rather than as their mean.
    let mut learning = Vec::new();
    for (i, g) in order.iter().enumerate() {
        let mut labelled = false;
        for run in &groups[g] {
            let points = curve_by_sequences(&[run], &root, "eval/free/exact")?;
            if points.len() > 1 {
                let label = if labelled { String::new() } else { label(g) };
                labelled = true;
                learning.push(Series { label, points, dashed: false, color: i });
            }
        }
    }
    if !learning.is_empty() {
        figs.push((
            "free_by_sequences".into(),
            Figure::Lines(LineChart {
                title: "free-running exact match against sequences seen (a line per seed)".into(),
                x_label: "sequences seen".into(),
                y_label: "free-running exact".into(),
                series: learning,
                log2_x: false,
                y_range: Some((0.0, 1.0)),
                x_ticks: 8,
                legend_top: false,
            }),
        ));
    }

    let mut positions = Vec::new();
    for (i, g) in order.iter().enumerate() {
        for (mode, dashed) in [("forced", false), ("free", true)] {
            let points: Vec<(f64, f64)> = (1..)
                .map_while(|p| mean_of(&groups[g], &format!("eval/{mode}/pos_{p}")).map(|a| (p as f64, a)))
                .collect();
            if !points.is_empty() {
                let what = if dashed { "free-running" } else { "teacher-forced" };
                positions.push(Series { label: format!("{g}: {what}"), points, dashed, color: i });
            }
        }
    }
    let positions_len = positions.iter().map(|s| s.points.len()).max().unwrap_or(1);
    if !positions.is_empty() {
        figs.push((
            "positions".into(),
            Figure::Lines(LineChart {
                title: "accuracy per target position: teacher-forced (solid) vs free-running (dashed)".into(),
                x_label: "target position".into(),
                y_label: "accuracy".into(),
                series: positions,
                log2_x: false,
                y_range: Some((0.0, 1.02)),
                x_ticks: positions_len,
                legend_top: false,
            }),
        ));
    }

    let mut pass = Vec::new();
    for (i, g) in order.iter().enumerate() {
        let points: Vec<(f64, f64)> = (0..=6)
            .filter_map(|e| mean_of(&groups[g], &format!("eval/pass_at_k/{}", 1 << e)).map(|v| (e as f64, v)))
            .collect();
        if !points.is_empty() {
            pass.push(Series { label: label(g), points, dashed: false, color: i });
        }
    }
    if !pass.is_empty() {
        figs.push((
            "pass_at_k".into(),
            Figure::Lines(LineChart {
                title: "pass@k (unbiased estimate from sampled generations)".into(),
                x_label: "k".into(),
                y_label: "pass@k".into(),
                series: pass,
                log2_x: true,
                y_range: Some((0.0, 1.02)),
                x_ticks: 7,
                legend_top: false,
            }),
        ));
    }

    let measures: Vec<(String, Vec<Option<f64>>)> = ["creativity", "diversity", "memorized", "coherent"]
        .iter()
        .map(|m| (m.to_string(), order.iter().map(|g| mean_of(&groups[g], &format!("eval/diversity/{m}"))).collect()))
        .collect();
    if measures.iter().any(|(_, v)| v.iter().any(Option::is_some)) {
        figs.push((
            "creativity".into(),
            Figure::Bars(BarChart {
                title: "creativity, diversity and memorization (share of generations)".into(),
                y_label: "share".into(),
                groups: order.clone(),
                measures,
            }),
        ));
    }

    if !bound.is_empty() {
        figs.push((
            "mi_bound".into(),
            Figure::Lines(LineChart {
                title: "InfoNCE bound on I(h_t; F_t) during training (nats; log K is its ceiling)".into(),
                x_label: "step".into(),
                y_label: "bound (nats)".into(),
                series: bound,
                log2_x: false,
                y_range: None,
                x_ticks: 10,
                legend_top: false,
            }),
        ));
    }
    let (mi, log_k) = analysis_series(&order, &groups, &root, RunDir::MI_ANALYSIS, "position", "log_k", &label)?;
    if !mi.is_empty() {
        // The ceiling is the largest log K of the runs; a bound can be negative on test rows.
        let top = log_k.unwrap_or(1.0);
        let bottom = mi.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::min);
        let ticks = mi.iter().map(|s| s.points.len()).max().unwrap_or(1);
        figs.push((
            "mi_positions".into(),
            Figure::Lines(LineChart {
                title: format!("InfoNCE bound on I(h_t; F_t) per target position (log K = {top:.2})"),
                x_label: "target position".into(),
                y_label: "bound (nats)".into(),
                series: mi,
                log2_x: false,
                y_range: Some((bottom, top * 1.02)),
                x_ticks: ticks,
                legend_top: false,
            }),
        ));
    }
    // The planning analysis (`analysis plan RUN`): I(h_t; y | graph) at every input
    // position, the prompt included, averaged over the runs of a group that have it.
    let (plan, log_d) = analysis_series(&order, &groups, &root, RunDir::MI_PLAN, "index", "log_d", &label)?;
    if !plan.is_empty() {
        let top = log_d.unwrap_or(1.0);
        let bottom = plan.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::min);
        figs.push((
            "mi_plan".into(),
            Figure::Lines(LineChart {
                title: format!("I(h_t; arm | graph) per input position, other arms as negatives (log d = {top:.2})"),
                x_label: "input position t (the prompt, then the answer)".into(),
                y_label: "bound (nats)".into(),
                series: plan,
                log2_x: false,
                y_range: Some((bottom.min(-0.05), top * 1.05)),
                x_ticks: 12,
                legend_top: false,
            }),
        ));
    }
    Ok(figs)
}

/// Draws every figure of `dir` into `dir/plots/`; returns the files written.
pub fn plot(dir: &Path) -> Result<Vec<PathBuf>> {
    let figs = figures(dir)?;
    let out = dir.join("plots");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    for (name, fig) in &figs {
        files.extend(write(fig, &out.join(name))?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::EvalFile;
    use crate::report::{EvalReport, Scores};
    use lab_core::run_dir::checkpoint_stem;

    /// A finished run written by hand: config, final checkpoint sidecar (its presence is what
    /// "finished" means), metrics and eval.json.
    fn fake_run(dir: &Path, name: &str, loss: [f64; 2], free: f64) {
        let run = dir.join(name);
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        std::fs::write(run.join("config.toml"), "[schedule]\nsteps = 20\n").unwrap();
        std::fs::write(checkpoint_stem(&run, 20).with_extension("json"), "{}").unwrap();
        let metrics = format!(
            "{{\"step\":10,\"train/loss\":{}}}\n{{\"step\":20,\"train/loss\":{},\"train/mi_bound\":1.5}}\n",
            loss[0], loss[1]
        );
        std::fs::write(run.join("metrics.jsonl"), metrics).unwrap();
        let scores = |a: f64| Scores { exact: a, per_position: vec![1.0, a, a] };
        let report = EvalReport {
            examples: 10,
            forced: scores(1.0),
            free: scores(free),
            free_valid: free,
            teacherless: None,
            path_star: None,
            distance: None,
            diversity: None,
            teacherless_diversity: None,
            pass_at_k: Some(crate::PassAtK::new(&[1, 3], 4, "temperature 1".into())),
            failures: vec![],
            decoder: models::DecoderKind::Gpt,
        };
        let json = serde_json::to_string(&EvalFile { step: 20, scored: None, bf16_products: None, report }).unwrap();
        std::fs::write(run.join("eval.json"), json).unwrap();
    }

    #[test]
    fn free_running_exact_against_sequences_and_the_planning_curve() {
        let dir = tempfile::tempdir().unwrap();
        for (name, free) in [("bst-s0", [0.5, 0.9]), ("bst-s1", [0.5, 0.7])] {
            fake_run(dir.path(), name, [2.0, 1.0], free[1]);
            // Train lines carry the sequences seen; eval lines of the same step the accuracy.
            let metrics = format!(
                "{{\"step\":10,\"train/loss\":2.0,\"train/sequences\":640}}\n{{\"step\":10,\"eval/free/exact\":{}}}\n\
                 {{\"step\":20,\"train/loss\":1.0,\"train/sequences\":1280}}\n{{\"step\":20,\"eval/free/exact\":{}}}\n",
                free[0], free[1]
            );
            std::fs::write(dir.path().join(name).join("metrics.jsonl"), metrics).unwrap();
        }
        let plan = r#"{"step": 20, "decision": 0.6, "options": {"answer": "decision", "critic": "mlp"},
            "log_d": 0.693, "per_position": [{"index": 0, "bound": 0.0}, {"index": 1, "bound": 0.6}]}"#;
        std::fs::write(dir.path().join("bst-s0/mi_plan.json"), plan).unwrap();
        let figs = figures(dir.path()).unwrap();
        let get = |name: &str| match &figs.iter().find(|(n, _)| n == name).unwrap().1 {
            Figure::Lines(l) => l.clone(),
            Figure::Bars(_) => panic!("{name} is a line chart"),
        };
        let learning = get("free_by_sequences");
        assert_eq!(learning.series[0].label, "bst (2 seeds)");
        // A line per seed, in the group's colour; the legend names the group once.
        assert_eq!(learning.series.len(), 2);
        assert_eq!(learning.series[1].label, "");
        assert_eq!(learning.series[0].color, learning.series[1].color);
        assert_eq!(learning.series[0].points, vec![(640.0, 0.5), (1280.0, 0.9)]);
        assert_eq!(learning.series[1].points, vec![(640.0, 0.5), (1280.0, 0.7)]);
        // Only the run that has the analysis counts towards its group's planning curve.
        assert_eq!(get("mi_plan").series[0].points, vec![(0.0, 0.0), (1.0, 0.6)]);
    }

    #[test]
    fn a_sweep_directory_gets_its_figures_as_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path(), "ntp-s0", [2.0, 1.0], 0.5);
        fake_run(dir.path(), "ntp-s1", [2.2, 1.2], 0.7);
        fake_run(dir.path(), "mi-s0", [3.0, 1.5], 0.9);
        let analysis =
            r#"{"log_k": 2.0, "per_position": [{"position": 1, "bound": 1.5}, {"position": 2, "bound": 0.5}]}"#;
        std::fs::write(dir.path().join("mi-s0/mi_analysis.json"), analysis).unwrap();
        let figs = figures(dir.path()).unwrap();
        let names: Vec<&str> = figs.iter().map(|(n, _)| n.as_str()).collect();
        // No creativity figure: no run has diversity metrics.
        assert_eq!(names, ["loss", "positions", "pass_at_k", "mi_bound", "mi_positions"]);
        let Figure::Lines(mi) = &figs[4].1 else { panic!("mi_positions is a line chart") };
        assert_eq!((mi.series.len(), mi.series[0].points.clone()), (1, vec![(1.0, 1.5), (2.0, 0.5)]));
        let Figure::Lines(loss) = &figs[0].1 else { panic!("loss is a line chart") };
        // Groups in directory order (mi, ntp); a group's curve is the mean over its seeds.
        assert_eq!((loss.series[0].label.as_str(), loss.series[1].label.as_str()), ("mi", "ntp (2 seeds)"));
        let ntp = &loss.series[1].points;
        assert!(ntp.len() == 2 && (ntp[0].1 - 2.1).abs() < 1e-12 && (ntp[1].1 - 1.1).abs() < 1e-12, "{ntp:?}");
        let Figure::Lines(pos) = &figs[1].1 else { panic!("positions is a line chart") };
        assert_eq!((pos.series.len(), pos.series[1].dashed), (4, true));
        assert_eq!(pos.series[1].points, vec![(1.0, 1.0), (2.0, 0.9), (3.0, 0.9)]);
        let ntp_free: Vec<f64> = pos.series[3].points.iter().map(|p| p.1).collect();
        assert!((ntp_free[1] - 0.6).abs() < 1e-12, "{ntp_free:?}");

        let files = plot(dir.path()).unwrap();
        assert_eq!(files.len(), 10);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.len() > 1000, "{} is nearly empty", f.display());
            match f.extension().and_then(|e| e.to_str()) {
                Some("png") => assert_eq!(&bytes[..4], b"\x89PNG"),
                _ => assert!(String::from_utf8(bytes).unwrap().contains("<svg")),
            }
        }
        // One run directory alone is plotted too.
        assert!(figures(&dir.path().join("mi-s0")).is_ok());
        assert!(format!("{:#}", figures(&dir.path().join("nothing")).unwrap_err()).contains("not a directory"));
    }

    #[test]
    fn bar_charts_draw() {
        let dir = tempfile::tempdir().unwrap();
        let fig = Figure::Bars(BarChart {
            title: "t".into(),
            y_label: "share".into(),
            groups: vec!["a".into(), "b".into()],
            measures: vec![
                ("creativity".into(), vec![Some(0.1), None]),
                ("diversity".into(), vec![Some(0.5), Some(0.2)]),
            ],
        });
        for f in write(&fig, &dir.path().join("bars")).unwrap() {
            assert!(std::fs::metadata(&f).unwrap().len() > 1000);
        }
    }
}
