#!/usr/bin/env python3
"""Mean ± sd over seeds of a directory of finished runs named <objective>-s<seed> (eval.json
of the last step): for path-star, free-running exact match, decision-token accuracy, Clever-Hans
rate, teacher-forced accuracy per target position and teacherless decoding where the run has it;
for the other tasks, free-running validity, creativity, diversity and memorization (creative
tasks) and pass@k.
A stopgap until `eval compare` (the sweeps issue) does this in Rust.

    python3 scripts/summarize.py runs/pitfalls-baselines
"""
import json
import re
import statistics
import sys
import tomllib
from collections import defaultdict
from pathlib import Path


def fmt(xs):
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def main(root):
    groups = defaultdict(list)
    for ev in sorted(Path(root).glob("*-s*/eval.json")):
        m = re.fullmatch(r"(.+)-s(\d+)", ev.parent.name)
        if not m:
            continue
        report = json.loads(ev.read_text())
        steps = tomllib.loads((ev.parent / "config.toml").read_text())["schedule"]["steps"]
        if report["step"] == steps:  # finished: the report of the last step
            groups[m.group(1)].append((int(m.group(2)), report))
    if not groups:
        sys.exit(f"no runs with eval.json under {root}")
    if any(r["path_star"] is None for runs in groups.values() for _, r in runs):
        return other_tasks(groups)
    print("| objective | seeds | free-running exact | decision token | Clever-Hans rate | teacher-forced per position | teacherless exact |")
    print("|---|---|---|---|---|---|---|")
    for obj, runs in groups.items():
        runs.sort()
        free = [r["free"]["exact"] for _, r in runs]
        dec = [r["path_star"]["decision"] for _, r in runs]
        ch = [r["path_star"]["clever_hans"] for _, r in runs]
        forced = [r["forced"]["per_position"] for _, r in runs]
        per_pos = " / ".join(f"{statistics.mean(p):.2f}" for p in zip(*forced))
        tl = [r["teacherless"]["exact"] for _, r in runs if r.get("teacherless")]
        seeds = ",".join(str(s) for s, _ in runs)
        print(f"| {obj} | {seeds} | {fmt(free)} | {fmt(dec)} | {fmt(ch)} | {per_pos} | {fmt(tl)} |")


def other_tasks(groups):
    ks = [1, 4, 16, 64]
    head = "| objective | seeds | free-running valid | coherent | memorized | creativity | diversity |"
    head += "".join(f" pass@{k} |" for k in ks)
    print(head)
    print("|---" * (7 + len(ks)) + "|")
    for obj, runs in groups.items():
        runs.sort()
        seeds = ",".join(str(s) for s, _ in runs)
        for label, key in [("", "diversity"), (" (one pass)", "teacherless_diversity")]:
            ds = [r.get(key) for _, r in runs if r.get(key)]
            if key == "teacherless_diversity" and not ds:
                continue
            row = f"| {obj}{label} | {seeds} | "
            row += fmt([r["free_valid"] for _, r in runs]) if not label else "-"
            for m in ["coherent", "memorized", "creativity", "diversity"]:
                row += f" | {fmt([d[m] for d in ds])}"
            for k in ks:
                ps = [r["pass_at_k"]["pass_at"][k - 1] for _, r in runs
                      if r.get("pass_at_k") and len(r["pass_at_k"]["pass_at"]) >= k]
                row += f" | {fmt(ps) if not label else '-'}"
            print(row + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/pitfalls-baselines")
