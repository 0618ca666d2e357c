#!/usr/bin/env bash
# The lab's GPU check: CUDA and wgpu on a real GPU beside PyTorch, prepared here and run there.
#
#   scripts/gpu-check.sh build            # here: dist binaries with cuda + wgpu, staged in gpu-check/
#   scripts/gpu-check.sh run              # on the GPU machine: every stage, results under $OUT
#   scripts/gpu-check.sh dry-run          # here: build, then run with flex and lavapipe standing in
#
# GPU_CHECK_PROFILE picks the cargo profile of the build (default `dist`, what is carried). CI's
# dry run uses `dev`: the dist binaries' thin-LTO builds take ~15 CPU-minutes each on two cores,
# and the dry run guards the script's logic, staging and stages, which the profile does not change.
#
# A GPU is lent now and then, for minutes, on a machine with no Rust and no package registry, so
# everything it needs is built and staged beforehand: `build` writes gpu-check/ (ignored by git,
# under the device tool's 64 MiB carry limit) and prints the one command to run there. `run` goes
# through its stages in order, each under its own time limit; a stage that fails or times out is
# recorded and the next one starts. Results: $OUT/summary.json (one entry per stage: status,
# seconds, log), $OUT/<stage>.log, criterion's estimates under $OUT/criterion/, PyTorch's under
# $OUT/torch.jsonl, the ntf run's directory under $OUT/runs/. `dry-run` is what .ci/run calls, so
# that the script cannot rot between draws: there every stage must pass.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
STAGE="$ROOT/gpu-check"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/lab-target}"

die() { echo "error: $*" >&2; exit 1; }

