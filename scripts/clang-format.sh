#!/usr/bin/env bash
# Check (default) or fix (--fix) the C/C++ formatting of the eBPF data path
# and the native addon against the repo-root .clang-format.
#   bash scripts/clang-format.sh          # exits non-zero if any file needs formatting
#   bash scripts/clang-format.sh --fix    # rewrites the files in place
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=check
case "${1:-}" in
'') ;;
--fix) mode=fix ;;
--check) mode=check ;;
-h | --help)
	sed -n '2,5p' "$0"
	exit 0
	;;
*)
	echo "clang-format.sh: unknown argument '$1' (expected --fix or nothing)" >&2
	exit 2
	;;
esac

CLANG_FORMAT="${CLANG_FORMAT:-clang-format}"
if ! command -v "$CLANG_FORMAT" >/dev/null 2>&1; then
	echo "clang-format.sh: '$CLANG_FORMAT' not found (install it: bash scripts/install-deps.sh)" >&2
	exit 1
fi

shopt -s nullglob
files=()
for f in datapath/*.c datapath/*.h datapath/include/*.h \
	native/src/*.c native/src/*.cc native/src/*.cpp native/src/*.cxx \
	native/src/*.h native/src/*.hh native/src/*.hpp; do
	[[ -f "$f" ]] && files+=("$f")
done

if ((${#files[@]} == 0)); then
	echo "clang-format.sh: no C/C++ files to $mode"
	exit 0
fi

if [[ "$mode" == fix ]]; then
	echo "clang-format.sh: formatting ${#files[@]} file(s) in place"
	"$CLANG_FORMAT" -i --style=file "${files[@]}"
else
	echo "clang-format.sh: checking ${#files[@]} file(s)"
	if ! "$CLANG_FORMAT" --dry-run --Werror --style=file "${files[@]}"; then
		echo "clang-format.sh: formatting differs; run 'bash scripts/clang-format.sh --fix' (or 'npm run format')" >&2
		exit 1
	fi
fi
