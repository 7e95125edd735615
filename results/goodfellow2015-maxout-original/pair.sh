#!/usr/bin/env bash
# The §6 pair on the original maxout recipe (plain and FGSM-adversarial 240-unit maxout, seed 0), run from the
# commit that started it, one arm per core, resumable across machines through the state committed here.
#   bash pair.sh resume   [RUNS_DIR]  start or continue both arms (state/ copied back first where newer is absent)
#   bash pair.sh snapshot [RUNS_DIR]  copy the arms' training stages and saved state into state/ (to commit)
#   bash pair.sh assemble [RUNS_DIR]  both arms done: one run folder, FGSM/transfer/report, published here
# RUNS_DIR defaults to /work/runs; the repo's .venv (from `make venv`) runs the frozen checkout's source. Stage keys
# hash the package source, so the runs must go on at COMMIT. Both arms have finished and state/ is gone (its git
# history holds it): `resume` now reruns the pair from the start, about 6 hours on two cores.
set -euo pipefail
COMMIT=ca36449
source "$(dirname "$0")/frozen.sh" "${2:-}"
ARMS="maxout maxout_adv"
blindspots() { PYTHONPATH="$FROZEN/src" PYTHONUNBUFFERED=1 "$PY" -m blindspots "$@"; }
training() { ls -d "$1"/stages/early-stop_* "$1"/stages/train_maxout* 2>/dev/null || true; }

case "${1:-}" in
resume)
  core=0
  for arm in $ARMS; do
    out="$RUNS/pair-$arm"
    for d in "$HERE"/state/$arm/*/*/; do
      [ -d "$d" ] || continue
      dest="$out/$(basename "$(dirname "$d")")/$(basename "$d")"
      [ -e "$dest" ] || { mkdir -p "$(dirname "$dest")"; cp -r "$d" "$dest"; }
    done
    OMP_NUM_THREADS=1 PYTHONPATH="$FROZEN/src" PYTHONUNBUFFERED=1 nohup taskset -c $core "$PY" -m blindspots \
      reproduce goodfellow2015 --profile pair --set nets=$arm --out "$out" --no-progress > "$out.log" 2>&1 &
    echo "started $arm (pid $!) -> $out.log"
    core=$(( (core + 1) % $(nproc) ))
  done ;;
snapshot)
  rm -rf "$HERE/state"
  for arm in $ARMS; do
    for d in $(training "$RUNS/pair-$arm") "$RUNS/pair-$arm"/work/*; do
      [ -d "$d" ] || continue
      mkdir -p "$HERE/state/$arm/$(basename "$(dirname "$d")")"
      cp -r "$d" "$HERE/state/$arm/$(basename "$(dirname "$d")")/"
    done
  done
  du -sh "$HERE"/state/* ;;
assemble)
  mkdir -p "$RUNS/pair/stages"
  for arm in $ARMS; do
    for d in $(training "$RUNS/pair-$arm"); do
      [ -e "$RUNS/pair/stages/$(basename "$d")" ] || cp -r "$d" "$RUNS/pair/stages/"
    done
  done
  # published beside, then copied in: --publish replaces its folder whole, and this one holds pair.sh and notes
  rm -rf "$RUNS/pair-published"
  (cd "$FROZEN" && OMP_NUM_THREADS=2 blindspots reproduce goodfellow2015 --profile pair --out "$RUNS/pair" \
    --no-progress --publish "$RUNS/pair-published")
  cp -r "$RUNS/pair-published"/. "$HERE/" ;;
*) echo "usage: bash pair.sh resume|snapshot|assemble [RUNS_DIR]" >&2; exit 2 ;;
esac
