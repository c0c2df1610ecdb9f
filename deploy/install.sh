#!/usr/bin/env bash
# Installs Chorus on a bare-metal host: the binary (its debug info stripped), a `chorus`
# system user, /etc/chorus (configuration and certificates), /var/lib/chorus (data) and
# the hardened systemd unit.
#
#   deploy/install.sh [--bundle FILE] [BINARY]       (BINARY default: target/release/chorus)
#
# --bundle FILE   a host bundle from `chorus certs bundle NAME --ip IP --out FILE`: the
#                 CA certificate, the host's certificate and key and the cluster key go to
#                 /etc/chorus/certs (mode 0600, owned by the service user). A config made
#                 by this run takes its node_id, certificate paths and addresses from it.
#
# Idempotent: a second run with the same inputs changes nothing; a new binary or unit
# replaces the old one. An existing /etc/chorus/chorus.toml is never rewritten.
# DESTDIR-aware: DESTDIR=/tmp/pkg deploy/install.sh installs under /tmp/pkg and skips what
# needs root or a running system (the user, ownership, systemctl); paths written into the
# config stay the final ones (/etc/chorus/...).
#
# Environment: DESTDIR, PREFIX (default /usr/local), CHORUS_TEMPLATE (the config template,
# default cluster-config/bare-metal.toml beside this script's directory).
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr/local}"
TEMPLATE="${CHORUS_TEMPLATE:-$HERE/../cluster-config/bare-metal.toml}"
BUNDLE=""
BIN=""

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) [ $# -ge 2 ] || die "--bundle needs a file"; BUNDLE="$2"; shift 2 ;;
    --bundle=*) BUNDLE="${1#--bundle=}"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$BIN" ] || die "one binary only, got $BIN and $1"; BIN="$1"; shift ;;
  esac
done
BIN="${BIN:-$HERE/../target/release/chorus}"
[ -x "$BIN" ] || die "no chorus binary at $BIN: run 'cargo build --release' first"
[ -f "$TEMPLATE" ] || die "no config template at $TEMPLATE"
[ -z "$BUNDLE" ] || [ -f "$BUNDLE" ] || die "no bundle at $BUNDLE"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Installs $1 as $2 with mode $3, replacing the file only when its content differs, so
# a second run leaves it (and its timestamps) alone.
put() {
  if ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2"
  fi
  chmod "$3" "$2"
}

