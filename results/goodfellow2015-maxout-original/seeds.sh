#!/usr/bin/env bash
# §6's plain/adversarial pair for seeds 1-4 (seed 0 is pair.sh's), on the original maxout recipe, from the frozen
# commit below: one process, one core, one torch thread, the seeds one after another (both arms of a seed share
# its minibatch order); test and FGSM curves every 10 epochs; each final model saves its per-image predictions.
# Resumable across machines through the state committed here:
#   bash seeds.sh resume   [RUNS_DIR]  copy state/ back where the run folder lacks it, then run seeds 1-4 (a
#                                      finished seed is found cached; a killed one resumes from its last state)
#   bash seeds.sh snapshot [RUNS_DIR]  copy every seed's finished training stages and saved state into
#                                      seeds-state/ (to commit before a session stops)
#   bash seeds.sh status   [RUNS_DIR]  the last line of each seed's log
# RUNS_DIR defaults to /work/runs; the repo's .venv (from `make venv`) runs the frozen checkout's source. Stage keys
# hash the package source, so the runs must go on at COMMIT.
set -euo pipefail
COMMIT=1d261b6
SEEDS="1 2 3 4"
CORE="${CORE:-0}"
source "$(dirname "$0")/frozen.sh" "${2:-}"
STATE="$HERE/seeds-state"

case "${1:-}" in
resume)
  for s in $SEEDS; do
    out="$RUNS/seed-$s"
    for d in "$STATE"/seed-$s/*/*/; do
      [ -d "$d" ] || continue
      dest="$out/$(basename "$(dirname "$d")")/$(basename "$d")"
      [ -e "$dest" ] || { mkdir -p "$(dirname "$dest")"; cp -r "$d" "$dest"; }
    done
  done
  cmd=""
  for s in $SEEDS; do
    cmd+="PYTHONPATH=$FROZEN/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 $PY -m blindspots reproduce goodfellow2015 "
    cmd+="--profile pair --seed $s --set curve_every=10 --out $RUNS/seed-$s --no-progress >> $RUNS/seed-$s.log 2>&1; "
  done
  nohup taskset -c "$CORE" bash -c "$cmd" > /dev/null 2>&1 &
  echo "started seeds $SEEDS on core $CORE (pid $!); logs $RUNS/seed-*.log" ;;
snapshot)
  rm -rf "$STATE"
  for s in $SEEDS; do
    for d in "$RUNS/seed-$s"/stages/early-stop_* "$RUNS/seed-$s"/stages/train_maxout* "$RUNS/seed-$s"/work/*; do
      [ -d "$d" ] || continue
      mkdir -p "$STATE/seed-$s/$(basename "$(dirname "$d")")"
      cp -r "$d" "$STATE/seed-$s/$(basename "$(dirname "$d")")/"
    done
  done
  du -sh "$STATE"/* 2>/dev/null || echo "nothing to snapshot yet" ;;
status)
  for s in $SEEDS; do [ -f "$RUNS/seed-$s.log" ] && echo "seed $s: $(tail -1 "$RUNS/seed-$s.log")"; done; true ;;
*) echo "usage: bash seeds.sh resume|snapshot|status [RUNS_DIR]" >&2; exit 2 ;;
esac
