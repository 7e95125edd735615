#!/usr/bin/env bash
# The checks that need a GPU, as one script (CI has none): the CUDA tests, `blindspots audit` against AutoAttack on
# the GPU, and the §6 clip ablation's two arms side by side on the GPU, each cut at a wall-clock budget.
#   bash benchmarks/gpu_check.sh OUT_DIR [MNIST_DIR] [WHEELS_DIR]
# MNIST_DIR: the four IDX files (raw or .gz) where nothing can be fetched; WHEELS_DIR: wheels to install first
# (torchattacks for the benchmark, highspy where it is missing). Logs and the ablation curves land in OUT_DIR.
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [MNIST_DIR] [WHEELS_DIR]}"
mkdir -p "$OUT"
if [ -n "${3:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$3"/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 BLINDSPOTS_HOME="${BLINDSPOTS_HOME:-/tmp/bshome}"
[ -n "${2:-}" ] && export BLINDSPOTS_DATA="$(cd "$2" && pwd)"
nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/device.txt"
ABL_MIN="${ABL_MIN:-7.5}"
for arm in clip noclip; do
  python3 results/goodfellow2015-maxout-original/ablation_clip.py --arm "$arm" --epochs 1000 --minutes "$ABL_MIN" \
    --device cuda --out "$OUT" > "$OUT/ablation_$arm.log" 2>&1 &
done
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_reliability.py -k cuda 2>&1 | tee "$OUT/pytest.log"
timeout "${BENCH_S:-330}" python3 benchmarks/bench_audit_vs_autoattack.py --device cuda --n "${BENCH_N:-500}" \
  --models "${BENCH_MODELS:-masked,FC100-100-10,CNN}" 2>&1 | tee "$OUT/bench_audit_vs_autoattack.log"
wait
tail -n 2 "$OUT"/ablation_*.log
