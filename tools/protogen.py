"""Generate the Python modules of proto/vpsmon/v1/*.proto beside them (`make proto`).

The generated modules are committed, so an exporter install needs no code generator;
tests/exporter/test_proto.py regenerates them into a temp dir and fails when they differ.
grpcio-tools is pinned in setup.cfg's [dev] extra so that the output is reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"


def sources() -> list[Path]:
    return sorted((PROTO / "vpsmon" / "v1").glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) into `out`; returns the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(PROTO)) for p in sources()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see above)")
    return sorted((out / "vpsmon" / "v1").glob("*_pb2*.py*"))


def main() -> int:
    written = generate(PROTO)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