# Sets `key = value` in [section] of a TOML file ("" for the top level), keeping the
# line's trailing comment. Touches only that key of that section: `listen` at the top
# level is not `[metrics] listen`. Fails if the key is not there.
set_key() {
  local file="$1" section="$2" key="$3" value="$4"
  awk -v sec="$section" -v key="$key" -v val="$value" '
    /^[[:space:]]*\[/ {
      cur = $0
      sub(/^[[:space:]]*\[+[[:space:]]*/, "", cur)
      sub(/[[:space:]]*\]+[[:space:]]*(#.*)?$/, "", cur)
    }
    !done && cur == sec && $0 ~ ("^[[:space:]]*" key "[[:space:]]*=") {
      comment = ""
      if (match($0, /[[:space:]]+#[^"]*$/)) comment = substr($0, RSTART)
      print key " = " val comment
      done = 1
      next
    }
    { print }
    END { if (!done) exit 3 }
  ' "$file" > "$file.new" || die "no key $key in [${section:-top level}] of the template"
  mv "$file.new" "$file"
}

# The bundle: checked and unpacked into $WORK/bundle before anything is installed.
NODE=""
IP=""
if [ -n "$BUNDLE" ]; then
  mkdir "$WORK/bundle"
  # Only plain files at the top level: no paths, links or devices from the archive.
  tar -tvf "$BUNDLE" > "$WORK/listing" || die "bundle $BUNDLE: not a tar archive"
  while read -r perms _ _ _ _ name rest; do
    case "$perms:$name:$rest" in
      -*:*/*:* | -*:.*:* | -*::*) die "bundle $BUNDLE: unexpected entry $name" ;;
      -*:*:) ;;
      *) die "bundle $BUNDLE: unexpected entry: $perms $name $rest" ;;
    esac
  done < "$WORK/listing"
  tar -xf "$BUNDLE" -C "$WORK/bundle" --no-same-owner --no-same-permissions
  MANIFEST="$WORK/bundle/bundle.toml"
  [ -f "$MANIFEST" ] || die "bundle $BUNDLE: no bundle.toml (not made by 'chorus certs bundle'?)"
  NODE="$(sed -n 's/^node = "\([A-Za-z0-9._-]*\)"$/\1/p' "$MANIFEST")"
  IP="$(sed -n 's/^ips = \["\([^"]*\)".*$/\1/p' "$MANIFEST")"
  [ -n "$NODE" ] || die "bundle $BUNDLE: bundle.toml names no node"
  for f in ca.pem cluster.key "$NODE.pem" "$NODE.key"; do
    [ -f "$WORK/bundle/$f" ] || die "bundle $BUNDLE: no $f"
  done
fi

# The binary, without its debug info (126 MB with it): symbols stay, so a backtrace
# still names functions.
STRIPPED="$WORK/chorus"
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "$BIN" "$STRIPPED"
elif command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$STRIPPED" "$BIN"
else
  echo "install.sh: neither objcopy nor strip found; installing the binary with its debug info" >&2
  cp "$BIN" "$STRIPPED"
fi
install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/systemd/system"
put "$STRIPPED" "$DESTDIR$PREFIX/bin/chorus" 0755
# The unit starts the binary where this run put it.
sed "s#/usr/local/bin/chorus #$PREFIX/bin/chorus #" "$HERE/chorus.service" > "$WORK/chorus.service"
put "$WORK/chorus.service" "$DESTDIR/etc/systemd/system/chorus.service" 0644

install -d -m 0750 "$DESTDIR/etc/chorus" "$DESTDIR/etc/chorus/certs"
install -d -m 0700 "$DESTDIR/var/lib/chorus"

if [ -n "$BUNDLE" ]; then
  for f in ca.pem cluster.key "$NODE.pem" "$NODE.key"; do
    put "$WORK/bundle/$f" "$DESTDIR/etc/chorus/certs/$f" 0600
  done
fi

CONFIG="$DESTDIR/etc/chorus/chorus.toml"
if [ ! -e "$CONFIG" ]; then
  cp "$TEMPLATE" "$WORK/chorus.toml"
  set_key "$WORK/chorus.toml" "" data_dir '"/var/lib/chorus"'
  if [ -n "$NODE" ]; then
    set_key "$WORK/chorus.toml" "" node_id "\"$NODE\""
    set_key "$WORK/chorus.toml" tls ca_cert '"/etc/chorus/certs/ca.pem"'
    set_key "$WORK/chorus.toml" tls cert "\"/etc/chorus/certs/$NODE.pem\""
    set_key "$WORK/chorus.toml" tls key "\"/etc/chorus/certs/$NODE.key\""
    set_key "$WORK/chorus.toml" cluster key_file '"/etc/chorus/certs/cluster.key"'
  fi
  if [ -n "$IP" ]; then
    case "$IP" in *:*) HOST="[$IP]" ;; *) HOST="$IP" ;; esac
    set_key "$WORK/chorus.toml" "" listen "\"$HOST:7400\""
    set_key "$WORK/chorus.toml" cluster gossip_listen "\"$HOST:7401\""
  fi
  install -m 0640 "$WORK/chorus.toml" "$CONFIG"
  echo "wrote $CONFIG: set [cluster] seeds and [metrics] listen for this host"
fi
chmod 0640 "$CONFIG"

if [ -z "$DESTDIR" ]; then
  if ! id chorus >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/chorus --shell /usr/sbin/nologin chorus
  fi
  chown -R chorus:chorus /var/lib/chorus
  chown root:chorus /etc/chorus /etc/chorus/certs "$CONFIG"
  if [ -n "$BUNDLE" ]; then
    for f in ca.pem cluster.key "$NODE.pem" "$NODE.key"; do
      chown chorus:chorus "/etc/chorus/certs/$f"
    done
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; start with: systemctl enable --now chorus"
  fi
fi
echo "chorus installed to $DESTDIR$PREFIX/bin/chorus"
