#!/usr/bin/env bash
# One-shot GPU check (issue 11): the GPU tests, the fused-coupling benchmark and LLFlow end to end at
# training, LOL, 1080p and 4K shapes in float32 and bfloat16, each part under its own time limit so
# that one slow or failing part cannot eat the others' time. The limits add up to 470 s, inside the
# 8 minutes a lent H100/H200 session can spare; a part that hits its limit is reported as rc=124
# and the script goes on.
#
#   bash benchmarks/gpu_check.sh [RESULTS_FOLDER]      # default: benchmarks/results/gpu_check
#
# Everything lands in RESULTS_FOLDER: versions.txt, nvidia-smi.txt, one log per part, summary.txt
# (each part's exit status and wall time), and the benchmarks' .json/.md results; the same folder
# is also packed into RESULTS_FOLDER.tar.gz (one file to bring back from a device machine).
# It needs only what the machine has: python3 with torch (CUDA) and triton; flowkit is used from
# this checkout through PYTHONPATH, so nothing is installed.
set -u
cd "$(dirname "$0")/.."
folder=${1:-benchmarks/results/gpu_check}
mkdir -p "$folder"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: > "$folder/summary.txt"

part() {  # part NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$folder/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc, $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$folder/summary.txt"
}

nvidia-smi > "$folder/nvidia-smi.txt" 2>&1
python3 - > "$folder/versions.txt" 2>&1 <<'EOF'
import platform, torch, triton
print("python", platform.python_version(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
EOF
cat "$folder/versions.txt"

# Correctness first: every kernel test on the GPU (the gpu-marked ones included: 1080p/4K tile
# counts, channels-last, determinism, a 2**31-element plane), and the LLFlow-through-kernels test.
part tests 100 python3 -m pytest -q -p no:cacheprovider tests/kernels
# The fused affine op at LLFlow's training, LOL, 1080p and 4K shapes: eager, compile, Triton, and
# the kernels alone from a CUDA graph.
part coupling_fp32 60 python3 benchmarks/coupling.py --rounds 15 --out "$folder"
part coupling_bf16 45 python3 benchmarks/coupling.py --dtype bfloat16 --rounds 10 --out "$folder"
# LLFlow end to end (eager, compile, compile+graphs, kernels, compile+kernels, bf16, kernels+bf16):
# lol_small enhancement at LOL size and its training step; lol enhancement; 1080p and 4K.
part llflow_lol_small 120 python3 benchmarks/llflow.py --preset lol_small --rounds 10 --out "$folder"
part llflow_lol 60 python3 benchmarks/llflow.py --preset lol --cases enhance --rounds 10 --out "$folder"
part llflow_1080p 45 python3 benchmarks/llflow.py --preset lol_small --cases enhance --size 1080x1920 \
    --no-compile --rounds 8 --tag 1080p --out "$folder"
part llflow_4k 40 python3 benchmarks/llflow.py --preset lol_small --cases enhance --size 2160x3840 \
    --no-compile --rounds 5 --tag 4k --out "$folder"

tar -czf "$folder.tar.gz" -C "$(dirname "$folder")" "$(basename "$folder")"
echo "results in $folder and $folder.tar.gz"
