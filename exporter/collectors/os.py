"""os: node_os_info and node_os_version from os-release (node_exporter's os collector).

https://www.freedesktop.org/software/systemd/man/os-release.html — /etc/os-release wins over
/usr/lib/os-release; both are read under the injected root file system.
"""

from __future__ import annotations

import calendar
import datetime
import re
from pathlib import Path

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge

RELEASE_FILES = ("etc/os-release", "usr/lib/os-release")

# Label → os-release key, in node_exporter's label order.
INFO_LABELS = {
    "build_id": "BUILD_ID",
    "id": "ID",
    "id_like": "ID_LIKE",
    "image_id": "IMAGE_ID",
    "image_version": "IMAGE_VERSION",
    "name": "NAME",
    "pretty_name": "PRETTY_NAME",
    "variant": "VARIANT",
    "variant_id": "VARIANT_ID",
    "version": "VERSION",
    "version_codename": "VERSION_CODENAME",
    "version_id": "VERSION_ID",
}

# node_exporter's versionRegex: the major.minor prefix of VERSION_ID ("22.04.3" → 22.04).
_MAJOR_MINOR = re.compile(r"^[0-9]+\.?[0-9]*")
_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_ESCAPE = re.compile(r"\\(.)")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell-style quoting, as the spec allows; other lines are ignored."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if not match:
            continue
        key, raw = match.groups()
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            value = raw[1:-1]
        elif len(raw) >= 2 and raw[0] == raw[-1] == '"':
            value = _ESCAPE.sub(r"\1", raw[1:-1])
        else:
            value = _ESCAPE.sub(r"\1", raw)
        values[key] = value
    return values


def os_version(version_id: str) -> float:
    match = _MAJOR_MINOR.match(version_id)
    return float(match.group(0)) if match else 0.0


def os_families(release: dict[str, str]) -> list[MetricFamily]:
    info = gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, "
        "image_version, name, pretty_name, variant, variant_id, version, version_codename, "
        "version_id.",
        *INFO_LABELS,
    )
    info.add(1, *(release.get(key, "") for key in INFO_LABELS.values()))
    families = [info]
    version = os_version(release.get("VERSION_ID", ""))
    if version > 0:
        # Like node_exporter: no version series for rolling releases without VERSION_ID.
        version_family = gauge(
            "node_os_version",
            "Metric containing the major.minor part of the OS version.",
            "id",
            "id_like",
            "name",
        )
        version_family.add(
            version, release.get("ID", ""), release.get("ID_LIKE", ""), release.get("NAME", "")
        )
        families.append(version_family)
    support_end = _support_end(release.get("SUPPORT_END", ""))
    if support_end is not None:
        end = gauge(
            "node_os_support_end_timestamp_seconds",
            "Metric containing the end-of-life date timestamp of the OS.",
        )
        end.add(support_end)
        families.append(end)
    return families


def _support_end(text: str) -> float | None:
    """SUPPORT_END (YYYY-MM-DD) as midnight UTC; a malformed date is left out, not an error."""
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        return None
    return float(calendar.timegm(day.timetuple()))


def read_os_release(rootfs: Path) -> str | None:
    for name in RELEASE_FILES:
        try:
            return (rootfs / name).read_text()
        except FileNotFoundError:
            continue
    return None


def collect(context: Context) -> list[MetricFamily]:
    text = read_os_release(context.rootfs)
    if text is None:
        # No os-release at all (minimal containers): nothing to say, as node_exporter.
        return []
    return os_families(parse_os_release(text))


SPEC = CollectorSpec(
    name="os",
    help="Operating system name and version from os-release (node_os_info, node_os_version).",
    create=stateless(collect),
)
