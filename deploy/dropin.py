"""The systemd drop-in that install-exporter.sh writes next to vpsmon-exporter.service.

The unit is locked down for a metrics-only exporter (it only reads /proc and /sys):
ProtectSystem=strict, ProtectHome=read-only, PrivateTmp, NoNewPrivileges, MemoryMax=128M.
Commands, terminals and file writes run in the exporter's service, so with exec, pty or
files enabled those would make a terminal that cannot write outside /tmp, a file manager that
cannot save, and `sudo` that never works. With any of them enabled the drop-in lifts exactly
these restrictions (the policy file and command.run_as are then what limits them, as for an
SSH login of that user); with none, there is no drop-in and the unit stays locked down.

    python -m vpsmon.deploy.dropin /etc/vpsmon/exporter.yml   # prints the drop-in, or nothing
"""

from __future__ import annotations

import grp
import sys
from pathlib import Path

from vpsmon.config import ConfigError
from vpsmon.exporter.config import ExporterConfig, load_config

SERVICE_USER = "vpsmon"
# The features whose processes or writes the metrics-only sandbox would break.
MANAGING = ("exec", "pty", "files")


def management_dropin(config: ExporterConfig, service_user: str = SERVICE_USER) -> str | None:
    """The drop-in's text for `config`, or None when the unit should stay locked down."""
    features = config.command.features
    lines = []
    if features & set(MANAGING):
        lines += [
            "# Commands, terminals and the file manager work like a login of command.run_as:",
            "# the policy file (command.policy_file) and that user's rights limit them.",
            "ProtectSystem=no",
            "ProtectHome=no",
            "PrivateTmp=no",
            "NoNewPrivileges=no",
            "ProtectKernelTunables=no",
            "ProtectControlGroups=no",
            "MemoryMax=infinity",
        ]
        run_as = config.command.run_as
        if run_as and run_as != service_user:
            lines += [
                f"# command.run_as is {run_as}: switching to that user needs root.",
                "User=root",
                "Group=root",
            ]
    if "docker" in features and _group_exists("docker"):
        lines += ["# Docker control talks to the docker socket.", "SupplementaryGroups=docker"]
    if not lines:
        return None
    enabled = ", ".join(sorted(features))
    head = [
        "# Written by install-exporter.sh (vpsmon.deploy.dropin) for the management features",
        f"# enabled in exporter.yml ({enabled}); it is removed again when they are off.",
        "[Service]",
    ]
    return "\n".join(head + lines) + "\n"


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vpsmon.deploy.dropin EXPORTER_YML", file=sys.stderr)
        return 2
    try:
        config = load_config(Path(argv[0]), env={})
    except (ConfigError, OSError) as err:
        print(f"vpsmon.deploy.dropin: {err}", file=sys.stderr)
        return 1
    text = management_dropin(config)
    if text:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
