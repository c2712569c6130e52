#!/usr/bin/env bash
# Everything the speed work needs from a GPU session: the GPU tests (fast paths and the fused
# kernel compiled, bf16), the fused kernel's candidate launches timed against sdpa, the
# throughput table of every attention path at enwik8 base (eager and compiled), the Rae &
# Razavi plans, a profile of the step, and the GPU-only training features (bf16, fp16 with the
# loss scaler, compile, torchrun with NCCL, resume, the fused loss curve beside plain).
#
#   bash benchmarks/gpu_session.sh [OUT [PART ...]]   # OUT defaults to benchmarks/out
#
# With PART names only those parts run, so that a machine allowing 10 minutes a command can
# take them in groups, for example:
#   tests-gpu tests-fused kernel-time          (the kernel correct, compiled; its launches timed)
#   bench-impls                                (enwik8 base: every path)
#   bench-compiled                             (enwik8 base compiled: two graphs per case to compile)
#   bench-rae profile                          (24 layers, Rae & Razavi plans; the profile)
#   train-bf16 resume-gpu train-fp16 train-compile train-compile-fused torchrun-nccl loss-curves
# (resume-gpu and loss-curves read train-bf16's run: name them in its call). Each part runs even
# when an earlier one fails; the summary at the end says which failed. BUNDLE=FILE.tgz (outside
# OUT; on the GPU machine under its $OUT, so it comes back) packs OUT's logs and JSON, no checkpoints.
set -uo pipefail
cd "$(dirname "$0")/.."
PARTS=" tests-gpu tests-fused kernel-time bench-impls bench-compiled bench-rae profile train-bf16 resume-gpu"
PARTS+=" train-fp16 train-compile train-compile-fused torchrun-nccl loss-curves "
OUT=${1:-benchmarks/out}
if [[ "$PARTS" == *" $OUT "* ]]; then echo "gpu_session.sh: give OUT first, then parts (got part $OUT as OUT)" >&2; exit 2; fi
shift $(( $# > 0 ? 1 : 0 ))
for name in "$@"; do
    if [[ "$PARTS" != *" $name "* ]]; then echo "gpu_session.sh: unknown part $name; parts:$PARTS" >&2; exit 2; fi
done
ONLY=" $* "
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
failed=()

selected() { [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $1 "* ]]; }

part() {  # part NAME COMMAND...: run, keep its output in OUT/NAME.log, remember a failure
    local name=$1
    shift
    selected "$name" || return 0
    echo "== $name: $*"
    local start=$SECONDS
    if ! "$@" >"$OUT/$name.log" 2>&1; then failed+=("$name"); fi
    tail -n 25 "$OUT/$name.log"
    echo "== $name took $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >>"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

part tests-gpu python3 -m pytest -q -x -m gpu tests/model/test_fast.py tests/model/test_fused.py
part tests-fused python3 -m pytest -q tests/model/test_fused.py
part kernel-time python3 -m txl bench kernel --time --markdown --out "$OUT/kernel-time.json"
part bench-impls python3 -m txl bench train --preset enwik8-base --impl plain,sdpa,flex,fused --precision bf16 \
    --out "$OUT/e8-impls.json" --markdown
part bench-rae python3 -m txl bench train --preset enwik8-large --impl sdpa,fused --precision bf16 --markdown --batch-size 8 \
    --memory 24x2304 --memory "lrm=4@interleave:2304,srm=128" --out "$OUT/e8-rae.json"
part bench-compiled python3 -m txl bench train --preset enwik8-base --impl sdpa,fused --precision bf16 \
    --set train.compile=true --markdown --out "$OUT/e8-compiled.json"
part profile python3 -m txl bench train --preset enwik8-base --impl sdpa,fused --precision bf16 --steps 3 \
    --profile "$OUT/profile" --out "$OUT/e8-profile.json"
RUN="$OUT/runs"
# each training part starts from a fresh run folder of its own (resume-gpu continues train-bf16's)
for pair in train-bf16:bf16 train-fp16:fp16 train-compile:compile train-compile-fused:compile-fused torchrun-nccl:ddp \
            loss-curves:plain-bf16; do
    selected "${pair%%:*}" && rm -rf "${RUN:?}/${pair#*:}"
done
part train-bf16 python3 -m txl train --preset tiny --run-dir "$RUN/bf16" --steps 60 --device cuda --no-progress \
    --set train.precision=bf16 --set model.attn_impl=fused --set train.save_every=30 --set train.log_every=5
part resume-gpu python3 -m txl train --run-dir "$RUN/bf16" --resume --steps 90 --device cuda --no-progress
part train-fp16 python3 -m txl train --preset tiny --run-dir "$RUN/fp16" --steps 60 --device cuda --no-progress \
    --set train.precision=fp16
part train-compile python3 -m txl train --preset tiny --run-dir "$RUN/compile" --steps 30 --device cuda --no-progress \
    --set train.compile=true
part train-compile-fused python3 -m txl train --preset tiny --run-dir "$RUN/compile-fused" --steps 30 --device cuda \
    --no-progress --set train.compile=true --set model.attn_impl=fused --set train.precision=bf16
part torchrun-nccl python3 -m torch.distributed.run --nproc_per_node 1 --standalone -m txl train --preset tiny \
    --run-dir "$RUN/ddp" --steps 30 --device cuda --no-progress
part loss-curves python3 - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
# the fused run's loss curve beside a plain one of the same seed: within bf16 noise
import subprocess
run = Path(sys.argv[1])
subprocess.run([sys.executable, "-m", "txl", "train", "--preset", "tiny", "--run-dir", str(run / "plain-bf16"), "--steps", "60",
                "--device", "cuda", "--no-progress", "--set", "train.precision=bf16", "--set", "model.attn_impl=plain",
                "--set", "train.log_every=5", "--set", "train.save_every=30"], check=True)
def losses(d):
    rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    return [round(r["loss"], 4) for r in rows if r.get("kind") == "train"][:60]
a, b = losses(run / "bf16"), losses(run / "plain-bf16")
print("fused", a)
print("plain", b)
print("largest gap", max(abs(x - y) for x, y in zip(a, b)))
EOF

echo
if [ -n "${BUNDLE:-}" ]; then
    if tar czf "$BUNDLE" --exclude='checkpoints' --exclude='*.pt' --exclude="$(basename "$BUNDLE")" -C "$OUT" .; then
        echo "bundled $OUT into $BUNDLE"
    else
        failed+=("bundle")
    fi
fi
if [ ${#failed[@]} -eq 0 ]; then echo "all parts passed; results in $OUT"; else echo "failed: ${failed[*]} (logs in $OUT)"; exit 1; fi
