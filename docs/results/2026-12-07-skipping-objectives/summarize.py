"""Summarises the A/B rounds: python3 summarize.py ab-rounds-1-3.txt ab-rounds-4-6.txt > table.md
(writes ab.csv beside the first file; `--csv NAME` names it otherwise)."""
import os, re, sys, statistics, csv
args = sys.argv[1:]
name = "ab.csv"
if "--csv" in args:
    i = args.index("--csv"); name = args[i + 1]; del args[i:i + 2]
rows = []
for f in args:
    for line in open(f):
        m = re.match(r"(\d+) (\S+) (\S+) free_exact=(\S+) .*?in ([\d.]+) s: \d+ sequences, (\d+) sequences/s.*alone (\d+) sequences/s \(([\d.]+) s\)", line)
        if m:
            rows.append(dict(round=int(m[1]), config=m[2], build=m[3], free_exact=float(m[4]), seconds=float(m[5]),
                             overall=int(m[6]), training=int(m[7]), training_seconds=float(m[8])))
w = csv.DictWriter(open(os.path.join(os.path.dirname(os.path.abspath(args[0])), name), "w", newline=""), fieldnames=list(rows[0]))
w.writeheader(); w.writerows(rows)
configs = list(dict.fromkeys(r["config"] for r in rows))
print("| config | before (b9ff84c) | after (a612cfe) | after / before, each round | median | free exact |")
print("|---|---|---|---|---|---|")
for c in configs:
    a = {r["round"]: r for r in rows if r["config"] == c and r["build"] == "A"}
    b = {r["round"]: r for r in rows if r["config"] == c and r["build"] == "B"}
    ratios = [b[k]["training"] / a[k]["training"] for k in sorted(a) if k in b]
    ta = [r["training"] for r in a.values()]; tb = [r["training"] for r in b.values()]
    ex = sorted({r["free_exact"] for r in list(a.values()) + list(b.values())})
    print(f"| {c} | {min(ta):,}-{max(ta):,} | {min(tb):,}-{max(tb):,} | {', '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}x | {', '.join(map(str, ex))} |")
