#!/usr/bin/env bash
# Everything that needs a GPU, in one call: set-up as the README does it, the tests marked `cuda`, every
# benchmark on --device cuda, and a 2-process torchrun of `deepprobe robustness` (when that command exists).
# Figures go to $OUT/gpu_figures.md (raw logs beside it); a summary is printed at the end.
#
#   benchmarks/gpu_check.sh                 # OUT defaults to ./gpu_check_out
#   OUT=/some/dir benchmarks/gpu_check.sh
#   SKIP_SETUP=1 benchmarks/gpu_check.sh    # use the active Python environment as it is
#
# Aims at ~5 minutes on one H200 (each part has its own time limit; under 8 minutes in all). Exit code: the
# number of parts that failed (0 = all passed; 1 more when no CUDA GPU is visible).
set -u
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
FIG="$OUT/gpu_figures.md"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check $(elapsed)s] $*"; }
failed=0
declare -A STATUS

# ----- set-up: the README's commands (venv, '.[test,bench]', torchattacks without its pinned deps) -----------
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, torchattacks, pytest, lxt" 2>/dev/null; then
    say "reusing .venv; refreshing deepprobe only"
    .venv/bin/python -m pip install -q --no-deps . >"$OUT/setup.txt" 2>&1
  else
    say "set-up: python3 -m venv .venv && pip install '.[test,bench]' && pip install --no-deps torchattacks lxt==2.1"
    { python3 -m venv .venv && .venv/bin/python -m pip install -q '.[test,bench]' \
        && .venv/bin/python -m pip install -q --no-deps torchattacks lxt==2.1; } >"$OUT/setup.txt" 2>&1
  fi
  if [ $? -ne 0 ]; then
    say "set-up FAILED (last lines of $OUT/setup.txt):"
    tail -5 "$OUT/setup.txt"
    exit 1
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
PY="$(command -v python)"
export PYTHON="$PY"  # benchmarks/run_all.sh uses it
SETUP_S=$(elapsed)

# ----- the machine ---------------------------------------------------------------------------------------
MACHINE="$("$PY" - <<'EOF'
import platform, os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
mem = f", {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB" if torch.cuda.is_available() else ""
bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
print(f"GPU: {gpu}{mem} x{torch.cuda.device_count()} (bfloat16: {bf16}); torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}); {os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}")
EOF
)"
say "$MACHINE"
{
  echo "# deepprobe on a GPU: figures from benchmarks/gpu_check.sh"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- machine: $MACHINE"
  echo "- set-up took ${SETUP_S} s"
  echo
} >"$FIG"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "no CUDA GPU visible: nothing to check"
  echo "No CUDA GPU was visible: nothing was measured." >>"$FIG"
  exit 1
fi

# ----- 1. the tests marked cuda --------------------------------------------------------------------------
say "tests marked cuda (pytest -m cuda)"
timeout 200 "$PY" -m pytest -q -m cuda -p no:randomly -n 4 tests/ --junitxml="$OUT/cuda_tests.xml" \
  >"$OUT/cuda_tests.txt" 2>&1
code=$?
TESTS_LINE="$(grep -E '(passed|failed|error|skipped)' "$OUT/cuda_tests.txt" | tail -1)"
[ $code -eq 124 ] && TESTS_LINE="timed out after 200 s; $TESTS_LINE"
if [ $code -eq 0 ]; then STATUS[tests]="ok"; else STATUS[tests]="FAILED"; failed=$((failed + 1)); fi
say "cuda tests: ${TESTS_LINE:-no summary line} (exit $code)"
{
  echo "## Tests marked cuda"
  echo
  echo "\`python -m pytest -m cuda -n 4 tests/\` (exit $code): ${TESTS_LINE:-no summary line}"
  echo
  echo '```'
  grep -E '^(FAILED|ERROR)|Error|assert' "$OUT/cuda_tests.txt" | head -40
  echo '```'
  echo
} >>"$FIG"

