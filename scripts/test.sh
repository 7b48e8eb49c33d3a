#!/usr/bin/env bash
# THE test command (as root):  bash scripts/test.sh [test files…]     (npm test runs it too)
#
# 1. bash scripts/install-deps.sh — system packages, npm ci, build (bpf, native, ts);
#    set FLOWGATE_SKIP_INSTALL=1 to skip this step in a quick edit-test loop.
# 2. node's test runner, one file at a time, over test/{unit,datapath,native,store,e2e,api}/*.test.ts
#    (or only the files given as arguments).
# 3. Fails when the runner fails, when no test ran, and — under CI=true — when any test was
#    skipped (tests that need root/bpf()/netns must fail in CI, not skip: test/lib/privileges.ts).
# Exit code: the runner's, or 1 for the two checks above.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[test.sh] $*"; }
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if ((EUID != 0)); then
	if [[ "${CI:-}" == true ]]; then
		say "WARNING: not root under CI=true: tests that need root/bpf()/netns will FAIL"
	else
		say "note: not root: tests that need root/bpf()/netns will be skipped (run it as root)"
	fi
fi

# ---- 1. dependencies and build ---------------------------------------------------
if [[ "${FLOWGATE_SKIP_INSTALL:-}" == 1 ]]; then
	say "FLOWGATE_SKIP_INSTALL=1: not running scripts/install-deps.sh"
else
	say "running scripts/install-deps.sh"
	if ! bash scripts/install-deps.sh; then
		say "FAILED: scripts/install-deps.sh (dependencies or build); no tests were run" >&2
		exit 1
	fi
fi

# ---- 2. test files ---------------------------------------------------------------
files=()
if (($# > 0)); then
	for f in "$@"; do
		[[ -f "$f" ]] || {
			say "no such test file: $f" >&2
			exit 1
		}
		files+=("$f")
	done
else
	shopt -s nullglob
	files=(test/unit/*.test.ts test/datapath/*.test.ts test/native/*.test.ts test/store/*.test.ts test/e2e/*.test.ts test/api/*.test.ts)
	shopt -u nullglob
fi
if ((${#files[@]} == 0)); then
	say "FAILED: no test files found (looked in test/{unit,datapath,native,store,e2e,api}/*.test.ts)" >&2
	exit 1
fi

TEST_TIMEOUT_MS="${FLOWGATE_TEST_TIMEOUT_MS:-600000}"
tap="$(mktemp -t flowgate-test.XXXXXX.tap)"
trap 'rm -f "$tap"' EXIT

say "running ${#files[@]} test file(s), one at a time, timeout ${TEST_TIMEOUT_MS} ms per test (CI=${CI:-unset})"
# spec → stdout for people; tap → file for the checks below.
node --import tsx --test --test-concurrency=1 --test-timeout="$TEST_TIMEOUT_MS" \
	--test-reporter=spec --test-reporter-destination=stdout \
	--test-reporter=tap --test-reporter-destination="$tap" \
	"${files[@]}"
rc=$?

# ---- 3. checks on the runner's TAP summary -----------------------------------------
summary() { # last top-level "# <name> <n>" line of the TAP stream
	grep -E "^# $1 [0-9]+\$" "$tap" | tail -n 1 | awk '{print $3}'
}
tests="$(summary tests)"
pass="$(summary pass)"
fail="$(summary fail)"
skipped="$(summary skipped)"
todo="$(summary todo)"
cancelled="$(summary cancelled)"
skip_lines="$(grep -cE '^[[:space:]]*(not )?ok [0-9]+ .*# SKIP' "$tap")"

echo
say "summary: tests=${tests:-?} pass=${pass:-?} fail=${fail:-?} cancelled=${cancelled:-?} skipped=${skipped:-?} todo=${todo:-?} (runner exit code $rc)"

if [[ -z "$tests" ]]; then
	say "FAILED: the test runner printed no summary (did it crash?)" >&2
	((rc != 0)) && exit "$rc"
	exit 1
fi

if [[ "${CI:-}" == true ]] && { ((${skipped:-0} > 0)) || ((skip_lines > 0)); }; then
	say "FAILED: CI=true and ${skipped:-$skip_lines} test(s) were skipped; in CI every test must run (privileged tests fail instead of skipping):" >&2
	grep -E '^[[:space:]]*(not )?ok [0-9]+ .*# SKIP' "$tap" | sed 's/^[[:space:]]*/  /' >&2
	((rc != 0)) && exit "$rc"
	exit 1
fi

((rc != 0)) && exit "$rc"

# A file that declares no test shows up as one passing "test" named by its absolute path.
empty_files=()
for f in "${files[@]}"; do
	abs="$(realpath "$f")"
	if awk -v want="$abs" 'index($0, "ok ") == 1 && substr($0, index($0, " - ") + 3) == want { found = 1 } END { exit !found }' "$tap"; then
		empty_files+=("$f")
	fi
done
if ((${#empty_files[@]})); then
	say "warning: no tests declared in: ${empty_files[*]}"
fi
ran=$((${pass:-0} + ${fail:-0} - ${#empty_files[@]}))
if ((tests == 0)) || ((ran <= 0)); then
	say "FAILED: no test ran (tests=$tests, pass=${pass:-0}, skipped=${skipped:-0}, todo=${todo:-0}, files without tests=${#empty_files[@]})" >&2
	exit 1
fi

say "OK"
exit 0
