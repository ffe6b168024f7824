#!/usr/bin/env bash
# One-shot GPU check: the GPU tests, the fused-coupling benchmark, LLFlow end to end (enhancement
# eager, compiled and bfloat16 at 400x600, a training step under bfloat16 autocast; LOL, 1080p and
# 4K enhancement) and a DDP training run over NCCL under torchrun on one GPU. Each part runs under
# its own time limit so that one slow or failing part cannot eat the others' time; a part that hits
# its limit is reported as rc=124 and the script goes on. The limits add up to 450 s and the script
# never starts a part past BUDGET seconds (default 460), so it fits one device call of 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [RESULTS_FOLDER]
#
# RESULTS_FOLDER defaults to benchmarks/results/gpu_check_<GPU name>, e.g. gpu_check_nvidia-h100-80gb-hbm3.
# Everything lands there: versions.txt, nvidia-smi.txt, one log per part, summary.txt (each part's
# exit status and wall time), and the benchmarks' .json/.md results (their names carry the GPU too);
# the folder is also packed into RESULTS_FOLDER.tar.gz (one file to bring back from a device machine).
# --dry-run prints every command it would run, with its limit, and runs nothing.
# It needs only what the machine has: python3 with torch (CUDA) and triton; flowkit is used from
# this checkout through PYTHONPATH, so nothing is installed.
set -u
cd "$(dirname "$0")/.."
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
budget=${BUDGET:-460}
if [ "$dry_run" = 1 ]; then
    tag="<gpu-name>"
else
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    tag=$(printf '%s' "${gpu:-no-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
fi
folder=${1:-benchmarks/results/gpu_check_$tag}
ddp_run=${TMPDIR:-/tmp}/flowkit_gpu_check_ddp
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start_all=$(date +%s)

part() {  # part NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 start rc left
    shift 2
    if [ "$dry_run" = 1 ]; then
        echo "[$name, limit $limit s] $*"
        return
    fi
    left=$(( budget - ($(date +%s) - start_all) ))
    if [ "$left" -lt 10 ]; then
        echo "$name: skipped, the budget of $budget s is spent" | tee -a "$folder/summary.txt"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$folder/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc, $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$folder/summary.txt"
}

if [ "$dry_run" = 1 ]; then
    echo "results: $folder (and $folder.tar.gz); budget $budget s"
else
    mkdir -p "$folder"
    rm -rf "$ddp_run"
    : > "$folder/summary.txt"
    nvidia-smi > "$folder/nvidia-smi.txt" 2>&1
    python3 - > "$folder/versions.txt" 2>&1 <<'EOF'
import platform, torch, triton
print("python", platform.python_version(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
EOF
    cat "$folder/versions.txt"
fi

# Correctness first: every kernel test on the GPU (the gpu-marked ones included: 1080p/4K tile
# counts, channels-last, determinism, a 2**31-element plane; the self-check of the "auto" backend;
# the kernels compiled ahead of time), and the LLFlow-through-kernels test.
part tests 90 python3 -m pytest -q -p no:cacheprovider tests/kernels
# The fused affine op at LLFlow's training, LOL, 1080p and 4K shapes: eager, compile, Triton, and
# the kernels alone from a CUDA graph.
part coupling_fp32 45 python3 benchmarks/coupling.py --rounds 15 --out "$folder"
part coupling_bf16 35 python3 benchmarks/coupling.py --dtype bfloat16 --rounds 10 --out "$folder"
# LLFlow end to end (eager, compile, compile+graphs, kernels, compile+kernels, bf16, kernels+bf16):
# lol_small enhancement at 400x600 and its training step (bf16: under autocast); lol enhancement;
# 1080p and 4K.
part llflow_lol_small 110 python3 benchmarks/llflow.py --preset lol_small --rounds 10 --out "$folder"
part llflow_lol 50 python3 benchmarks/llflow.py --preset lol --cases enhance --rounds 10 --out "$folder"
part llflow_1080p 35 python3 benchmarks/llflow.py --preset lol_small --cases enhance --size 1080x1920 \
    --no-compile --rounds 8 --tag 1080p --out "$folder"
part llflow_4k 30 python3 benchmarks/llflow.py --preset lol_small --cases enhance --size 2160x3840 \
    --no-compile --rounds 5 --tag 4k --out "$folder"
# The CUDA training path: torchrun with one process trains with DDP over NCCL (flowkit makes a
# process group under torchrun whatever the world size), bfloat16 autocast, 20 steps and a
# validation; the run folder (a checkpoint) stays outside the repository.
part ddp_nccl 55 python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m flowkit train \
    --config benchmarks/gpu_check_ddp.toml --device cuda --output "$ddp_run" --no-progress

if [ "$dry_run" = 1 ]; then
    echo "tar -czf $folder.tar.gz -C $(dirname "$folder") $(basename "$folder")"
    exit 0
fi
tar -czf "$folder.tar.gz" -C "$(dirname "$folder")" "$(basename "$folder")"
echo "results in $folder and $folder.tar.gz ($(( $(date +%s) - start_all )) s)"
