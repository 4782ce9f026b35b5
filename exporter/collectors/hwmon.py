"""hwmon: temperatures from /sys/class/hwmon (node_exporter's hwmon, temperature sensors only).

A VPS rarely has any hwmon device; then this collector exposes nothing. Chip and sensor
labels follow node_exporter so dashboards keep working on bare-metal hosts:
chip from the device path ("platform_coretemp_0"), else the `name` file, else "hwmonN";
sensor "temp1"; the human-readable names go into node_hwmon_chip_names and
node_hwmon_sensor_label.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge

_INVALID = re.compile(r"[^a-z0-9:_]")
# temp<N>_<element>, e.g. temp1_input, temp2_crit_alarm.
_TEMP_FILE = re.compile(r"^temp(\d+)_(.+)$")
CHIP_LABELS = ("chip", "sensor")


def clean_name(name: str) -> str:
    """node_exporter's cleanMetricName: lower case, [^a-z0-9:_] → "_", trimmed of "_"."""
    return _INVALID.sub("_", name.strip().lower()).strip("_")


@dataclass(slots=True)
class Chip:
    chip: str
    chip_name: str | None
    # sensor ("temp1") → element ("input", "max", "label", ...) → raw file content
    sensors: dict[str, dict[str, str]] = field(default_factory=dict)


def chip_label(hwmon_dir: Path) -> str:
    """node_exporter's hwmonName: device path first, then `name`, then the hwmonN directory."""
    device = hwmon_dir / "device"
    if device.exists():
        real = Path(os.path.realpath(device))
        dev_name, dev_type = clean_name(real.name), clean_name(real.parent.name)
        if dev_type and dev_name:
            return f"{dev_type}_{dev_name}"
        if dev_name:
            return dev_name
    name = chip_name(hwmon_dir)
    if name:
        return name
    return clean_name(Path(os.path.realpath(hwmon_dir)).name)


def chip_name(hwmon_dir: Path) -> str | None:
    try:
        return clean_name((hwmon_dir / "name").read_text()) or None
    except OSError:
        return None


def read_chip(hwmon_dir: Path) -> Chip:
    chip = Chip(chip_label(hwmon_dir), chip_name(hwmon_dir))
    # Old drivers put the sensor files in device/ rather than beside it; read both.
    for directory in (hwmon_dir, hwmon_dir / "device"):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            match = _TEMP_FILE.match(name)
            if not match:
                continue
            try:
                value = (directory / name).read_text().strip()
            except OSError:
                # Some sensors refuse reads (EIO/ENODATA) while asleep; skip just that file.
                continue
            chip.sensors.setdefault(f"temp{match.group(1)}", {})[match.group(2)] = value
    return chip


def read_chips(sys: Path) -> list[Chip]:
    base = sys / "class" / "hwmon"
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return []
    return [read_chip(entry) for entry in entries if entry.is_dir()]


def hwmon_families(chips: list[Chip]) -> list[MetricFamily]:
    families: dict[str, MetricFamily] = {}
    names = gauge(
        "node_hwmon_chip_names",
        "Annotation metric for human-readable chip names",
        "chip",
        "chip_name",
    )
    labels = gauge(
        "node_hwmon_sensor_label",
        "Label for given chip and sensor",
        "chip",
        "sensor",
        "label",
    )
    for chip in chips:
        if chip.chip_name:
            names.add(1, chip.chip, chip.chip_name)
        for sensor, elements in chip.sensors.items():
            for element, raw in sorted(elements.items()):
                if element == "label":
                    labels.add(1, chip.chip, sensor, raw)
                    continue
                if element == "type":
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    continue
                family = families.get(element) or _temp_family(element)
                families[element] = family
                if element in ("alarm", "fault", "beep"):
                    family.add(value, chip.chip, sensor)
                else:
                    # The kernel reports millidegrees Celsius (Documentation/hwmon/sysfs-interface).
                    family.add(value / 1000.0, chip.chip, sensor)
    result = [names] + list(families.values()) + [labels]
    return [f for f in result if f.samples]


def _temp_family(element: str) -> MetricFamily:
    # node_exporter's naming: input → node_hwmon_temp_celsius, max → temp_max_celsius,
    # alarm/fault unitless, beep → temp_beep_enabled.
    if element in ("alarm", "fault"):
        return gauge(
            f"node_hwmon_temp_{element}",
            f"Hardware sensor {element} status (temp)",
            *CHIP_LABELS,
        )
    if element == "beep":
        return gauge(
            "node_hwmon_temp_beep_enabled",
            "Hardware monitor sensor has beeping enabled",
            *CHIP_LABELS,
        )
    suffix = "" if element == "input" else f"_{clean_name(element)}"
    return gauge(
        f"node_hwmon_temp{suffix}_celsius",
        f"Hardware monitor for temperature ({element})",
        *CHIP_LABELS,
    )


def collect(context: Context) -> list[MetricFamily]:
    return hwmon_families(read_chips(context.sys))


SPEC = CollectorSpec(
    name="hwmon",
    help="Hardware temperature sensors (node_hwmon_temp_celsius) from /sys/class/hwmon.",
    create=stateless(collect),
)
