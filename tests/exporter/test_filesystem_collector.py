from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from collector_testkit import by_name, samples

from vpsmon.exporter.collectors.filesystem import (
    DEFAULT_FS_TYPES_EXCLUDE,
    DEFAULT_MOUNT_POINTS_EXCLUDE,
    SPEC,
    FilesystemCollector,
    Mount,
    parse_mounts,
    select_mounts,
)

# f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_flag, f_namemax
ROOT_STATVFS = os.statvfs_result((4096, 4096, 1000, 400, 300, 5000, 4000, 4000, 0, 255))


def fake_statvfs(calls: list[str]):
    def statvfs(path: str) -> os.statvfs_result:
        calls.append(path)
        return ROOT_STATVFS

    return statvfs


def test_mounts_are_parsed_with_octal_escapes_and_read_only_flag() -> None:
    mounts = parse_mounts("/dev/vdb /srv/my\\040data xfs ro,noatime 0 0\n/dev/vda / ext4 rw 0 0\n")
    assert mounts == [
        Mount("/dev/vdb", "/srv/my data", "xfs", readonly=True),
        Mount("/dev/vda", "/", "ext4", readonly=False),
    ]


def test_mount_option_containing_ro_is_not_read_only() -> None:
    (mount,) = parse_mounts("/dev/vda / ext4 rw,errors=remount-ro 0 0\n")
    assert not mount.readonly


def test_default_patterns_skip_pseudo_and_container_file_systems() -> None:
    text = (Path(__file__).parent / "fixtures" / "proc" / "1" / "mounts").read_text()
    selected = select_mounts(
        parse_mounts(text), Path("/"), DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE
    )
    assert [m.mountpoint for m in selected] == ["/", "/srv/my data", "/run"]


def test_mount_points_under_rootfs_are_labelled_with_the_host_path() -> None:
    mounts = [
        Mount("/dev/vda", "/host", "ext4", False),
        Mount("/dev/vdb", "/host/boot", "ext4", False),
    ]
    selected = select_mounts(
        mounts, Path("/host"), DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE
    )
    assert [m.mountpoint for m in selected] == ["/", "/boot"]


def test_filesystem_collector_reports_statvfs_in_bytes(fixture_context) -> None:
    calls: list[str] = []
    context = fixture_context(rootfs=Path("/"))
    families = by_name(FilesystemCollector(context, fake_statvfs(calls))())
    assert calls == ["/", "/srv/my data", "/run"]
    root = ("/dev/vda", "ext4", "/")
    assert samples(families["node_filesystem_size_bytes"])[root] == 1000 * 4096
    assert samples(families["node_filesystem_free_bytes"])[root] == 400 * 4096
    assert samples(families["node_filesystem_avail_bytes"])[root] == 300 * 4096
    assert samples(families["node_filesystem_files"])[root] == 5000
    assert samples(families["node_filesystem_files_free"])[root] == 4000
    assert samples(families["node_filesystem_device_error"])[root] == 0
    readonly = samples(families["node_filesystem_readonly"])
    assert readonly[root] == 0
    assert readonly[("/dev/vdb", "xfs", "/srv/my data")] == 1
    for family in families.values():
        assert family.type == "gauge"
        assert family.label_names == ("device", "fstype", "mountpoint")


def test_filesystem_statvfs_joins_mount_points_to_rootfs(fixture_context, tmp_path) -> None:
    calls: list[str] = []
    FilesystemCollector(fixture_context(rootfs=tmp_path), fake_statvfs(calls))()
    assert calls == [str(tmp_path), str(tmp_path / "srv/my data"), str(tmp_path / "run")]


def test_filesystem_failed_statvfs_sets_device_error_for_that_mount_only(fixture_context) -> None:
    def statvfs(path: str) -> os.statvfs_result:
        if path == "/run":
            raise PermissionError(13, "Permission denied", path)
        return ROOT_STATVFS

    families = by_name(FilesystemCollector(fixture_context(rootfs=Path("/")), statvfs)())
    run = ("tmpfs", "tmpfs", "/run")
    assert samples(families["node_filesystem_device_error"])[run] == 1
    assert samples(families["node_filesystem_readonly"])[run] == 0
    assert run not in samples(families["node_filesystem_size_bytes"])
    assert ("/dev/vda", "ext4", "/") in samples(families["node_filesystem_size_bytes"])


def test_filesystem_hanging_statvfs_times_out_and_is_skipped_until_it_returns(
    fixture_context,
) -> None:
    release = threading.Event()
    calls: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        calls.append(path)
        if path == "/srv/my data":
            release.wait(10)
        return ROOT_STATVFS

    collect = FilesystemCollector(
        fixture_context({"filesystem.mount_timeout": 0.05}, rootfs=Path("/")), statvfs
    )
    stuck = ("/dev/vdb", "xfs", "/srv/my data")
    started = time.monotonic()
    first = by_name(collect())
    assert time.monotonic() - started < 2
    assert samples(first["node_filesystem_device_error"])[stuck] == 1
    assert ("/dev/vda", "ext4", "/") in samples(first["node_filesystem_size_bytes"])

    second = by_name(collect())
    assert samples(second["node_filesystem_device_error"])[stuck] == 1
    assert calls.count("/srv/my data") == 1, "a stuck mount is not asked again"

    release.set()
    deadline = time.monotonic() + 5
    while calls.count("/srv/my data") == 1 and time.monotonic() < deadline:
        third = by_name(collect())
        time.sleep(0.01)
    assert samples(third["node_filesystem_device_error"])[stuck] == 0


def test_filesystem_falls_back_to_self_mounts(fixture_context, tmp_path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mounts").write_text("/dev/vda / ext4 rw 0 0\n")
    calls: list[str] = []
    FilesystemCollector(fixture_context(proc=tmp_path, rootfs=Path("/")), fake_statvfs(calls))()
    assert calls == ["/"]


def test_filesystem_exclude_patterns_are_options(fixture_context) -> None:
    context = fixture_context(
        {
            "filesystem.mount_points_exclude": re.compile("^/(srv|proc|sys)($|/)"),
            "filesystem.fs_types_exclude": re.compile("^(tmpfs|overlay)$"),
        },
        rootfs=Path("/"),
    )
    calls: list[str] = []
    FilesystemCollector(context, fake_statvfs(calls))()
    assert calls == ["/"]


def test_filesystem_spec_declares_its_options() -> None:
    assert [s.name for s in SPEC.settings] == [
        "mount_points_exclude",
        "fs_types_exclude",
        "mount_timeout",
    ]