build() (
    set -e
    local features="trainer/cuda,trainer/wgpu,eval/cuda,eval/wgpu"
    local profile="${GPU_CHECK_PROFILE:-dist}" dir
    case $profile in dev) dir=debug ;; *) dir=$profile ;; esac
    echo "== building $profile binaries with cuda and wgpu (trainer, eval, train_step and decode benchmarks)"
    CARGO_TARGET_DIR="$TARGET" cargo build --profile "$profile" --locked -p trainer -p eval --features "$features" --bins
    local benches
    benches="$(CARGO_TARGET_DIR="$TARGET" cargo build --profile "$profile" --locked -p benches --features benches/cuda,benches/wgpu \
        --bench train_step --bench decode --message-format=json-render-diagnostics \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])')"
    rm -rf "$STAGE"
    mkdir -p "$STAGE/bin" "$STAGE/lib"
    cp "$TARGET/$dir/trainer" "$TARGET/$dir/eval" "$STAGE/bin/"
    while read -r name exe; do cp "$exe" "$STAGE/bin/$name"; done <<< "$benches"
    # dist strips its binaries; other profiles keep debug information the GPU machine has no use for.
    [ "$profile" = dist ] || strip "$STAGE"/bin/*
    # With cuda, wgpu and flex each binary is ~50-60 MB; xz brings it to ~10 (the GPU machine
    # unpacks with python's lzma, which every Python has).
    xz -T0 -6 "$STAGE"/bin/*
    # The Vulkan loader (Debian's libvulkan1); the GPU machine's driver brings its own ICD.
    local loader
    loader="$(ldconfig -p | awk '/libvulkan\.so\.1 / {print $NF; exit}')"
    [ -n "$loader" ] || die "no libvulkan.so.1 here: apt-get install libvulkan1"
    cp -L "$loader" "$STAGE/lib/libvulkan.so.1"
    echo "$(git rev-parse HEAD 2> /dev/null || echo unknown) $profile" > "$STAGE/COMMIT"
    (cd "$STAGE" && sha256sum bin/* lib/* > SHA256SUMS)
    local mib
    mib=$(( $(du -sb "$STAGE" | cut -f1) / 1048576 ))
    echo "gpu-check/: ${mib} MiB ($(cd "$STAGE/bin" && ls -s --block-size=M | tail -n +2 | tr '\n' ' '))"
    if [ "$profile" = dist ]; then
        [ "$mib" -lt 64 ] || die "gpu-check/ is ${mib} MiB, over the 64 MiB carry limit"
    fi
    echo "run on the GPU machine (device tool: carry [\"gpu-check\"], timeout_s 600):"
    echo "    bash scripts/gpu-check.sh run"
)

# ---- run ----------------------------------------------------------------------------------------

DRY=0
OUT_DIR=""
# The whole run's time: every stage's limit is cut to what is left of it, so that the command ends
# within one device call whatever hangs.
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
BUDGET_END=0
declare -a SUMMARY=()
FAILED=0

# stage NAME LIMIT_S COMMAND...: runs COMMAND with its output in $OUT_DIR/NAME.log, under a time
# limit, and records how it ended; never stops the script.
stage() {
    local name="$1" limit="$2"
    shift 2
    local log="$OUT_DIR/$name.log" start end rc status left
    left=$((BUDGET_END - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        skip "$name" "out of time (the run's budget is ${BUDGET_S}s)"
        FAILED=$((FAILED + 1))
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $name (limit ${limit}s)"
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    [ "$status" = ok ] || FAILED=$((FAILED + 1))
    local secs
    secs=$(python3 -c "print(round($end - $start, 1))")
    echo "   $status in ${secs}s (rc $rc; $log)"
    [ "$status" = ok ] || tail -n 5 "$log" | sed 's/^/   | /'
    SUMMARY+=("{\"stage\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $secs, \"log\": \"$name.log\"}")
}

skip() {
    echo "== $1: skipped ($2)"
    SUMMARY+=("{\"stage\": \"$1\", \"status\": \"skipped\", \"why\": \"$2\"}")
}

write_summary() {
    {
        echo "{\"dry_run\": $([ $DRY = 1 ] && echo true || echo false), \"commit\": \"$(cat "$STAGE/COMMIT")\","
        echo " \"stages\": ["
        local i
        for i in "${!SUMMARY[@]}"; do
            [ "$i" -gt 0 ] && echo ","
            printf '  %s' "${SUMMARY[$i]}"
        done
        echo
        echo " ]}"
    } > "$OUT_DIR/summary.json"
    echo "summary: $OUT_DIR/summary.json ($FAILED stage(s) not ok)"
}

# The PyTorch reference at the benchmark sizes, eager and (on a GPU) compiled, one JSON line each.
torch_reference() {
    local device="$1" sizes="$2" modes="$3" size mode
    for size in $sizes; do
        case $size in
            tiny) args="--d-model 64 --n-layers 2 --n-heads 2 --batch 64 --seq-len 15 --vocab 14" ;;
            d128) args="--d-model 128 --n-layers 2 --n-heads 4 --batch 64 --seq-len 32 --vocab 54" ;;
            ntf) args="--d-model 384 --n-layers 6 --n-heads 6 --batch 64 --seq-len 32 --vocab 54" ;;
        esac
        for mode in $modes; do
            # shellcheck disable=SC2086
            python3 benches/gpt_step.py $args --device "$device" --steps 20 $([ "$mode" = compile ] && echo --compile) \
                || echo "{\"size\": \"$size\", \"mode\": \"$mode\", \"error\": true}"
        done
    done
}

# Steps per second of a run directory's training, from its metrics and the stage's wall time.
run_rate() {
    local run="$1" secs="$2"
    python3 - "$run" "$secs" <<'EOF'
import json, sys
run, secs = sys.argv[1], float(sys.argv[2])
steps = 0
for line in open(f"{run}/metrics.jsonl"):
    m = json.loads(line)
    steps = max(steps, m["step"])
print(json.dumps({"run": run, "steps": steps, "wall_s": secs, "steps_per_s": round(steps / secs, 2) if secs else None}))
EOF
}

timed_run() {
    local out="$1"
    shift
    local start end
    start=$(date +%s.%N)
    "$@"
    local rc=$?
    end=$(date +%s.%N)
    run_rate "$out" "$(python3 -c "print($end - $start)")" | tee "$out.rate.json"
    return $rc
}

run() {
    [ -d "$STAGE/bin" ] || die "gpu-check/ is not staged: run scripts/gpu-check.sh build here first"
    OUT_DIR="${OUT:-$ROOT/gpu-check/out}"
    BUDGET_END=$(( $(date +%s) + BUDGET_S ))
    mkdir -p "$OUT_DIR/runs"
    (cd "$STAGE" && sha256sum --check --quiet SHA256SUMS) || die "gpu-check/ does not match its SHA256SUMS"
    local bin
    bin="$(mktemp -d)"
    for packed in "$STAGE"/bin/*.xz; do
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$packed" "$bin/$(basename "$packed" .xz)" || die "could not unpack $packed"
    done
    chmod +x "$bin"/*
    export LD_LIBRARY_PATH="$STAGE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # burn's CUDA runtime (cudarc, built here without nvcc: CUDA 13.4's bindings, loaded at run
    # time) opens libcuda.so.1 and libnvrtc.so(.13). The toolkit's folder is often not in the
    # loader's path, and PyTorch's wheels carry an NVRTC of their own: add whichever exists.
    local nvrtc
    nvrtc="$( (ls /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda-*/lib64/libnvrtc.so* 2> /dev/null;
        python3 -c 'import nvidia, glob, os; [print(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "libnvrtc.so*"), recursive=True)]' 2> /dev/null) | head -n 1)"
    if [ -n "$nvrtc" ]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$nvrtc")"
        echo "NVRTC: $nvrtc"
    fi
    export CRITERION_HOME="$OUT_DIR/criterion"
    export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
    local gpu filter quick
    # Criterion: short warm-up and measurement, so that the benchmarks fit the device time.
    quick=(--warm-up-time 1 --measurement-time 3 --noplot)
    if [ $DRY = 1 ]; then
        gpu=flex filter=tiny
    else
        gpu=cuda filter=""
    fi

    # The first `import torch` reads a few GB of CUDA libraries; from a cold disk that took over 30 s
    # in CI (the process printed its version and was still running at the limit). The GPU machine
    # needs the import (is CUDA available to torch?) and gets a minute; the dry run only names the
    # version, from the package's metadata, without importing it.
    if command -v nvidia-smi > /dev/null; then
        stage environment 60 bash -c 'nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
            (nvcc --version || true); echo LD_LIBRARY_PATH=$LD_LIBRARY_PATH; python3 -c "import torch; print(\"torch\", torch.__version__, torch.version.cuda, torch.cuda.is_available())"'
    elif [ $DRY = 1 ]; then
        stage environment 30 bash -c 'uname -a; nproc; (python3 -c "from importlib.metadata import version; print(\"torch\", version(\"torch\"))" 2> /dev/null || echo "no torch")'
    else
        skip environment "no nvidia-smi"
    fi
    # First of all: does burn's CUDA runtime (cudarc) load this driver and NVRTC at all?
    stage smoke 90 "$bin/trainer" --device "$gpu" train --quiet --config configs/path-star/ntp.toml \
        --set schedule.steps=20 --set schedule.eval_every=0 --set eval.pass_at_k.prompts=0 --out "$OUT_DIR/runs/smoke"
    stage "train-step-$gpu" 120 env LAB_BENCH_DEVICES="$gpu" "$bin/train_step" --bench "${quick[@]}" $filter
    if python3 -c "import torch" 2> /dev/null; then
        if [ $DRY = 1 ]; then
            # (150 s: the dry run's environment stage no longer imports torch, so this stage pays the
            # cold first import.)
            stage torch-cpu 150 bash -c "$(declare -f torch_reference); torch_reference cpu tiny eager > '$OUT_DIR/torch.jsonl'"
        else
            stage torch-cuda 120 bash -c "$(declare -f torch_reference); torch_reference cuda 'tiny d128 ntf' 'eager compile' > '$OUT_DIR/torch.jsonl'"
        fi
    else
        skip torch "python3 has no torch"
    fi
    # The paper-size run (G(2,5,50), 6 x 384, batch 256) for as long as its stage allows: steps/s,
    # the loss plateau in metrics.jsonl, the teacher-forced vs free-running table at its evaluations.
    if [ $DRY = 1 ]; then
        stage ntf-run 120 bash -c "$(declare -f run_rate timed_run); timed_run '$OUT_DIR/runs/ntf' \
            '$bin/trainer' --device flex train --quiet --config configs/path-star/ntp.toml --set schedule.steps=40 \
            --set eval.pass_at_k.prompts=0 --out '$OUT_DIR/runs/ntf'"
    else
        stage ntf-run 150 bash -c "$(declare -f run_rate timed_run); timed_run '$OUT_DIR/runs/ntf' \
            '$bin/trainer' --device cuda train --quiet --config configs/path-star/ntf.toml --set schedule.steps=3000 \
            --set schedule.eval_every=1000 --set eval.pass_at_k.prompts=0 --out '$OUT_DIR/runs/ntf'"
        [ -f "$OUT_DIR/runs/ntf.rate.json" ] || run_rate "$OUT_DIR/runs/ntf" 150 > "$OUT_DIR/runs/ntf.rate.json" 2> /dev/null
    fi
    if [ $DRY = 1 ]; then
        # Software Vulkan takes seconds a step: the staged binary and loader train a few steps.
        stage train-wgpu-cpu 240 "$bin/trainer" --device wgpu-cpu train --quiet --config configs/path-star/ntp.toml \
            --set schedule.steps=2 --set schedule.log_every=1 --set eval.examples=4 --set eval.pass_at_k.prompts=0 \
            --out "$OUT_DIR/runs/wgpu-cpu"
    else
        stage train-step-wgpu 75 env LAB_BENCH_DEVICES=wgpu "$bin/train_step" --bench "${quick[@]}"
    fi
    stage "decode-$gpu" 45 env LAB_BENCH_DEVICES="$gpu" "$bin/decode" --bench "${quick[@]}" tiny
    write_summary
    if [ $DRY = 1 ] && [ $FAILED -gt 0 ]; then
        die "the dry run had $FAILED stage(s) not ok"
    fi
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    dry-run) build && DRY=1 run ;;
    -h|--help|"") sed -n '2,16p' "$0" ;;
    *) die "unknown command $1 (build, run or dry-run)" ;;
esac
