#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine (run as root, or with sudo available):
#   1. system packages (toolchain, libbpf/libelf/zlib headers, bpftool, iproute2, trafgen, clang-format)
#      — apt-get only when something is missing;
#   2. npm ci — only when node_modules is missing or older than package-lock.json;
#   3. build: BPF objects (make -C datapath), native addon (node-gyp), TypeScript (tsc) — in that order.
# Usage: bash scripts/install-deps.sh [--no-build]
# Network: only the Debian archive (step 1, when needed) and the npm registry (step 2, when needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "[install-deps] $*"; }
die() {
	echo "[install-deps] ERROR: $*" >&2
	exit 1
}

build=1
for arg in "$@"; do
	case "$arg" in
	--no-build) build=0 ;;
	-h | --help)
		sed -n '2,8p' "$0"
		exit 0
		;;
	*) die "unknown argument '$arg' (expected --no-build)" ;;
	esac
done

# bpftool, ip and trafgen live in /usr/sbin on Debian, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---- 1. system packages ------------------------------------------------------
APT_PACKAGES=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 netsniff-ng clang-format pkg-config make g++ python3)
REQUIRED_CMDS=(clang llvm-strip bpftool trafgen ip clang-format pkg-config make g++ python3)
REQUIRED_HEADERS=(/usr/include/bpf/libbpf.h /usr/include/libelf.h /usr/include/zlib.h)

missing=()
for c in "${REQUIRED_CMDS[@]}"; do
	command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
for h in "${REQUIRED_HEADERS[@]}"; do
	[[ -f "$h" ]] || missing+=("$h")
done

if ((${#missing[@]})); then
	log "missing: ${missing[*]}"
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${APT_PACKAGES[*]}"
	SUDO=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run 'sudo bash scripts/install-deps.sh'"
		SUDO=(sudo)
	fi
	log "apt-get update"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
	log "apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
	still=()
	for c in "${REQUIRED_CMDS[@]}"; do command -v "$c" >/dev/null 2>&1 || still+=("$c"); done
	for h in "${REQUIRED_HEADERS[@]}"; do [[ -f "$h" ]] || still+=("$h"); done
	((${#still[@]} == 0)) || die "still missing after apt-get install: ${still[*]}"
else
	log "system packages: all present (clang, llvm-strip, bpftool, trafgen, ip, clang-format, pkg-config, make, g++, python3, libbpf/libelf/zlib headers)"
fi

# ---- 2. node dependencies ------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found (Node >= 20 is required)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node >= 20 required, found $(node --version)"
[[ -f package-lock.json ]] || die "package-lock.json missing: run 'npm install' once and commit the lockfile"

# npm writes node_modules/.package-lock.json on every install: it is the stamp we compare to.
stamp=node_modules/.package-lock.json
if [[ ! -d node_modules ]]; then
	reason="node_modules is missing"
elif [[ ! -f "$stamp" ]]; then
	reason="node_modules has no $stamp"
elif [[ package-lock.json -nt "$stamp" ]]; then
	reason="package-lock.json is newer than node_modules"
else
	reason=""
fi
if [[ -n "$reason" ]]; then
	log "npm ci ($reason)"
	npm ci --no-audit --no-fund
	touch "$stamp"
else
	log "node_modules: up to date with package-lock.json"
fi

((build)) || {
	log "done (--no-build)"
	exit 0
}

# ---- 3. build: bpf, native, ts -------------------------------------------------
log "build 1/3: BPF objects (npm run build:bpf → make -C datapath)"
npm run build:bpf || die "BPF build failed (npm run build:bpf)"

if [[ ! -f native/binding.gyp ]]; then
	die "native/binding.gyp does not exist yet, so the native addon (native/build/Release/flowgate_native.node) cannot be built. It is written by whoever owns native/; until then 'npm run build' and the tests cannot run."
fi

# node-gyp downloads Node's headers from nodejs.org unless told where they are. A Node
# installed from a distro/binary tarball ships them in <prefix>/include/node: use those.
if [[ -z "${npm_config_nodedir:-}" ]]; then
	node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
	node_ver="$(node -p 'process.versions.node')"
	if [[ -f "$node_prefix/include/node/common.gypi" && -f "$node_prefix/include/node/node_version.h" ]] &&
		grep -q "define NODE_MAJOR_VERSION ${node_ver%%.*}\$" "$node_prefix/include/node/node_version.h"; then
		export npm_config_nodedir="$node_prefix"
		log "node-gyp: using local Node headers in $node_prefix/include/node"
	else
		log "node-gyp: no local Node headers found; node-gyp will fetch them for v$node_ver"
	fi
fi
export npm_config_jobs="${npm_config_jobs:-max}" # node-gyp: make -j<nproc>
log "build 2/3: native addon (npm run build:native → node-gyp rebuild --directory native)"
npm run build:native || die "native addon build failed (npm run build:native)"

log "build 3/3: TypeScript (npm run build:ts → tsc -p tsconfig.json)"
npm run build:ts || die "TypeScript build failed (npm run build:ts)"

log "done"
