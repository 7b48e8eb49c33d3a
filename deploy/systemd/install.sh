#!/usr/bin/env bash
# Install flowgate as a systemd service, from a built checkout (as root):
#
#   bash scripts/install-deps.sh            # build first (dist/, native/, datapath/)
#   bash deploy/systemd/install.sh [--prefix /opt/flowgate] [--dry-run]
#   $EDITOR /etc/flowgate/flowgate.env      # FLOWGATE_ARGS="--iface eth0 …"
#   systemctl enable --now flowgate
#
# Steps: (1) the system user and group `flowgate`; (2) the checkout copied to
# the prefix (root-owned, replaced whole: the agent cannot modify its own
# code); (3) /etc/flowgate/flowgate.env, written only when absent (mode 0640
# root:flowgate: it may hold the API token); (4) the unit in
# /etc/systemd/system (paths adjusted to the prefix and to this node);
# (5) systemctl daemon-reload. It does not enable or start the service.
#
# Safe to run again: an existing user and env file are kept, the checkout
# and the unit are replaced with the current ones. A running agent keeps
# running (the old files stay open) until `systemctl restart flowgate`, and
# the pins keep counting and enforcing across that restart.
#
# --dry-run prints every step and command and changes nothing (no root needed).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: install.sh [--prefix DIR] [--config-dir DIR] [--unit-dir DIR] [--dry-run]
  --prefix DIR      where the checkout goes (default /opt/flowgate)
  --config-dir DIR  where flowgate.env goes (default /etc/flowgate)
  --unit-dir DIR    where flowgate.service goes (default /etc/systemd/system)
  --dry-run         print what would be done; change nothing
EOF
}

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
UNIT_SRC="$SRC/deploy/systemd/flowgate.service"
PREFIX=/opt/flowgate
CONFIG_DIR=/etc/flowgate
UNIT_DIR=/etc/systemd/system
DRY_RUN=0
USER_NAME=flowgate

die() {
	echo "install.sh: $*" >&2
	exit 1
}

