from __future__ import annotations

import re

import pytest
from collector_testkit import by_name, samples

from vpsmon.exporter.collectors.diskstats import SPEC, parse_diskstats


def test_diskstats_parses_device_and_all_columns() -> None:
    (disk,) = parse_diskstats(" 254 0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n")
    assert disk.device == "vda"
    assert disk.values == tuple(float(v) for v in range(1, 18))


def test_diskstats_short_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 14 fields"):
        parse_diskstats(" 254 0 vda 1 2 3\n")


def test_diskstats_converts_sectors_to_bytes_and_milliseconds_to_seconds(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert samples(families["node_disk_read_bytes_total"])[("vda",)] == 1939066 * 512.0
    assert samples(families["node_disk_written_bytes_total"])[("vda",)] == 4651584 * 512.0
    assert samples(families["node_disk_reads_completed_total"])[("vda",)] == 31242
    assert samples(families["node_disk_writes_completed_total"])[("vda",)] == 43744
    assert samples(families["node_disk_io_time_seconds_total"])[("vda",)] == pytest.approx(4.852)
    assert samples(families["node_disk_flush_requests_time_seconds_total"])[
        ("vda",)
    ] == pytest.approx(0.09)
    assert families["node_disk_io_now"].type == "gauge"
    assert families["node_disk_read_bytes_total"].label_names == ("device",)


def test_diskstats_skips_partitions_and_loop_devices_by_default(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    devices = {labels[0] for labels in samples(families["node_disk_reads_completed_total"])}
    assert devices == {"vda", "zram0", "sda"}


def test_diskstats_old_kernel_device_has_no_discard_metrics(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert ("sda",) in samples(families["node_disk_io_time_weighted_seconds_total"])
    assert ("sda",) not in samples(families["node_disk_discards_completed_total"])
    assert ("zram0",) in samples(families["node_disk_discards_completed_total"])
    assert ("zram0",) not in samples(families["node_disk_flush_requests_total"])


def test_diskstats_device_exclude_is_an_option(fixture_context) -> None:
    context = fixture_context({"diskstats.device_exclude": re.compile("^(vd|zram|loop|sd)")})
    assert list(SPEC.create(context)()) == []
