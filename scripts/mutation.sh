#!/usr/bin/env bash
# Mutation testing of the decision code (mutmut), run by hand; not part of the test command
# or CI (it takes minutes of CPU). Installs nothing: needs the dev extra in .venv.
#
#   scripts/mutation.sh                      the default targets below
#   scripts/mutation.sh proxy/abstats/compare.py proxy/rollout/controller.py::commit
#
# A target is a file from [tool.mutmut] only_mutate in pyproject.toml, or FILE::FUNCTION for
# one function (or method) of it. Each run starts from a fresh mutants/ (a copy of proxy/
# and tests/ that mutmut mutates; ignored by git), runs the tests named in [tool.mutmut]
# pytest_add_cli_args_test_selection once to learn which tests reach which function, then
# each mutant against those tests only, one at a time (MUTATION_CHILDREN=2 to use two cores).
#
# Prints per target: mutants, killed (timeouts count as killed), survived, and survivors
# listed in scripts/mutation-equivalent.txt (equivalent or message-only, with the reason).
# Exit 1 when any other mutant survives (or no test reaches it): a test must kill it, or it
# must be listed with a reason after review. Exit 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTMUT=.venv/bin/mutmut
PY=.venv/bin/python
EQUIVALENT=scripts/mutation-equivalent.txt
[[ -x $MUTMUT ]] || { echo "mutation.sh: $MUTMUT missing: install the dev extra (pip install -e '.[dev]')" >&2; exit 2; }

configured=$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]))')
# The judge, its evidence, the state machine, look(), the A/B comparison, and the
# controller's paths that roll back, abort or refuse a stale write.
DEFAULT_TARGETS=(
    proxy/abstats/compare.py
    proxy/rollout/analysis.py proxy/rollout/judge.py proxy/rollout/evidence.py
    proxy/rollout/sequential.py proxy/rollout/quantiles.py proxy/rollout/look.py
    proxy/rollout/machine.py
    proxy/rollout/controller.py::run proxy/rollout/controller.py::tick
    proxy/rollout/controller.py::_advance
    proxy/rollout/controller.py::commit proxy/rollout/controller.py::_reason_code
)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${DEFAULT_TARGETS[@]}")
fi
globs=()
for t in "${targets[@]}"; do
    file=${t%%::*}
    if ! grep -qxF "$file" <<<"$configured"; then
        echo "mutation.sh: $file is not in [tool.mutmut] only_mutate of pyproject.toml (one of: $(tr '\n' ' ' <<<"$configured"))" >&2
        exit 2
    fi
    [[ -f $file ]] || { echo "mutation.sh: $file: no such file" >&2; exit 2; }
    module=${file%.py}
    module=${module//\//.}
    if [[ $t == *::* ]]; then
        func=${t#*::}
        grep -qE "def ${func}\(" "$file" || { echo "mutation.sh: $file has no function $func" >&2; exit 2; }
        # mutmut names a function's mutants x_<name>__mutmut_<n>, a method's xǁ<Class>ǁ<name>__mutmut_<n>
        globs+=("${module}.*[_ǁ]${func}__mutmut_*")
    else
        globs+=("${module}.*")
    fi
done

rm -rf mutants
log=$(mktemp)
trap 'rm -f "$log"' EXIT
nice -n 10 "$MUTMUT" run --max-children "${MUTATION_CHILDREN:-1}" "${globs[@]}" >"$log" 2>&1 || {
    tail -n 40 "$log" >&2
    echo "mutation.sh: mutmut run failed (output above)" >&2
    exit 1
}
cp "$log" mutants/run.log

"$MUTMUT" results --all true >mutants/results.txt
"$PY" - mutants/results.txt "$EQUIVALENT" "${globs[@]}" <<'EOF'
"""Score per target; exit 1 on a survivor that is not listed as equivalent."""
import fnmatch
import subprocess
import sys
from collections import Counter

results_file, equivalent_file, globs = sys.argv[1], sys.argv[2], sys.argv[3:]
listed = {}
for line in open(equivalent_file, encoding="utf-8"):
    if line.strip() and not line.startswith("#"):
        name, _, why = line.strip().partition(" ")
        listed[name] = why.strip()
results = {}
for line in open(results_file, encoding="utf-8"):
    name, _, status = line.strip().rpartition(": ")
    if any(fnmatch.fnmatch(name, g) for g in globs):
        results[name] = status
CAUGHT = {"killed", "timeout", "caught by type check"}
bad = []
for glob in globs:
    mine = {n: s for n, s in results.items() if fnmatch.fnmatch(n, glob)}
    counts = Counter("caught" if s in CAUGHT else
                     "equivalent" if s == "survived" and n in listed else s
                     for n, s in mine.items())
    other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                      if k not in ("caught", "equivalent", "survived"))
    label = glob[:-2] if glob.endswith(".*") else glob.replace(".*[_ǁ]", "::").replace(
        "__mutmut_*", "")
    print(f"{label}: {len(mine)} mutants, {counts['caught']} killed, "
          f"{counts['survived']} survived, {counts['equivalent']} equivalent (listed)"
          + (f", {other}" if other else ""))
    bad += [n for n, s in mine.items() if s not in CAUGHT and not (s == "survived" and n in listed)]
    stale = [n for n in listed if fnmatch.fnmatch(n, glob) and mine.get(n) != "survived"]
    for n in stale:
        print(f"  note: {n} is listed in {equivalent_file} but {mine.get(n, 'absent')}: "
              "review the list")
for n in sorted(bad):
    print(f"\nNOT KILLED ({results[n]}): {n}")
    print(subprocess.run([".venv/bin/mutmut", "show", n], capture_output=True, text=True,
                         check=False).stdout.rstrip())
sys.exit(1 if bad else 0)
EOF
