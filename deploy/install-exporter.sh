#!/bin/sh
# Install the vpsmon exporter as a systemd service, and enrol it for management when given the
# options of `vpsmon exporter enrol` (the collector's add-server dialog shows them filled in).
#
#   sudo sh install-exporter.sh                                   # metrics only
#   sudo sh install-exporter.sh --collector HOST:8081 --fingerprint sha256:... \
#        --token vpsmon-enrol_... --features exec,pty               # and manageable
#
# What it does: a system user `vpsmon`, a venv in /opt/vpsmon/venv with vpsmon[command],
# /etc/vpsmon/exporter.yml (root:vpsmon 0640; state in /var/lib/vpsmon-exporter), the unit
# vpsmon-exporter.service from this folder, then `vpsmon exporter enrol` (commands run as
# `vpsmon` unless --run-as says otherwise) and a restart. Run it again to enrol again.
set -eu

PREFIX=/opt/vpsmon
CONFIG=/etc/vpsmon/exporter.yml
STATE=/var/lib/vpsmon-exporter
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-exporter.sh: run as root (sudo)" >&2
    exit 1
fi

id vpsmon >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin vpsmon
if [ ! -x "$PREFIX/venv/bin/vpsmon" ]; then
    python3 -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/pip" install --quiet 'vpsmon[command]'
fi

install -d -m 0700 -o vpsmon -g vpsmon "$STATE"
install -d -m 0755 /etc/vpsmon
if [ ! -f "$CONFIG" ]; then
    umask 027
    cat >"$CONFIG" <<YAML
# /etc/vpsmon/exporter.yml — see docs/configuration.md
listen: 0.0.0.0:9190
interval: 5s
state_dir: $STATE
YAML
    chown root:vpsmon "$CONFIG"
fi

if [ -f "$HERE/vpsmon-exporter.service" ]; then
    install -m 0644 "$HERE/vpsmon-exporter.service" /etc/systemd/system/vpsmon-exporter.service
fi

if [ "$#" -gt 0 ]; then
    case " $* " in
        *" --run-as "*) set -- "$@" ;;
        *) set -- "$@" --run-as vpsmon ;;
    esac
    "$PREFIX/venv/bin/vpsmon" exporter enrol -c "$CONFIG" "$@"
    # Made by root just now (the exporter's key pair, the collector's certificate): the
    # exporter runs as vpsmon and must read them.
    chown -R vpsmon:vpsmon "$STATE"
fi

systemctl daemon-reload
systemctl enable vpsmon-exporter >/dev/null
systemctl restart vpsmon-exporter
echo "vpsmon exporter installed; metrics on :9190$( [ "$#" -gt 0 ] && echo ', enrolled for management')"
