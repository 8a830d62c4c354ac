#!/usr/bin/env bash
# Mutation testing of the modules that hold the maths and the contract, each against its own
# test files (issue 29). Not part of the test command: it takes tens of minutes (the table in
# bench/README.md gives the time it took).
#
#   bash bench/mutation.sh                 # every module below, 2 workers
#   bash bench/mutation.sh topk scores     # some of them
#   JOBS=4 WORK=/tmp/mutation bash bench/mutation.sh
#
# It runs mutmut 3 (picked over cosmic-ray by measurement: mutmut runs only the tests that
# cover a mutated function, in forked workers; cosmic-ray runs the whole test command per
# mutant) in a venv of its own with the scoring side's exact versions from constraints.txt and
# no PyTorch: torch's thread pools do not survive mutmut's fork, so tests that train are
# skipped there (tests/conftest.py: needs_torch) and the modules are checked by the tests that
# build their runs through the Recorder or `import`. mutmut does not mutate decorated
# functions, so the numba kernels of _kernels.py are not mutated (their numpy twins in
# scores.py are, and tests/test_scores.py checks the kernels against them).
# Prints, per module, the mutants, killed, survived, not covered by its tests, timeouts and the
# kill rate over the non-equivalent ones (bench/mutation-equivalent.txt lists the equivalent
# mutants, one line each with its reason), then the surviving mutants.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-${TMPDIR:-/tmp}/confusion-mutation}"
jobs="${JOBS:-2}"
declare -A SOURCES=(
  [scores]="src/confusion/scores.py src/confusion/_kernels.py src/confusion/runscores.py"
  [topk]="src/confusion/topk.py"
  [reduced]="src/confusion/reduced.py"
  [difficulty]="src/confusion/difficulty/*"
  [store-commit]="src/confusion/store/commit.py"
  [analyses]="src/confusion/analyses.py"
  [signals]="src/confusion/signalmath.py src/confusion/neighbours.py src/confusion/views.py src/confusion/store/signals.py"
)
declare -A TESTS=(
  [scores]="tests/test_scores.py tests/test_cli_score.py"
  [topk]="tests/test_topk.py"
  [reduced]="tests/test_reduced_record.py tests/test_difficulty.py tests/test_store.py"
  [difficulty]="tests/test_difficulty.py tests/test_signals.py"
  [store-commit]="tests/test_store.py tests/test_recorder.py tests/test_signals.py"
  [analyses]="tests/test_analyses.py"
  [signals]="tests/test_signals.py tests/test_signalmath.py"
)
modules=("$@"); [ "${#modules[@]}" -gt 0 ] || modules=(scores topk reduced difficulty store-commit analyses signals)
for module in "${modules[@]}"; do
  [ -n "${SOURCES[$module]:-}" ] || { echo "mutation.sh: unknown module $module (one of: ${!SOURCES[*]})" >&2; exit 2; }
done

mkdir -p "$work"
venv="$work/venv"
if [ ! -x "$venv/bin/mutmut" ]; then
  echo "mutation.sh: a venv for mutmut in $venv (the scoring side's versions from constraints.txt, no torch)"
  python3 -m venv "$venv"
  core="numpy scipy zarr pandas pyarrow matplotlib typer rich numba pillow scikit-learn pytest pytest-timeout hypothesis"
  pins=()
  for name in $core; do pins+=("$(grep -i "^$name==" "$root/constraints.txt")"); done
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$root/constraints.txt" "${pins[@]}" mutmut==3.8.1
fi
python3 -c "import platform; print('CPU:', open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].split('\n')[0].strip(), '|', __import__('os').cpu_count(), 'cores')" 2>/dev/null || true

report="$work/report.tsv"
: > "$report"
for module in "${modules[@]}"; do
  copy="$work/$module"
  rm -rf "$copy"; mkdir -p "$copy"
  cp -r "$root/src" "$root/tests" "$root/docs" "$root/pyproject.toml" "$root/README.md" "$copy/"
  find "$copy" -name __pycache__ -prune -exec rm -rf {} +
  only=""; for pattern in ${SOURCES[$module]}; do only+="\"$pattern\", "; done
  tests=""; for file in ${TESTS[$module]}; do tests+="\"$file\", "; done
  cat >> "$copy/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = ["src"]
only_mutate = [${only%, }]
pytest_add_cli_args_test_selection = [${tests%, }]
also_copy = ["docs", "README.md"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-o", "addopts=", "-x", "-W", "ignore::DeprecationWarning", "--timeout", "30"]
TOML
  started=$(date +%s)
  echo "mutation.sh: $module (${SOURCES[$module]}) against ${TESTS[$module]}"
  # A mutant that makes a writer wait for a lock forever fails its test after 30 s
  # (pytest-timeout; no test of these files takes 20), not after mutmut's own, longer timeout.
  # Tests that start a process (`python -m confusion.cli`, a lock holder) import the mutated
  # package too (a .pth file of the venv; mutmut drops a PYTHONPATH entry), and the mutant
  # under test reaches them through mutmut's environment variable.
  echo "$copy/mutants/src" > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/confusion-mutants.pth"
  # numba's default threading layer here is GNU OpenMP, which aborts a forked child that runs a
  # parallel kernel ("fork() called from a process already using GNU OpenMP"): mutmut forks one
  # child per mutant, so the kernels use numba's own workqueue layer, which survives a fork.
  # BLAS thread pools do not survive the fork either: a forked child's OpenBLAS threads spin, so
  # a mutant whose tests fit a regression or search neighbours used up mutmut's CPU-time limit
  # and read as a "timeout" (every mutant of store-commit's log_embeddings did). One thread each.
  # Its own temporary folder: pytest prunes old numbered folders under $TMPDIR/pytest-of-USER,
  # so a test suite run beside it would delete the folders of mutmut's tests (and they its).
  mkdir -p "$copy/tmp"
  (cd "$copy" && TMPDIR="$copy/tmp" NUMBA_THREADING_LAYER=workqueue OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    "$venv/bin/mutmut" run --max-children "$jobs" > "$copy/mutmut.log" 2>&1) || true
  grep -q "failed to collect stats" "$copy/mutmut.log" && echo "mutation.sh: $module: the tests fail before any mutant (see $copy/mutmut.log)" >&2
  seconds=$(( $(date +%s) - started ))
  (cd "$copy" && "$venv/bin/mutmut" results --all true 2>/dev/null) | sed "s/^ *//" > "$copy/results.txt"
  printf '%s\t%s\t%s\n' "$module" "$seconds" "$copy/results.txt" >> "$report"
done
"$venv/bin/python" "$root/bench/mutation_table.py" "$report" "$root/bench/mutation-equivalent.txt"
