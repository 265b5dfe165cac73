#!/usr/bin/env bash
# Run every benchmarks/bench_*.py one after the other, then print each one's ratio lines together.
#
#   benchmarks/run_all.sh                 # uses $PYTHON, else .venv/bin/python, else python3
#   benchmarks/run_all.sh --device cuda   # extra options go to every bench whose --help lists them
#
# A bench whose reference library is missing (pip install '.[bench]'; torchattacks: pip install --no-deps
# torchattacks) is reported as failed with its last error line; the others still run. Exit code: the number
# of benches that failed (0 = all ran).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT

echo "machine: $(uname -m), $(nproc) CPU(s): $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
"$PY" - <<'EOF'
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, GPU: {gpu}")
EOF
echo

failed=0
names=()
for bench in benchmarks/bench_*.py; do
  name="$(basename "$bench" .py)"
  names+=("$name")
  echo "=== $name"
  start=$(date +%s)
  # pass the extra arguments only to benches whose --help mentions them
  extra=()
  help="$("$PY" "$bench" --help 2>/dev/null)"
  args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    arg="${args[i]}"
    flag="${arg%%=*}"
    [[ "$flag" == --* ]] && grep -q -- "$flag" <<<"$help" || continue
    extra+=("$arg")
    if [[ "$arg" != *=* && $((i + 1)) -lt ${#args[@]} && "${args[i + 1]}" != --* ]]; then
      extra+=("${args[i + 1]}")
    fi
  done
  if "$PY" "$bench" "${extra[@]}" 2>&1 | tee "$LOG/$name.txt"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    echo "--- $name: $(( $(date +%s) - start )) s"
  else
    echo "--- $name: FAILED ($(grep -v '^\s*$' "$LOG/$name.txt" | tail -1))"
    echo "FAILED" > "$LOG/$name.failed"
    failed=$((failed + 1))
  fi
  echo
done

echo "=== ratios"
for name in "${names[@]}"; do
  if [ -f "$LOG/$name.failed" ]; then
    printf '%-22s FAILED\n' "$name"
  else
    grep -i 'ratio' "$LOG/$name.txt" | sed "s/^ */$(printf '%-22s' "$name") /"
  fi
done
exit "$failed"
