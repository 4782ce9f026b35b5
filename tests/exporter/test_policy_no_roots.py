"""A file manager without a policy file on a run_as user whose home does not exist (nobody's
/nonexistent): every file call says so clearly instead of "no such file" (issue #7
walk-through)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from vpsmon.exporter.command.files import Files as FileManager
from vpsmon.exporter.command.identity import RunAs
from vpsmon.exporter.command.policy import NoFileRoots, load_policy
from vpsmon.exporter.command.service import status_for


def run_as(home: Path) -> RunAs:
    return RunAs("nobody", os.geteuid(), os.getegid(), home, "/bin/sh")


def test_a_missing_default_root_says_set_file_roots(tmp_path: Path) -> None:
    home = tmp_path / "nonexistent"
    policy = load_policy(None, home)
    files = FileManager(policy, run_as(home))
    with pytest.raises(NoFileRoots, match=r"no file roots: set command.policy_file file_roots"):
        files.list(str(home))
    with pytest.raises(NoFileRoots, match=str(home)):
        policy.path("/etc/passwd")  # said before anything else, outside the roots too
    try:
        files.list("/")
    except NoFileRoots as err:
        assert status_for(err) == grpc.StatusCode.FAILED_PRECONDITION
    else:
        raise AssertionError("listed without a root")


def test_an_existing_default_root_and_a_policy_file_work_as_before(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.txt").write_text("a")
    entries, _ = FileManager(load_policy(None, home), run_as(home)).list(str(home))
    assert [e.name for e in entries] == ["a.txt"]
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(f"file_roots: [{home}]\n")
    explicit = load_policy(policy_file, tmp_path / "nonexistent")
    assert explicit.default_root is None and explicit.path(str(home / "a.txt"))
