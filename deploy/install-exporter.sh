#!/bin/sh
# Install the vpsmon exporter as a systemd service, and enrol it for management when given the
# options of `vpsmon exporter enrol` (the collector's add-server dialog prints them filled in).
#
#   curl -fsSL http://COLLECTOR:8080/install-exporter.sh | sudo sh             # metrics only
#   curl -fsSL http://COLLECTOR:8080/install-exporter.sh | sudo sh -s -- \
#        --collector HOST:8081 --fingerprint sha256:... --token vpsmon-enrol_... \
#        --features exec,pty                                                  # and manageable
#   sh install-exporter.sh --help          # options; --dry-run checks them and changes nothing
#
# What it does: python3-venv if missing (apt-get), a system user `vpsmon`, a venv in
# /opt/vpsmon/venv with vpsmon[command], /etc/vpsmon/exporter.yml (root:vpsmon 0640; state in
# /var/lib/vpsmon-exporter), the unit vpsmon-exporter.service (the same as
# deploy/vpsmon-exporter.service), then `vpsmon exporter enrol` (commands run as `vpsmon` unless
# --run-as says otherwise), the management drop-in (deploy/dropin.py) and a restart. Run it
# again to enrol again.
#
# Trust: this script holds no secret. The enrolment itself is protected by the pinned collector
# fingerprint and the one-time token, not by how this script reached you (see docs/security.md).
set -eu

PREFIX=/opt/vpsmon
CONFIG=/etc/vpsmon/exporter.yml
STATE=/var/lib/vpsmon-exporter
UNIT=/etc/systemd/system/vpsmon-exporter.service
PACKAGE=${VPSMON_PACKAGE:-vpsmon[command]}

usage() {
    cat <<'EOF'
usage: install-exporter.sh [--collector HOST:PORT --fingerprint sha256:HEX --token TOKEN]
                           [--features exec,pty,files,docker] [--run-as USER]
                           [--advertise HOST:PORT] [--file-root PATH]... [--dry-run] [--help]

Installs the vpsmon exporter (metrics on :9190) as vpsmon-exporter.service. With --collector,
--fingerprint and --token (printed by the collector's enrol page) it also enrols the exporter
for the management features named; --run-as is the user commands, terminals and files run as
(default: vpsmon); --file-root (repeatable) the folders the file manager may use.
--dry-run checks the options, prints the steps and changes nothing.
Environment: VPSMON_PACKAGE=what pip installs (default 'vpsmon[command]').
EOF
}

die() {
    echo "install-exporter.sh: $*" >&2
    exit 2
}

DRY_RUN=0
ENROL=0
RUN_AS=vpsmon
RUN_AS_GIVEN=0
# The enrol options are kept, in order, in "$@": each original argument is shifted off the
# front and the ones for `vpsmon exporter enrol` are appended at the end.
n=$#
while [ "$n" -gt 0 ]; do
    opt=$1
    shift
    n=$((n - 1))
    case $opt in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run) DRY_RUN=1 ;;
        --collector | --fingerprint | --token | --features | --run-as | --advertise | --file-root)
            [ "$n" -gt 0 ] || die "$opt needs a value (see --help)"
            value=$1
            shift
            n=$((n - 1))
            case $opt in
                --collector | --fingerprint | --token) ENROL=1 ;;
                --run-as)
                    RUN_AS=$value
                    RUN_AS_GIVEN=1
                    ;;
            esac
            set -- "$@" "$opt" "$value"
            ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done
if [ "$ENROL" -eq 0 ] && [ "$#" -gt 0 ]; then
    die "--features/--run-as/--advertise/--file-root need --collector, --fingerprint and --token"
fi
if [ "$ENROL" -eq 1 ] && [ "$RUN_AS_GIVEN" -eq 0 ]; then
    set -- "$@" --run-as vpsmon
fi

