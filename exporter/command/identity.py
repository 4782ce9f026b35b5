"""Who commands run as: the configured unprivileged user (command.run_as)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from vpsmon.config import ConfigError

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    home: Path
    shell: str

    @property
    def switch(self) -> bool:
        """Whether starting a process must change user (we are someone else)."""
        return os.geteuid() != self.uid

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A small, predictable environment; the exporter's own is not passed on."""
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": self.shell,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        env.update(extra or {})
        return env

    def process_options(self) -> dict[str, object]:
        """subprocess/asyncio keyword arguments that start a process as this user."""
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": _groups(self.name, self.gid)}


def _groups(name: str, gid: int) -> list[int]:
    try:
        return os.getgrouplist(name, gid)
    except OSError:
        return [gid]


def resolve_run_as(configured: str | None) -> RunAs:
    """command.run_as, or the exporter's own user, which must not be root unless said so."""
    try:
        entry = pwd.getpwnam(configured) if configured else pwd.getpwuid(os.geteuid())
    except KeyError:
        raise ConfigError(f"command.run_as: no user named {configured!r}") from None
    if configured is None and entry.pw_uid == 0:
        raise ConfigError(
            "command.run_as is not set and the exporter runs as root: set it to an unprivileged"
            " user (or to root, to run commands as root on purpose)"
        )
    if configured is not None and entry.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise ConfigError(
            f"command.run_as: the exporter runs as uid {os.geteuid()} and cannot switch to"
            f" {configured!r}; run it as root or as that user"
        )
    shell = entry.pw_shell if entry.pw_shell and os.path.exists(entry.pw_shell) else "/bin/sh"
    if shell.endswith(("nologin", "/false")):
        shell = "/bin/sh"
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), shell)
