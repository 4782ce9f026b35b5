"""The exporter-side policy: which programs Exec may run and which directories the file
manager may touch, whatever the collector asks (DESIGN.md "Security model").

```yaml
# /etc/vpsmon/policy.yml
commands: [uptime, /usr/bin/systemctl, /usr/bin/docker]   # unset: any program
file_roots: [/srv/www, /var/log]                          # unset: run_as's home
```

Paths are checked after resolving symlinks and `..`, so a link pointing out of a root is
refused like a `../../etc/passwd`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpsmon.config import ConfigError, read_yaml


class PolicyError(PermissionError):
    """A request the policy refuses; the message says what and why (it goes to the caller)."""


class NoFileRoots(OSError):
    """No policy file_roots and the default root (run_as's home) does not exist: the file
    manager has nothing to show (FAILED_PRECONDITION, not "no such file")."""


@dataclass(frozen=True)
class Policy:
    # None: any program. Entries are names looked up in PATH or absolute paths.
    commands: tuple[str, ...] | None
    file_roots: tuple[Path, ...]
    # Set when file_roots is the default (run_as's home) rather than the policy file's.
    default_root: Path | None = None

    def program(self, argv0: str, path: str) -> str:
        """The absolute program argv[0] names (searched in `path`), if the policy allows it."""
        if not argv0:
            raise PolicyError("empty command")
        found = argv0 if "/" in argv0 else shutil.which(argv0, path=path)
        if found is None:
            raise FileNotFoundError(f"{argv0}: command not found")
        program = os.path.realpath(found)
        if self.commands is None:
            return found
        for entry in self.commands:
            allowed = entry if "/" in entry else shutil.which(entry, path=path)
            if allowed is not None and os.path.realpath(allowed) == program:
                return found
        raise PolicyError(f"{argv0}: not in the exporter's allowed commands")

    def path(self, requested: str, *, must_exist: bool = False) -> Path:
        """`requested` resolved, if it lies within a file root (the root itself included)."""
        if self.default_root is not None and not self.default_root.is_dir():
            raise NoFileRoots(
                "no file roots: set command.policy_file file_roots (or enrol with --file-root"
                f" PATH); the default, run_as's home {self.default_root}, does not exist"
            )
        if not requested or not requested.startswith("/"):
            raise PolicyError(f"{requested!r}: paths must be absolute")
        if "\x00" in requested:
            raise PolicyError("paths cannot contain NUL")
        # strict=False: a file about to be created does not exist yet; its parent is checked.
        resolved = Path(os.path.realpath(requested))
        # The roots first: whether something exists outside them is none of the caller's business.
        if not any(resolved == root or root in resolved.parents for root in self.file_roots):
            raise PolicyError(f"{requested}: outside the exporter's allowed file roots")
        if must_exist and not resolved.exists():
            raise FileNotFoundError(f"{requested}: no such file or directory")
        return resolved


def load_policy(path: Path | None, home: Path) -> Policy:
    """The policy file, or the default (any command, files under `home`)."""
    document: dict[str, Any] = read_yaml(path) if path is not None else {}
    unknown = sorted(set(document) - {"commands", "file_roots"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (expected commands, file_roots)")
    commands = document.get("commands")
    if commands is not None:
        commands = tuple(_strings(path, "commands", commands))
    roots_raw = document.get("file_roots")
    roots = _strings(path, "file_roots", roots_raw) if roots_raw is not None else [str(home)]
    file_roots = []
    for root in roots:
        if not root.startswith("/"):
            raise ConfigError(f"{path}: file_roots: {root!r} is not an absolute path")
        file_roots.append(Path(os.path.realpath(root)))
    default_root = file_roots[0] if roots_raw is None else None
    return Policy(commands, tuple(file_roots), default_root)


def _strings(path: Path | None, key: str, value: Any) -> Sequence[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: {key}: expected a list of strings")
    return value
