"""deploy/: the exporter's installer script, systemd unit and example configuration.

A package only so the files ship with vpsmon: the collector serves install-exporter.sh at
``/install-exporter.sh`` (web/enrol.py) for the enrol command to fetch.
"""

from pathlib import Path

INSTALLER = Path(__file__).with_name("install-exporter.sh")
UNIT = Path(__file__).with_name("vpsmon-exporter.service")
