#!/bin/sh
# Install or upgrade edge-gateway as a systemd service (Debian 12, Raspberry Pi OS).
# Run from a checkout of the source:   sudo sh systemd/install.sh
#
#   /opt/edge-gateway                 a venv with edge-gateway installed (bin/edge-gateway)
#   /etc/edge-gateway/config.yaml     the shipped config.yaml with the service's paths;
#                                     never overwritten once it exists
#   /var/lib/edge-gateway             the SQLite store (systemd creates it: StateDirectory=)
#   /run/edge-gateway                 the Unix socket the TUI uses (RuntimeDirectory=)
#   user and group edge-gateway       from systemd/edge-gateway.sysusers
#
# `sh systemd/install.sh --print-config` only prints the config it would install.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/edge-gateway
CONF_DIR=/etc/edge-gateway
STATE_DIR=/var/lib/edge-gateway
RUN_DIR=/run/edge-gateway
UNIT=edge-gateway.service

service_config() {
    # The relative store and socket paths of the shipped file, made absolute.
    sed -e "s|^\( *path:\) edge-gateway\.db$|\1 $STATE_DIR/edge-gateway.db|" \
        -e "s|^\( *path:\) edge-gateway\.sock$|\1 $RUN_DIR/edge-gateway.sock|" \
        "$SRC/config.yaml"
}

if [ "${1:-}" = "--print-config" ]; then
    service_config
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root: sudo sh $0" >&2
    exit 1
fi

if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get install -y python3-venv
fi
echo "installing edge-gateway into $PREFIX"
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/bin/python" -m pip install --quiet --upgrade "$SRC"

install -D -m 0644 "$SRC/systemd/edge-gateway.sysusers" /etc/sysusers.d/edge-gateway.conf
systemd-sysusers /etc/sysusers.d/edge-gateway.conf

# Readable by the service's group only: the config may name password files and keys.
install -d -m 0750 -o root -g edge-gateway "$CONF_DIR"
if [ ! -e "$CONF_DIR/config.yaml" ]; then
    service_config >"$CONF_DIR/config.yaml.new"
    chgrp edge-gateway "$CONF_DIR/config.yaml.new"
    chmod 0640 "$CONF_DIR/config.yaml.new"
    mv "$CONF_DIR/config.yaml.new" "$CONF_DIR/config.yaml"
    echo "wrote $CONF_DIR/config.yaml"
else
    echo "kept the existing $CONF_DIR/config.yaml"
fi
"$PREFIX/bin/edge-gateway" check-config --config "$CONF_DIR/config.yaml"

install -m 0644 "$SRC/systemd/$UNIT" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable "$UNIT"
systemctl restart "$UNIT"
systemctl --no-pager --lines=5 status "$UNIT" || true
echo "done: logs with  journalctl -u edge-gateway -f"
