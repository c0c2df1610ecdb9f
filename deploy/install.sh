#!/usr/bin/env bash
# Installs Chorus on a bare-metal host: the binary, a `chorus` system user,
# /etc/chorus (configuration), /var/lib/chorus (data) and the systemd unit.
# Idempotent: running it again upgrades the binary and unit and keeps config and data.
# DESTDIR-aware for packaging: DESTDIR=/tmp/pkg ./install.sh skips user creation and
# systemctl.
#
#   ./deploy/install.sh [path/to/chorus]     (default: target/release/chorus)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$HERE/../target/release/chorus}"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr/local}"

[ -x "$BIN" ] || { echo "no chorus binary at $BIN: run 'cargo build --release' first" >&2; exit 1; }

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/systemd/system"
install -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/chorus"
install -m 0644 "$HERE/chorus.service" "$DESTDIR/etc/systemd/system/chorus.service"
install -d -m 0750 "$DESTDIR/etc/chorus"
if [ ! -e "$DESTDIR/etc/chorus/chorus.toml" ]; then
  sed -e 's#^data_dir = .*#data_dir = "/var/lib/chorus"#' \
      -e 's#^listen = .*#listen = "0.0.0.0:7400"#' \
      "$HERE/../cluster-config/single-node.toml" > "$DESTDIR/etc/chorus/chorus.toml"
  chmod 0640 "$DESTDIR/etc/chorus/chorus.toml"
fi
install -d -m 0700 "$DESTDIR/var/lib/chorus"

if [ -z "$DESTDIR" ]; then
  if ! id chorus >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/chorus --shell /usr/sbin/nologin chorus
  fi
  chown -R chorus:chorus /var/lib/chorus
  chown root:chorus /etc/chorus /etc/chorus/chorus.toml
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; start with: systemctl enable --now chorus"
  fi
fi
echo "chorus installed to $DESTDIR$PREFIX/bin/chorus"
