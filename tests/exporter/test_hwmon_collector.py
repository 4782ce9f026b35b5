from __future__ import annotations

from collector_testkit import FIXTURES, by_name, samples

from vpsmon.exporter.collectors.hwmon import SPEC, chip_label, clean_name


def test_hwmon_clean_name_is_node_exporters() -> None:
    assert clean_name("Package id 0\n") == "package_id_0"
    assert clean_name("coretemp.0") == "coretemp_0"
    assert clean_name("pci0000:00") == "pci0000:00"


def test_hwmon_chip_is_named_after_the_device_path_first() -> None:
    assert chip_label(FIXTURES / "sys" / "class" / "hwmon" / "hwmon1") == "platform_coretemp_0"
    assert chip_label(FIXTURES / "sys" / "class" / "hwmon" / "hwmon0") == "acpitz"


def test_hwmon_temperatures_are_in_celsius(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    temps = samples(families["node_hwmon_temp_celsius"])
    assert temps == {
        ("acpitz", "temp1"): 27.8,
        ("platform_coretemp_0", "temp1"): 45.0,
        ("platform_coretemp_0", "temp2"): 43.5,
    }
    assert families["node_hwmon_temp_celsius"].help == "Hardware monitor for temperature (input)"
    assert samples(families["node_hwmon_temp_crit_celsius"]) == {
        ("platform_coretemp_0", "temp1"): 100.0
    }
    assert samples(families["node_hwmon_temp_max_celsius"]) == {
        ("platform_coretemp_0", "temp1"): 84.0
    }
    assert samples(families["node_hwmon_chip_names"]) == {
        ("acpitz", "acpitz"): 1,
        ("platform_coretemp_0", "coretemp"): 1,
    }
    assert samples(families["node_hwmon_sensor_label"]) == {
        ("platform_coretemp_0", "temp1", "Package id 0"): 1,
        ("platform_coretemp_0", "temp2", "Core 0"): 1,
    }


def test_hwmon_host_without_sensors_exposes_nothing(fixture_context, tmp_path) -> None:
    assert list(SPEC.create(fixture_context(sys=tmp_path))()) == []
