"""hostinfo: vpsmon_host_info{cpu_model,virtualization} and vpsmon_host_cpu_cores.

node_exporter has no equivalent (its cpu info collector is off by default and has no
virtualisation type), so these carry the vpsmon_ prefix. The virtualisation type is found
cheaply, in the spirit of systemd-detect-virt: a container wins over the VM it runs in, then
DMI vendor strings, then the paravirtual clock source, then the CPU's hypervisor flag.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from vpsmon.exporter.collectors.base import CollectorSpec, Context
from vpsmon.exporter.metrics import MetricFamily, gauge

# Substrings of /sys/class/dmi/id/{sys_vendor,product_name,bios_vendor} → type, first match
# wins; the same table systemd-detect-virt keeps (src/basic/virt.c, dmi_vendor_table).
DMI_VENDORS: tuple[tuple[str, str], ...] = (
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Oracle Corporation", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
    ("Google Compute Engine", "google"),
)

# Paravirtual clock sources only exist inside the matching hypervisor.
CLOCKSOURCES: tuple[tuple[str, str], ...] = (
    ("kvm-clock", "kvm"),
    ("xen", "xen"),
    ("hyperv_clocksource_tsc_page", "microsoft"),
    ("hyperv_clocksource_msr", "microsoft"),
)

CONTAINER_TYPES = ("docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "rkt", "wsl")


@dataclass(frozen=True, slots=True)
class CPUInfo:
    model: str
    cores: int
    hypervisor_flag: bool


def parse_cpuinfo(text: str) -> CPUInfo:
    """Model of the first CPU, number of logical CPUs, and whether "hypervisor" is a flag."""
    model = ""
    cores = 0
    hypervisor = False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "Model", "cpu model") and not model:
            # x86 writes "model name"; arm64 often has none, some boards write "Model";
            # MIPS writes "cpu model".
            model = value.strip()
        elif key == "flags" and not hypervisor:
            hypervisor = "hypervisor" in value.split()
    return CPUInfo(model, cores, hypervisor)


def container_type(environ: bytes | None, dockerenv: bool, containerenv: bool) -> str | None:
    """The container manager, from PID 1's `container=` (lxc, podman, nspawn set it) or from
    the marker files Docker (/.dockerenv) and Podman (/run/.containerenv) create."""
    if environ:
        for entry in environ.split(b"\0"):
            if entry.startswith(b"container="):
                value = entry[len(b"container=") :].decode(errors="replace").strip()
                if value:
                    return value if value in CONTAINER_TYPES else "container-other"
    if dockerenv:
        return "docker"
    if containerenv:
        return "podman"
    return None


def vm_type(
    dmi: list[str], hypervisor_type: str, clocksources: list[str], hypervisor_flag: bool
) -> str:
    if hypervisor_type == "xen":
        # Xen PV guests have neither DMI nor the CPU flag, only /sys/hypervisor/type.
        return "xen"
    for text in dmi:
        for needle, kind in DMI_VENDORS:
            if needle in text:
                return kind
    if any("Microsoft Corporation" in t for t in dmi) and any("Virtual Machine" in t for t in dmi):
        return "microsoft"
    for source, kind in CLOCKSOURCES:
        if source in clocksources:
            return kind
    return "vm-other" if hypervisor_flag else "none"


def host_families(cpu: CPUInfo, virtualization: str) -> list[MetricFamily]:
    info = gauge(
        "vpsmon_host_info",
        "Host facts that do not change while it runs, value is always 1.",
        "cpu_model",
        "virtualization",
    )
    info.add(1, cpu.model, virtualization)
    cores = gauge("vpsmon_host_cpu_cores", "Number of logical CPUs.")
    cores.add(cpu.cores)
    return [info, cores]


def _read_optional(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def detect_virtualization(context: Context, cpu: CPUInfo) -> str:
    try:
        environ: bytes | None = (context.proc / "1" / "environ").read_bytes()
    except OSError:
        # Only root may read PID 1's environment; the marker files still work.
        environ = None
    container = container_type(
        environ,
        (context.rootfs / ".dockerenv").exists(),
        (context.rootfs / "run" / ".containerenv").exists(),
    )
    if container:
        return container
    dmi_dir = context.sys / "class" / "dmi" / "id"
    dmi = [_read_optional(dmi_dir / n) for n in ("sys_vendor", "product_name", "bios_vendor")]
    clocksource = context.sys / "devices" / "system" / "clocksource" / "clocksource0"
    sources = _read_optional(clocksource / "available_clocksource").split()
    hypervisor_type = _read_optional(context.sys / "hypervisor" / "type")
    return vm_type([t for t in dmi if t], hypervisor_type, sources, cpu.hypervisor_flag)


class HostInfoCollector:
    """Detects once and then repeats the answer.

    /proc/cpuinfo is tens of kilobytes on a large host and none of this changes while the host
    runs (a VPS resize needs a reboot), so reading it every 5 s would be waste.
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        self._families: list[MetricFamily] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> list[MetricFamily]:
        with self._lock:
            if self._families is None:
                cpu = parse_cpuinfo((self._context.proc / "cpuinfo").read_text())
                self._families = host_families(cpu, detect_virtualization(self._context, cpu))
            # A new list each time, so a caller that extends it cannot change the cache.
            return list(self._families)


SPEC = CollectorSpec(
    name="hostinfo",
    help="CPU model, logical core count and virtualisation type (vpsmon_host_*).",
    create=HostInfoCollector,
)
