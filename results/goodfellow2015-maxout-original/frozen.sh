# Sourced by pair.sh and seeds.sh with COMMIT set and the runs folder as $1: the paths of a run from a frozen
# checkout of COMMIT (created as a git worktree under RUNS when missing) and the repo's .venv python that runs it.
HERE="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
REPO="$(git -C "$HERE" rev-parse --show-toplevel)"
RUNS="${1:-/work/runs}"
FROZEN="$RUNS/frozen-$COMMIT"
PY="$REPO/.venv/bin/python"
[ -d "$FROZEN" ] || { mkdir -p "$RUNS"; git -C "$REPO" worktree add --detach "$FROZEN" "$COMMIT"; }
