"""The lab's training step beside PyTorch's, at the sizes the planning experiments use (issue 18).

For each case (objective × model size × path-star size) it runs the lab's criterion benchmark
`experiment_step/flex/<objective>-d<width>-l<layers>-b<batch>-<task>` and the PyTorch reference
`benches/gpt_step.py` with the same shapes, back to back and in interleaved rounds (the machine's
speed drifts by several percent within minutes, so only ratios measured in the same minutes are
compared). Prints a Markdown table: ms per step for each (the range over rounds), the lab's
throughput over PyTorch's, the step's FLOPs (PyTorch's count of the same model's products and
attention) and its floor at the cores' peak (the best square product any case measured), and
writes the rounds to a CSV.

    python3 benches/vs_torch.py [--rounds 3] [--cases ntp-l2-g2-4-10,bst-tiny-g2-4-10] [--csv out.csv] [--bf16]
        [--whole-rows]

Cases are `<objective>-<size>-<task>`: objective ntp, bst or next-lat; size `l2` or `l4` (d 128,
4 heads, batch 128: the issue's experiment size) or `tiny` (d 64, 2 layers, 2 heads, batch 64:
the model and batch of every shipped path-star config and sweep); task g2-4-10 or g2-5-50.

The reference computes what the lab computes: since 2026-12-06 only the positions each loss reads
(NTP's and BST's last block from the prompt's last token on, BST's backward encoder up to the
deepest suffix a pair reads). `--whole-rows` also times it over every position, as both computed
before, for the research step's gain over a plain PyTorch step.

Needs PyTorch (`pip install torch`) and a release build of the benchmarks (it runs
`cargo bench -p benches --bench train_step`, building first if needed). Run nothing else
meanwhile: both use every core.
"""
import argparse, csv, glob, json, os, re, subprocess, sys

# Path-star sizes: (vocabulary, input positions, prompt tokens); tasks/src/path_star.rs.
TASKS = {"g2-4-10": (14, 24, 21), "g2-5-50": (54, 31, 27)}
OBJECTIVES = ["ntp", "bst", "next-lat"]
# Model sizes: (width, layers, heads, batch).
SIZES = {"l2": (128, 2, 4, 128), "l4": (128, 4, 4, 128), "tiny": (64, 2, 2, 64)}

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=2)
p.add_argument("--cases", default="", help="comma-separated <objective>-<l2|l4|tiny>-<task>; default all 18")
p.add_argument("--python", default=sys.executable, help="the Python with torch")
p.add_argument("--csv", default="", help="write every round's measurements here")
p.add_argument("--whole-rows", action="store_true",
               help="also time PyTorch over every position (gpt_step.py --whole-rows), the step before the "
                    "lab skipped the positions no loss reads")
p.add_argument("--bf16", action="store_true",
               help="also time the lab with its linear maps' products in bf16 (needs AVX512-BF16) and "
                    "PyTorch under bf16 autocast")
a = p.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
cases = [f"{o}-{s}-{t}" for t in TASKS for s in SIZES for o in OBJECTIVES]
if a.cases:
    cases = a.cases.split(",")


def parse(case):
    m = re.fullmatch(r"(ntp|bst|next-lat)-(l2|l4|tiny)-(g2-4-10|g2-5-50)", case)
    if not m:
        sys.exit(f"unknown case {case!r}: <ntp|bst|next-lat>-<l2|l4|tiny>-<g2-4-10|g2-5-50>")
    return m[1], SIZES[m[2]], m[3]


