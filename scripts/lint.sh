#!/usr/bin/env bash
# Static checks: prettier, eslint, tsc --noEmit, clang-format.
# Runs every check (so one run shows all problems) and exits non-zero if any failed.
# Needs node_modules (bash scripts/install-deps.sh --no-build) and clang-format.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x node_modules/.bin/eslint || ! -x node_modules/.bin/prettier || ! -x node_modules/.bin/tsc ]]; then
	echo "lint.sh: node_modules is missing or incomplete; run 'bash scripts/install-deps.sh' (or 'npm ci') first" >&2
	exit 1
fi

failed=()
run() {
	local name="$1"
	shift
	echo "==> lint: $name: $*"
	if "$@"; then
		echo "==> lint: $name: ok"
	else
		echo "==> lint: $name: FAILED" >&2
		failed+=("$name")
	fi
}

run prettier node_modules/.bin/prettier --check .
run eslint node_modules/.bin/eslint --max-warnings=0 .
run tsc node_modules/.bin/tsc --noEmit -p tsconfig.json
run clang-format bash scripts/clang-format.sh

if ((${#failed[@]})); then
	echo "lint.sh: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "lint.sh: all checks passed"
