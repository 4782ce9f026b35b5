"""The file manager's operations, confined to the policy's file roots.

Blocking file system calls; the service runs them in a worker thread. Every path goes through
`Policy.path` first (absolute, symlinks and `..` resolved, inside a root). New files and
directories belong to the run-as user. Writes are atomic: data goes to a temporary file beside
the target, which is synced and renamed over it only when the stream ended complete.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vpsmon.exporter.command.identity import RunAs
from vpsmon.exporter.command.policy import Policy, PolicyError

READ_CHUNK = 256 * 1024
MAX_LIST = 10_000


@dataclass(frozen=True, slots=True)
class Info:
    path: str
    name: str
    type: str
    size: int
    mode: int
    modified: float
    owner: str
    group: str
    target: str


def describe(path: Path) -> Info:
    st = path.lstat()
    kind = (
        "dir"
        if stat.S_ISDIR(st.st_mode)
        else "file"
        if stat.S_ISREG(st.st_mode)
        else "symlink"
        if stat.S_ISLNK(st.st_mode)
        else "other"
    )
    target = os.readlink(path) if kind == "symlink" else ""
    return Info(
        str(path),
        path.name,
        kind,
        st.st_size,
        stat.S_IMODE(st.st_mode),
        st.st_mtime,
        _name(pwd.getpwuid, st.st_uid),
        _name(grp.getgrgid, st.st_gid),
        target,
    )


def _name(lookup: object, number: int) -> str:
    try:
        return str(lookup(number)[0])  # type: ignore[operator]
    except KeyError:
        return str(number)


class Files:
    def __init__(self, policy: Policy, run_as: RunAs) -> None:
        self.policy = policy
        self.run_as = run_as

    def _own(self, path: Path) -> None:
        # Root makes the file for the run-as user; as that user it is already theirs.
        if os.geteuid() == 0 and self.run_as.uid != 0:
            os.lchown(path, self.run_as.uid, self.run_as.gid)

    def stat(self, requested: str) -> Info:
        path = self.policy.path(requested, must_exist=True)
        return describe(path)

    def list(self, requested: str) -> tuple[list[Info], bool]:
        path = self.policy.path(requested, must_exist=True)
        if not path.is_dir():
            raise NotADirectoryError(f"{requested}: not a directory")
        entries: list[Info] = []
        with os.scandir(path) as scan:
            for entry in scan:
                if len(entries) >= MAX_LIST:
                    return entries, True
                with contextlib.suppress(FileNotFoundError):  # gone while listing
                    entries.append(describe(Path(entry.path)))
        entries.sort(key=lambda i: (i.type != "dir", i.name))
        return entries, False

    def read(self, requested: str, offset: int, length: int) -> Iterator[bytes]:
        path = self.policy.path(requested, must_exist=True)
        if not path.is_file():
            raise IsADirectoryError(f"{requested}: not a regular file")
        remaining = length or None
        with path.open("rb") as f:
            f.seek(offset)
            while remaining is None or remaining > 0:
                chunk = f.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def start_write(self, requested: str, mode: int, overwrite: bool) -> Upload:
        path = self.policy.path(requested)
        parent = path.parent
        if not parent.is_dir():
            raise FileNotFoundError(f"{parent}: no such directory")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{requested}: exists (set overwrite to replace it)")
        if path.is_dir():
            raise IsADirectoryError(f"{requested}: is a directory")
        keep_mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
        return Upload(self, path, Path(tmp), os.fdopen(fd, "wb"), keep_mode or mode or 0o644)

    def mkdir(self, requested: str, mode: int, parents: bool) -> Info:
        path = self.policy.path(requested)
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(mode=mode or 0o755, parents=parents)
        for made in missing:
            if made.exists():
                self._own(made)
        return describe(path)

    def rename(self, requested: str, new: str, overwrite: bool) -> Info:
        source = self.policy.path(requested, must_exist=True)
        target = self.policy.path(new)
        if target == source or source in target.parents:
            raise ValueError(f"{new}: cannot move a directory into itself")
        if source in self.policy.file_roots:
            raise PolicyError(f"{requested}: a file root cannot be moved")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{new}: exists (set overwrite to replace it)")
        os.replace(source, target) if overwrite else os.rename(source, target)
        return describe(target)

    def delete(self, requested: str, recursive: bool) -> None:
        # The parent is resolved and checked; the last component is not followed, so deleting
        # a symlink deletes the link, not what it points to. "." and ".." are refused: they
        # would name the parent or the grandparent, possibly outside the roots.
        stripped = requested.rstrip("/")
        name = os.path.basename(stripped)
        if name in ("", ".", ".."):
            raise PolicyError(f"{requested}: name the file or directory itself")
        parent = self.policy.path(os.path.dirname(stripped) or "/", must_exist=True)
        path = parent / name
        if path in self.policy.file_roots:
            raise PolicyError(f"{requested}: a file root cannot be deleted")
        if not path.is_symlink() and not path.exists():
            raise FileNotFoundError(f"{requested}: no such file or directory")
        if path.is_dir() and not path.is_symlink():
            if recursive:
                shutil.rmtree(path)
            else:
                path.rmdir()
        else:
            path.unlink()

    def chmod(self, requested: str, mode: int) -> Info:
        path = self.policy.path(requested, must_exist=True)
        if mode & ~0o7777:
            raise ValueError(f"mode {mode:o} has bits beyond 07777")
        path.chmod(mode)
        return describe(path)


class Upload:
    """A write in progress: `add` chunks, then `commit` (atomic) or `abort`."""

    def __init__(self, files: Files, path: Path, tmp: Path, f: object, mode: int) -> None:
        self.files = files
        self.path = path
        self.tmp = tmp
        self._file = f
        self.mode = mode
        self.size = 0
        self.digest = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self._file.write(data)  # type: ignore[attr-defined]
        self.size += len(data)
        self.digest.update(data)

    def commit(self, sha256: str, overwrite: bool) -> Info:
        try:
            if sha256 and sha256.lower() != self.digest.hexdigest():
                raise ValueError("the content does not match the sha256 given; nothing written")
            self._file.flush()  # type: ignore[attr-defined]
            os.fsync(self._file.fileno())  # type: ignore[attr-defined]
            self._file.close()  # type: ignore[attr-defined]
            os.chmod(self.tmp, self.mode)
            self.files._own(self.tmp)
            if overwrite:
                os.replace(self.tmp, self.path)
            else:
                os.link(self.tmp, self.path)  # fails if it appeared meanwhile: no clobbering
                os.unlink(self.tmp)
        except BaseException:
            self.abort()
            raise
        return describe(self.path)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()  # type: ignore[attr-defined]
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
