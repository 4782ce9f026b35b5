"""The committed gRPC modules are exactly what `make proto` makes from the .proto files."""

from __future__ import annotations

from pathlib import Path

from tools.protogen import PROTO, generate


def test_the_committed_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in generate(tmp_path)}
    committed = {
        p.relative_to(PROTO): p.read_bytes()
        for p in sorted((PROTO / "vpsmon" / "v1").glob("*_pb2*.py*"))
    }
    assert sorted(fresh) == sorted(committed)
    stale = [str(name) for name, text in fresh.items() if committed[name] != text]
    assert stale == [], f"run `make proto` and commit: {stale}"


def test_the_generated_modules_import_under_vpsmon_v1() -> None:
    from vpsmon.v1 import agent_pb2, agent_pb2_grpc

    services = agent_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"Agent"}
    methods = set(services["Agent"].methods_by_name)
    assert {"Exec", "Pty", "FileRead", "FileWrite", "DockerLogs", "DockerStop"} <= methods
    assert hasattr(agent_pb2_grpc, "AgentServicer")


def test_the_collector_port_serves_enrol_from_fleet_proto() -> None:
    from vpsmon.v1 import fleet_pb2, fleet_pb2_grpc

    assert set(fleet_pb2.DESCRIPTOR.services_by_name) >= {"Enrol"}
    assert hasattr(fleet_pb2_grpc, "add_EnrolServicer_to_server")
