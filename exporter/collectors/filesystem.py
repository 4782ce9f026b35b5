"""filesystem: node_filesystem_* size, free space and inodes per mount (node_exporter's filesystem).

Mounts come from /proc/1/mounts (the host's view when the exporter runs in a container that
shares the host PID namespace), else /proc/self/mounts. Each mount point is looked up under
the injected root file system. statvfs on a dead network mount can block for minutes, so it
runs in a daemon thread with a timeout; a mount that timed out is "stuck" and skipped (reported
with device_error 1) until its pending call returns, as node_exporter does.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpsmon.config import Setting, parse_duration, parse_regex
from vpsmon.exporter.collectors.base import CollectorSpec, Context
from vpsmon.exporter.metrics import MetricFamily, gauge

# node_exporter's upstream defaults (collector/filesystem_linux.go). Debian's build excludes
# all of /run, /mnt and /media instead of only /run/credentials/….
DEFAULT_MOUNT_POINTS_EXCLUDE = re.compile(
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
DEFAULT_FS_TYPES_EXCLUDE = re.compile(
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
    r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs"
    r"|erofs|sysfs|tracefs)$"
)

LABELS = ("device", "fstype", "mountpoint")

# /proc/mounts escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c).
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class Usage:
    size: float
    free: float
    avail: float
    files: float
    files_free: float


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = fields[:4]
        mounts.append(
            Mount(
                _unescape(device),
                _unescape(mountpoint),
                fstype,
                readonly="ro" in options.split(","),
            )
        )
    return mounts


def select_mounts(
    mounts: list[Mount],
    rootfs: Path,
    mount_points_exclude: re.Pattern[str],
    fs_types_exclude: re.Pattern[str],
) -> list[Mount]:
    """Mounts to report, with mount points relative to `rootfs`, excluded and duplicates dropped.

    A mount point listed twice (over-mounts, bind mounts of the same device) would make a
    duplicate series, which Prometheus rejects; the first one wins.
    """
    selected: dict[tuple[str, str, str], Mount] = {}
    root = str(rootfs).rstrip("/")
    for mount in mounts:
        mountpoint = mount.mountpoint
        # Seen from inside a container, the host's mounts sit under rootfs (e.g. /host/boot);
        # the label shows the host's path, as node_exporter's rootfsStripPrefix does.
        if root and (mountpoint == root or mountpoint.startswith(root + "/")):
            mountpoint = mountpoint[len(root) :] or "/"
        if mount_points_exclude.search(mountpoint) or fs_types_exclude.search(mount.fstype):
            continue
        key = (mount.device, mount.fstype, mountpoint)
        if key not in selected:
            selected[key] = Mount(mount.device, mountpoint, mount.fstype, mount.readonly)
    return list(selected.values())


def usage_from_statvfs(st: os.statvfs_result) -> Usage:
    # node_exporter multiplies by f_bsize (Go's Statfs_t.Bsize), not f_frsize; on Linux they
    # are the same for every file system that matters, and matching keeps values identical.
    return Usage(
        size=float(st.f_blocks * st.f_bsize),
        free=float(st.f_bfree * st.f_bsize),
        avail=float(st.f_bavail * st.f_bsize),
        files=float(st.f_files),
        files_free=float(st.f_ffree),
    )


def filesystem_families(results: list[tuple[Mount, Usage | None]]) -> list[MetricFamily]:
    """Families for (mount, usage) pairs; usage None means statvfs failed or is stuck."""
    size = gauge("node_filesystem_size_bytes", "Filesystem size in bytes.", *LABELS)
    free = gauge("node_filesystem_free_bytes", "Filesystem free space in bytes.", *LABELS)
    avail = gauge(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        *LABELS,
    )
    files = gauge("node_filesystem_files", "Filesystem total file nodes.", *LABELS)
    files_free = gauge("node_filesystem_files_free", "Filesystem total free file nodes.", *LABELS)
    readonly = gauge("node_filesystem_readonly", "Filesystem read-only status.", *LABELS)
    device_error = gauge(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        *LABELS,
    )
    for mount, usage in results:
        labels = (mount.device, mount.fstype, mount.mountpoint)
        readonly.add(1 if mount.readonly else 0, *labels)
        device_error.add(0 if usage is not None else 1, *labels)
        if usage is None:
            # node_exporter reports only device_error and readonly for a failed mount.
            continue
        size.add(usage.size, *labels)
        free.add(usage.free, *labels)
        avail.add(usage.avail, *labels)
        files.add(usage.files, *labels)
        files_free.add(usage.files_free, *labels)
    families = [size, free, avail, files, files_free, readonly, device_error]
    return [f for f in families if f.samples]


Statvfs = Callable[[str], os.statvfs_result]


class FilesystemCollector:
    """Collects once per call; remembers mounts whose statvfs has not returned yet."""

    def __init__(self, context: Context, statvfs: Statvfs = os.statvfs) -> None:
        self._context = context
        self._statvfs = statvfs
        self._mount_points_exclude: re.Pattern[str] = context.option(
            "filesystem", "mount_points_exclude"
        )
        self._fs_types_exclude: re.Pattern[str] = context.option("filesystem", "fs_types_exclude")
        self._timeout: float = context.option("filesystem", "mount_timeout")
        self._stuck: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> list[MetricFamily]:
        mounts = select_mounts(
            parse_mounts(self._read_mounts()),
            self._context.rootfs,
            self._mount_points_exclude,
            self._fs_types_exclude,
        )
        return filesystem_families([(mount, self._usage(mount)) for mount in mounts])

    def _read_mounts(self) -> str:
        proc = self._context.proc
        try:
            return (proc / "1" / "mounts").read_text()
        except OSError:
            # Not readable (no permission, or PID 1 is not visible): our own namespace's view.
            return (proc / "self" / "mounts").read_text()

    def _usage(self, mount: Mount) -> Usage | None:
        path = str(self._context.rootfs / mount.mountpoint.lstrip("/"))
        with self._lock:
            if path in self._stuck:
                return None
        result: list[Usage | None] = [None]
        done = threading.Event()

        def stat() -> None:
            try:
                result[0] = usage_from_statvfs(self._statvfs(path))
            except OSError:
                # Gone, permission denied, stale NFS handle: device_error 1 for this mount only.
                pass
            finally:
                done.set()
                with self._lock:
                    self._stuck.discard(path)

        thread = threading.Thread(target=stat, name=f"statvfs {path}", daemon=True)
        thread.start()
        if not done.wait(self._timeout):
            with self._lock:
                # The check avoids marking a call that finished between wait() and here.
                if not done.is_set():
                    self._stuck.add(path)
            return None
        return result[0]


SPEC = CollectorSpec(
    name="filesystem",
    help="Size, free space and inodes of mounted file systems (node_filesystem_*).",
    create=FilesystemCollector,
    settings=(
        Setting(
            "mount_points_exclude",
            parse_regex,
            DEFAULT_MOUNT_POINTS_EXCLUDE,
            "Regular expression of mount points to leave out (node_exporter's default).",
        ),
        Setting(
            "fs_types_exclude",
            parse_regex,
            DEFAULT_FS_TYPES_EXCLUDE,
            "Regular expression of file system types to leave out: pseudo and read-only image "
            "file systems (node_exporter's default).",
        ),
        Setting(
            "mount_timeout",
            parse_duration,
            5.0,
            "How long to wait for a mount's statvfs before reporting it with device_error 1 "
            "and skipping it until the call returns.",
        ),
    ),
)
