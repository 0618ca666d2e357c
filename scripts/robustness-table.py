#!/usr/bin/env python3
"""One table of `eval robustness` over a sweep's runs: free-running exact per test set, mean ± sd
over the seeds of each group (a run `<group>-s<seed>`), from each run's latest
robustness-step_N.json (in evals/, or beside eval.json in an export). Run `eval robustness RUN`
on the runs first.

    python3 scripts/robustness-table.py runs/sweeps/equal-g2410 [more sweeps...]
"""
import json
import re
import statistics
import sys
from pathlib import Path


def latest(run: Path):
    # A run directory keeps them in evals/; scripts/export-results.sh puts them beside eval.json.
    found = list(run.glob("evals/robustness-step_*.json")) + list(run.glob("robustness-step_*.json"))
    files = sorted(found, key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return json.loads(files[-1].read_text()) if files else None


def main(sweeps):
    groups, variants = {}, []
    for sweep in map(Path, sweeps):
        for run in sorted(p for p in sweep.iterdir() if p.is_dir()):
            report = latest(run)
            if report is None:
                continue
            group = sweep.name + "/" + re.sub(r"-s\d+$", "", run.name)
            for row in report["rows"]:
                if row["variant"] not in variants:
                    variants.append(row["variant"])
                groups.setdefault(group, {}).setdefault(row["variant"], []).append(row)
    if not groups:
        sys.exit("no run has a robustness report: run `eval robustness RUN` first")
    print("| run group | seeds | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for group, rows in groups.items():
        cells = []
        for v in variants:
            scored = [r["free_exact"] for r in rows.get(v, []) if r["free_exact"] is not None]
            if not scored:
                why = next((r["skipped"] for r in rows.get(v, []) if r["skipped"]), "")
                cells.append("not scored" + (" (learned positions)" if "learned positions" in why else ""))
            elif len(scored) == 1:
                cells.append(f"{scored[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(scored):.3f} ± {statistics.stdev(scored):.3f}")
        seeds = max(len(r) for r in rows.values())
        print(f"| {group} | {seeds} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