# ----- 2. every benchmark on --device cuda ---------------------------------------------------------------
say "benchmarks: benchmarks/run_all.sh --device cuda --repeats 3"
timeout 200 benchmarks/run_all.sh --device cuda --repeats 3 >"$OUT/benchmarks.txt" 2>&1
code=$?
if [ $code -eq 0 ]; then STATUS[benchmarks]="ok"; else STATUS[benchmarks]="FAILED ($code)"; failed=$((failed + 1)); fi
{
  echo "## Benchmarks (\`benchmarks/run_all.sh --device cuda --repeats 3\`, exit $code$([ $code -eq 124 ] && echo ': timed out after 200 s'))"
  echo
  echo "Ratio lines (the full output follows):"
  echo
  echo '```'
  sed -n '/^=== ratios/,$p' "$OUT/benchmarks.txt"
  echo '```'
  echo
  echo '<details><summary>full output</summary>'
  echo
  echo '```'
  cat "$OUT/benchmarks.txt"
  echo '```'
  echo '</details>'
  echo
} >>"$FIG"
say "benchmarks: exit $code"

# ----- 3. deepprobe robustness under torchrun, 2 processes -------------------------------------------------
echo "## torchrun: deepprobe robustness" >>"$FIG"
echo >>"$FIG"
if "$PY" -m deepprobe robustness --help >/dev/null 2>&1; then
  ARGS=(robustness examples/ --attack apgd-ce --eps 1/255 --steps 10 --batch-size 2 --device cuda --json --quiet)
  say "robustness: 1 process, then torchrun with 2"
  timeout 90 "$PY" -m deepprobe "${ARGS[@]}" --out "$OUT/robustness_1proc" >"$OUT/robustness_1proc.txt" 2>&1
  one=$?
  timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m deepprobe "${ARGS[@]}" \
    --out "$OUT/robustness_2proc" >"$OUT/robustness_2proc.txt" 2>&1
  two=$?
  COMPARE="$("$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def summary(name):
    f = out / name / "summary.json"
    return json.loads(f.read_text()) if f.exists() else None
a, b = summary("robustness_1proc"), summary("robustness_2proc")
if a is None or b is None:
    print(f"summary.json missing (1 process: {a is not None}, 2 processes: {b is not None})")
else:
    keys = ("n", "clean_accuracy", "robust_accuracy")
    same = all(a.get(k) == b.get(k) for k in keys)
    print(f"1 process: " + ", ".join(f"{k}={a.get(k)}" for k in keys) + "; 2 processes: "
          + ", ".join(f"{k}={b.get(k)}" for k in keys) + f"; same: {same}")
EOF
)"
  if [ $one -eq 0 ] && [ $two -eq 0 ] && grep -q "same: True" <<<"$COMPARE"; then
    STATUS[torchrun]="ok"
  else
    STATUS[torchrun]="FAILED (1 process exit $one, 2 processes exit $two)"
    failed=$((failed + 1))
  fi
  {
    echo "\`deepprobe ${ARGS[*]}\`: 1 process exit $one, \`torchrun --nproc_per_node 2\` exit $two. $COMPARE"
    echo
    echo '```'
    tail -5 "$OUT/robustness_2proc.txt"
    echo '```'
  } >>"$FIG"
  say "torchrun: $COMPARE"
else
  STATUS[torchrun]="skipped (no robustness command in this checkout)"
  echo "Skipped: this checkout has no \`deepprobe robustness\` command." >>"$FIG"
fi
echo >>"$FIG"

# ----- summary ----------------------------------------------------------------------------------------------
{
  echo "## Summary"
  echo
  for part in tests benchmarks torchrun; do echo "- $part: ${STATUS[$part]}"; done
  echo "- total: $(elapsed) s (set-up ${SETUP_S} s)"
} >>"$FIG"
echo
echo "=== gpu_check summary ($MACHINE)"
for part in tests benchmarks torchrun; do printf '  %-11s %s\n' "$part" "${STATUS[$part]}"; done
echo "  cuda tests: ${TESTS_LINE:-none}"
sed -n '/^=== ratios/,$p' "$OUT/benchmarks.txt" | sed 's/^/  /'
echo "  total $(elapsed) s; figures in $FIG"
exit "$failed"