while (($#)); do
	case "$1" in
	--prefix | --config-dir | --unit-dir)
		(($# >= 2)) || die "$1 needs a directory"
		[[ "$2" == /* ]] || die "$1 must be an absolute path, got \"$2\""
		case "$1" in
		--prefix) PREFIX="${2%/}" ;;
		--config-dir) CONFIG_DIR="${2%/}" ;;
		--unit-dir) UNIT_DIR="${2%/}" ;;
		esac
		shift 2
		;;
	--dry-run)
		DRY_RUN=1
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument \"$1\""
		;;
	esac
done
[[ -n "$PREFIX" && "$PREFIX" != / ]] || die "--prefix must not be /"
# They end up in the unit, where a space would split a command line.
for d in "$PREFIX" "$CONFIG_DIR" "$UNIT_DIR"; do
	[[ "$d" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "\"$d\": only letters, digits and . _ - / in install paths"
done

ENV_FILE="$CONFIG_DIR/flowgate.env"
UNIT_FILE="$UNIT_DIR/flowgate.service"

step() { echo "==> $*"; }
# Run a command, or under --dry-run only show it.
run() {
	if ((DRY_RUN)); then
		printf '    would run:'
		printf ' %q' "$@"
		printf '\n'
	else
		"$@"
	fi
}

# ---- checks ------------------------------------------------------------------
((DRY_RUN)) || ((EUID == 0)) || die "run as root (or with --dry-run to see what it would do)"
[[ -f "$UNIT_SRC" ]] || die "no unit file at $UNIT_SRC"
missing=()
for f in dist/control/cli/index.js native/build/Release/flowgate_native.node datapath/build/flowgate.bpf.o; do
	[[ -f "$SRC/$f" ]] || missing+=("$f")
done
if ((${#missing[@]})); then
	die "the checkout at $SRC is not built (missing: ${missing[*]}): run bash scripts/install-deps.sh first"
fi
# Not resolved through symlinks: /usr/bin/node may be an alternatives link that upgrades move.
NODE="$(command -v node || true)"
[[ "$NODE" == /* ]] || die "node is not installed (the unit runs the agent with it)"
# The install tree must not be inside the checkout (it would copy itself).
case "$PREFIX/" in "$SRC"/*) die "--prefix $PREFIX is inside the checkout $SRC" ;; esac

echo "install.sh: installing $SRC to $PREFIX$( ((DRY_RUN)) && echo ' (dry run: nothing is changed)')"

# ---- 1. user -----------------------------------------------------------------
step "1/5 system user and group $USER_NAME"
if getent passwd "$USER_NAME" >/dev/null; then
	echo "    user $USER_NAME exists: kept"
else
	# No login, no home of its own: its state is the unit's StateDirectory (/var/lib/flowgate).
	run useradd --system --user-group --home-dir /var/lib/flowgate --no-create-home \
		--shell /usr/sbin/nologin --comment "flowgate agent" "$USER_NAME"
fi

# ---- 2. checkout -------------------------------------------------------------
step "2/5 checkout to $PREFIX (root-owned, replaced whole)"
# Copied next to the target, then swapped in by renames: the prefix always
# holds a whole tree (old or new), never a half-copied one.
STAGE="$PREFIX.new.$$"
OLD="$PREFIX.old.$$"
run mkdir -p "$(dirname "$PREFIX")"
run mkdir -m 0755 "$STAGE"
if ((DRY_RUN)); then
	echo "    would copy $SRC to $STAGE (tar; without .git, .scratch, .bench, *.log)"
else
	trap 'rm -rf "$STAGE"' EXIT
	tar -C "$SRC" --exclude=./.git --exclude=./.scratch --exclude=./.bench --exclude='*.log' -cf - . |
		tar -C "$STAGE" --no-same-owner -xf -
fi
run chown -R root:root "$STAGE"
run chmod -R go-w "$STAGE"
if [[ -e "$PREFIX" ]]; then
	run mv "$PREFIX" "$OLD"
	run mv "$STAGE" "$PREFIX"
	run rm -rf "$OLD"
else
	run mv "$STAGE" "$PREFIX"
fi
((DRY_RUN)) || trap - EXIT

# ---- 3. environment file -----------------------------------------------------
step "3/5 settings in $ENV_FILE (written only if absent; 0640 root:$USER_NAME)"
run install -d -m 0750 -o root -g "$USER_NAME" "$CONFIG_DIR"
if [[ -e "$ENV_FILE" ]]; then
	echo "    $ENV_FILE exists: kept as it is"
else
	# The interface of the default route, as a starting point.
	iface="$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}' || true)"
	iface="${iface:-eth0}"
	env_text="# flowgate agent settings, read by flowgate.service (EnvironmentFile=).
# After a change: systemctl restart flowgate (the pins keep enforcing meanwhile).

# Flags of \`flowgate run\` (see $PREFIX/README.md). --iface is required;
# --store is set by the unit (/var/lib/flowgate); keep --bpffs at its default.
# Examples: --clickhouse-url http://user@ch:8123 --clickhouse-password-file /etc/flowgate/ch-password
#           (root-only file; a password in the URL shows in ps) --retention 14d --listen 0.0.0.0:7650
FLOWGATE_ARGS=\"--iface $iface\"

# Bearer token of the REST API: required when --listen is beyond loopback.
#FLOWGATE_API_TOKEN=
"
	if ((DRY_RUN)); then
		echo "    would write $ENV_FILE (mode 0640, root:$USER_NAME) with FLOWGATE_ARGS=\"--iface $iface\""
	else
		tmp="$(mktemp "$CONFIG_DIR/.flowgate.env.XXXXXX")"
		printf '%s' "$env_text" >"$tmp"
		chown "root:$USER_NAME" "$tmp"
		chmod 0640 "$tmp"
		mv -n "$tmp" "$ENV_FILE"
		rm -f "$tmp"
	fi
fi

# ---- 4. unit -----------------------------------------------------------------
step "4/5 unit $UNIT_FILE"
# The unit names /usr/bin/node, /opt/flowgate and /etc/flowgate: point them at this node and these dirs.
render_unit() {
	sed -e "s|/usr/bin/node |$NODE |" \
		-e "s|/opt/flowgate/|$PREFIX/|g" \
		-e "s|/etc/flowgate/flowgate.env|$ENV_FILE|g" \
		"$UNIT_SRC"
}
if [[ -f "$UNIT_FILE" ]] && cmp -s <(render_unit) "$UNIT_FILE"; then
	echo "    $UNIT_FILE is up to date: kept"
elif ((DRY_RUN)); then
	echo "    would write $UNIT_FILE (mode 0644) from $UNIT_SRC, ExecStart=$NODE $PREFIX/bin/flowgate.js run …"
else
	install -d -m 0755 "$UNIT_DIR"
	tmp="$(mktemp "$UNIT_DIR/.flowgate.service.XXXXXX")"
	render_unit >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$UNIT_FILE"
fi

# ---- 5. reload ---------------------------------------------------------------
step "5/5 systemctl daemon-reload"
if [[ -d /run/systemd/system ]]; then
	run systemctl daemon-reload
	if systemctl is-active --quiet flowgate.service; then
		echo "    flowgate is running the files it started with: systemctl restart flowgate (the pins keep enforcing meanwhile)"
	fi
else
	echo "    systemd is not running here: skipped (it reads the unit at boot)"
fi

echo "install.sh: done$( ((DRY_RUN)) && echo ' (dry run)'). Next: edit $ENV_FILE, then: systemctl enable --now flowgate"
