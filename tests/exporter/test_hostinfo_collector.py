from __future__ import annotations

from pathlib import Path

from collector_testkit import FIXTURES, by_name

from vpsmon.exporter.collectors.hostinfo import (
    SPEC,
    container_type,
    parse_cpuinfo,
    vm_type,
)


def test_cpuinfo_gives_model_logical_cores_and_hypervisor_flag() -> None:
    cpu = parse_cpuinfo((FIXTURES / "proc" / "cpuinfo").read_text())
    assert cpu.model == "AMD EPYC 7543 32-Core Processor"
    assert cpu.cores == 2
    assert cpu.hypervisor_flag


def test_container_is_found_from_pid1_environment_or_marker_files() -> None:
    assert container_type(b"PATH=/bin\0container=lxc\0", False, False) == "lxc"
    assert container_type(b"container=something\0", False, False) == "container-other"
    assert container_type(None, True, False) == "docker"
    assert container_type(b"PATH=/bin\0", False, True) == "podman"
    assert container_type(None, False, False) is None


def test_vm_type_from_dmi_xen_clock_source_or_cpu_flag() -> None:
    assert vm_type(["QEMU", "Standard PC (i440FX + PIIX, 1996)"], "", [], True) == "qemu"
    assert vm_type(["Microsoft Corporation", "Virtual Machine"], "", [], True) == "microsoft"
    assert vm_type(["VMware, Inc."], "", [], True) == "vmware"
    assert vm_type([], "xen", [], False) == "xen"
    assert vm_type([], "", ["tsc", "kvm-clock"], True) == "kvm"
    assert vm_type([], "", ["tsc"], True) == "vm-other"
    assert vm_type(["Dell Inc."], "", ["tsc", "hpet"], False) == "none"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_hostinfo_reports_model_virtualisation_and_cores(fixture_context, tmp_path) -> None:
    write(tmp_path / "sys/class/dmi/id/sys_vendor", "QEMU\n")
    context = fixture_context(sys=tmp_path / "sys", rootfs=tmp_path)
    families = by_name(SPEC.create(context)())
    info = families["vpsmon_host_info"]
    assert info.label_names == ("cpu_model", "virtualization")
    assert info.samples == [(("AMD EPYC 7543 32-Core Processor", "qemu"), 1.0)]
    assert families["vpsmon_host_cpu_cores"].samples == [((), 2.0)]


def test_hostinfo_container_wins_over_the_vm(fixture_context, tmp_path) -> None:
    write(tmp_path / ".dockerenv", "")
    context = fixture_context(rootfs=tmp_path)
    families = by_name(SPEC.create(context)())
    assert families["vpsmon_host_info"].samples[0][0][1] == "docker"


def test_hostinfo_is_detected_once_and_then_repeated(fixture_context, tmp_path) -> None:
    proc = tmp_path / "proc"
    write(proc / "cpuinfo", "processor : 0\nmodel name : A\n")
    collect = SPEC.create(fixture_context(proc=proc, sys=tmp_path / "sys", rootfs=tmp_path))
    first = collect()
    (proc / "cpuinfo").unlink()
    assert [f.samples for f in collect()] == [f.samples for f in first]