if [ "$DRY_RUN" -eq 1 ]; then
    echo "would install: user vpsmon, $PREFIX/venv with $PACKAGE, $CONFIG, $UNIT"
    if [ "$ENROL" -eq 1 ]; then
        echo "would run: $PREFIX/venv/bin/vpsmon exporter enrol -c $CONFIG $*"
    fi
    echo "would write: /etc/systemd/system/vpsmon-exporter.service.d/management.conf if exec, pty or files are enabled (else remove it)"
    echo "would run: systemctl enable vpsmon-exporter && systemctl restart vpsmon-exporter"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-exporter.sh: run as root (sudo)" >&2
    exit 1
fi

# Piped (`curl ... | sh`), the rest of this script is sh's stdin: every program that could read
# stdin gets /dev/null, or it would swallow the script.
# Debian/Ubuntu ship python3 without venv/ensurepip (and system pip refuses to install: PEP 668).
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv </dev/null
    else
        die "python3 with the venv module is needed; install it and run this again"
    fi
fi

id vpsmon >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin vpsmon
if [ ! -x "$PREFIX/venv/bin/vpsmon" ]; then
    python3 -m venv "$PREFIX/venv" </dev/null
    "$PREFIX/venv/bin/pip" install --quiet "$PACKAGE" </dev/null
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
    umask 022
fi

# The unit: the same text as deploy/vpsmon-exporter.service (a test keeps them equal), written
# from here so that `curl ... | sh` needs no other file.
cat >"$UNIT" <<'UNIT'
# systemd unit for the exporter. Install: pip install vpsmon (into /opt/vpsmon/venv), then
#   cp vpsmon-exporter.service /etc/systemd/system/ && systemctl enable --now vpsmon-exporter
[Unit]
Description=vpsmon exporter (Prometheus metrics for this server)
Documentation=https://github.com/vpsmon/vpsmon/blob/main/docs/metrics.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=vpsmon
Group=vpsmon
# Container metrics read the docker socket: on a host with Docker, uncomment (systemd refuses
# to start the unit if the group does not exist). Without it the docker collector reports
# vpsmon_collector_success{collector="docker"} 0 and everything else works.
#SupplementaryGroups=docker
ExecStart=/opt/vpsmon/venv/bin/vpsmon exporter run -c /etc/vpsmon/exporter.yml
Restart=on-failure
RestartSec=5
# The exporter only reads /proc and /sys: lock everything else down. With exec, pty or files
# enabled, install-exporter.sh adds a drop-in lifting this (deploy/dropin.py says what and why).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
MemoryMax=128M

[Install]
WantedBy=multi-user.target
UNIT
chmod 0644 "$UNIT"

if [ "$ENROL" -eq 1 ]; then
    "$PREFIX/venv/bin/vpsmon" exporter enrol -c "$CONFIG" "$@" </dev/null
    # Made by root just now (the exporter's key pair, the collector's certificate): the
    # exporter runs as vpsmon and must read them.
    chown -R vpsmon:vpsmon "$STATE"
fi

# The unit is locked down for metrics (ProtectSystem=strict, ProtectHome=read-only ...). With
# exec, pty or files enabled in exporter.yml, a drop-in lifts that so terminals and the file
# manager can write (and runs the service as root when command.run_as is another user);
# without them the drop-in is removed. deploy/dropin.py says exactly what and why.
DROPIN=/etc/systemd/system/vpsmon-exporter.service.d/management.conf
install -d -m 0755 "${DROPIN%/*}"
if "$PREFIX/venv/bin/python" -m vpsmon.deploy.dropin "$CONFIG" >"$DROPIN.new" </dev/null; then
    if [ -s "$DROPIN.new" ]; then
        chmod 0644 "$DROPIN.new"
        mv "$DROPIN.new" "$DROPIN"
    else
        rm -f "$DROPIN.new" "$DROPIN"
    fi
else
    rm -f "$DROPIN.new"
    echo "install-exporter.sh: could not work out the drop-in; the unit stays locked down" >&2
fi

systemctl daemon-reload
systemctl enable vpsmon-exporter >/dev/null
systemctl restart vpsmon-exporter
echo "vpsmon exporter installed; metrics on :9190$([ "$ENROL" -eq 1 ] && echo ', enrolled for management')"