def lab_ms(case, backend="flex"):
    objective, (width, layers, _, batch), task = parse(case)
    name = f"experiment_step/{backend}/{objective}-d{width}-l{layers}-b{batch}-{task}"
    run = subprocess.run(["cargo", "bench", "-q", "-p", "benches", "--bench", "train_step", "--", "--exact", name],
                         cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.exit(f"the lab's benchmark {name} failed:\n{run.stderr}")
    for path in glob.glob(os.path.join(target, "criterion", "experiment_step", "*", "new", "benchmark.json")):
        with open(path) as f:
            if json.load(f)["full_id"] == name:
                with open(os.path.join(os.path.dirname(path), "estimates.json")) as e:
                    return json.load(e)["median"]["point_estimate"] / 1e6
    sys.exit(f"no criterion result for {name} under {target}/criterion")


def torch_step(case, bf16=False, whole_rows=False):
    objective, (width, layers, heads, batch), task = parse(case)
    vocab, seq, prefix = TASKS[task]
    args = [a.python, os.path.join(root, "benches", "gpt_step.py"), "--d-model", str(width), "--n-layers", str(layers),
            "--n-heads", str(heads), "--batch", str(batch), "--seq-len", str(seq), "--vocab", str(vocab),
            "--steps", "50" if batch < 128 else "20",
            "--objective", objective, "--prefix-len", str(prefix)]
    # The FLOP count and floor come from the step the lab computes (not the whole-rows one).
    args += ["--autocast-bf16"] if bf16 else ["--whole-rows"] if whole_rows else ["--flops"]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


rows = []
for r in range(a.rounds):
    for case in cases:
        lab = lab_ms(case)
        bf16 = lab_ms(case, "flex-bf16") if a.bf16 else None
        ref = torch_step(case)
        ref_bf16 = torch_step(case, bf16=True) if a.bf16 else None
        ref_whole = torch_step(case, whole_rows=True) if a.whole_rows else None
        rows.append({"round": r, "case": case, "lab_ms": round(lab, 2),
                     "lab_bf16_ms": round(bf16, 2) if bf16 else "", "torch_ms": ref["ms_per_step"],
                     "torch_bf16_ms": ref_bf16["ms_per_step"] if ref_bf16 else "",
                     "torch_whole_rows_ms": ref_whole["ms_per_step"] if ref_whole else "",
                     "gflop": ref["gflop_per_step"], "peak_gflops": ref["peak_gflops"], "floor_ms": ref["floor_ms"],
                     "torch": ref["impl"]})
        print(f"round {r} {case}: lab {lab:.2f} ms, PyTorch {ref['ms_per_step']} ms, floor {ref['floor_ms']} ms",
              file=sys.stderr)

# One peak for every case: the best product measured in any of them.
peak = max(x["peak_gflops"] for x in rows)
for x in rows:
    x["floor_ms"] = round(x["gflop"] / peak * 1e3, 2)
    x["peak_gflops"] = peak

if a.csv:
    os.makedirs(os.path.dirname(os.path.abspath(a.csv)), exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def span(xs, fmt="{:.1f}"):
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


whole_head = " PyTorch whole rows ms | lab / PyTorch whole rows |" if a.whole_rows else ""
bf16_head = " lab bf16 ms | PyTorch bf16 ms | lab bf16 / PyTorch | lab bf16 / PyTorch bf16 |" if a.bf16 else ""
print(f"| case | lab ms | PyTorch ms | lab / PyTorch throughput |{whole_head}{bf16_head} GFLOP | floor ms "
      "| lab / floor |")
print("|---|---|---|---|" + ("---|---|" if a.whole_rows else "") + ("---|---|---|---|" if a.bf16 else "") + "---|---|---|")
for case in cases:
    rs = [x for x in rows if x["case"] == case]
    ratios = [x["torch_ms"] / x["lab_ms"] for x in rs]
    bf16_cells = ""
    whole_cells = ""
    if a.whole_rows:
        whole_cells = (f" {span([x['torch_whole_rows_ms'] for x in rs])} |"
                       f" {span([x['torch_whole_rows_ms'] / x['lab_ms'] for x in rs], '{:.2f}')}x |")
    if a.bf16:
        bf16_cells = (f" {span([x['lab_bf16_ms'] for x in rs])} | {span([x['torch_bf16_ms'] for x in rs])} |"
                      f" {span([x['torch_ms'] / x['lab_bf16_ms'] for x in rs], '{:.2f}')}x |"
                      f" {span([x['torch_bf16_ms'] / x['lab_bf16_ms'] for x in rs], '{:.2f}')}x |")
    print(f"| {case} | {span([x['lab_ms'] for x in rs])} | {span([x['torch_ms'] for x in rs])} | "
          f"{span(ratios, '{:.2f}')}x |{whole_cells}{bf16_cells} {rs[0]['gflop']:.2f} | {span([x['floor_ms'] for x in rs])} | "
          f"{span([x['lab_ms'] / x['floor_ms'] for x in rs], '{:.2f}')}x |")
