"""Run mypy over the vpsmon.* packages.

The import names (vpsmon.exporter, vpsmon.collector, ...) map onto the fixed top-level folders
through setup.cfg's package_dir, which mypy cannot follow in an editable install; so we lay a
tree of symlinks under build/typecheck that has the import layout, and check that.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        mapping[name] = folder
    tree = ROOT / "build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    for name, folder in sorted(mapping.items()):
        target = tree.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        # .pyi too: the generated gRPC modules (proto/vpsmon/v1) are typed by their stubs.
        for src in [*(ROOT / folder).glob("*.py"), *(ROOT / folder).glob("*.pyi")]:
            (target / src.name).symlink_to(src)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "-p",
        "vpsmon",
    ]
    return subprocess.call(cmd, cwd=tree)


if __name__ == "__main__":
    sys.exit(main())
