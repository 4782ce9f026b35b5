"""`vpsmon exporter enrol` run by root (as the add-server page says: "as the exporter's user
(or root)") for an exporter that runs as its own user (deploy/vpsmon-exporter.service:
User=vpsmon): what enrol makes in the exporter's state_dir must belong to the state_dir's owner,
or the restarted exporter cannot read its own key and the command channel never starts."""

from __future__ import annotations

import os
from pathlib import Path

from tests.collector.test_enrolment import (
    Collector,
    collector,  # noqa: F401  (a fixture, used by name)
    exporter_yml,
    make_command,
    run_enrol,
)
from tests.conftest import require

NOBODY = 65534


async def test_root_enrolling_a_non_root_exporter_leaves_its_state_dir_its_own(
    collector: Collector,  # noqa: F811
    tmp_path: Path,
) -> None:
    require(os.geteuid() == 0, "enrolling as root needs root")
    config = exporter_yml(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)  # install-exporter.sh: install -d -o vpsmon -g vpsmon
    os.chown(config, 0, NOBODY)
    config.chmod(0o640)  # root:vpsmon 0640, as install-exporter.sh writes it
    _, args = await make_command(collector, ["exec"])
    code, out, err = await run_enrol(config, args)
    assert code == 0, err
    made = sorted(p.name for p in state.iterdir())
    assert {"exporter.crt", "exporter.key", "enrolled-collector.crt"} <= set(made), made
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in state.iterdir()}
    assert set(owners.values()) == {(NOBODY, NOBODY)}, owners
    assert (config.stat().st_uid, config.stat().st_gid) == (0, NOBODY)
