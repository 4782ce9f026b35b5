"""The rule manager: loads rule files, runs each group at its interval, reloads on change.

Reload happens when a rule file changes (polled: globs re-expanded, modification time and
size compared) and on `request_reload()`, which the collector calls on SIGHUP. A file that
fails to load keeps its previous groups running; its errors are kept for the UI and the
API until it loads again. Groups that did not change keep running untouched; changed groups
take over the alerts and health of the rules they replace (matched by name and labels, as
Prometheus does); removed groups write staleness markers for their series and forget their
saved alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vpsmon.collector.rules.group import DEFAULT_RESEND_DELAY, RuleGroup
from vpsmon.collector.rules.model import AppendFunc, NotifyFunc, QueryFunc
from vpsmon.collector.rules.rulefile import ExprCheck, GroupSpec, RuleFileError, load_rule_file
from vpsmon.collector.rules.store import AlertStore

log = logging.getLogger("vpsmon.rules")


def expand_patterns(patterns: Sequence[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        # Every entry is a glob, as Prometheus' rule_files: a missing file is no error.
        for path in sorted(glob.glob(pattern)):
            if path not in files:
                files.append(path)
    return files


def eval_offset(key: str, interval: float) -> float:
    """A stable offset within the interval per group, so groups do not all run at once."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return (digest % max(1, int(interval * 1000))) / 1000


def next_evaluation(now: float, interval: float, offset: float) -> float:
    """The first aligned evaluation time after ``now``."""
    base = (now - offset) // interval * interval + offset
    return base + interval


@dataclass
class FileState:
    path: str
    errors: list[str] = field(default_factory=list)
    loaded_at: float | None = None
    groups: list[str] = field(default_factory=list)  # group keys


class RuleManager:
    def __init__(
        self,
        patterns: Sequence[str],
        *,
        query: QueryFunc,
        append: AppendFunc,
        notify: NotifyFunc,
        store: AlertStore | None = None,
        default_interval: float = 60.0,
        external_labels: Mapping[str, str] | None = None,
        external_url: str = "",
        resend_delay: float = DEFAULT_RESEND_DELAY,
        watch_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        check_expr: ExprCheck | None = None,
    ) -> None:
        self.patterns = list(patterns)
        self.query = query
        self.append = append
        self.notify = notify
        self.store = store
        self.default_interval = default_interval
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.resend_delay = resend_delay
        self.watch_interval = watch_interval
        self.clock = clock
        self.check_expr = check_expr
        self.groups: dict[str, RuleGroup] = {}
        self.files: dict[str, FileState] = {}
        self.last_reload: float | None = None
        self.last_reload_ok = True
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._reload = asyncio.Event()
        self._lock = asyncio.Lock()
        self._running = False

    # -- loading
    def _file_signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in expand_patterns(self.patterns):
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((path, -1, -1))
        return tuple(out)

    def _new_group(self, spec: GroupSpec) -> RuleGroup:
        return RuleGroup(
            spec,
            query=self.query,
            append=self.append,
            notify=self.notify,
            default_interval=self.default_interval,
            external_labels=self.external_labels,
            external_url=self.external_url,
            resend_delay=self.resend_delay,
        )

    async def reload(self) -> bool:
        """Read the rule files again and apply what loaded; False when any file failed."""
        async with self._lock:
            return await self._reload_locked()

    async def _reload_locked(self) -> bool:
        now = self.clock()
        self._signature = self._file_signature()
        paths = [p for p, _, _ in self._signature]
        wanted: dict[str, RuleGroup] = {}
        files: dict[str, FileState] = {}
        ok = True
        for path in paths:
            state = FileState(path)
            try:
                rule_file = load_rule_file(path, self.check_expr)
            except RuleFileError as err:
                ok = False
                state.errors = err.errors
                previous = self.files.get(path)
                state.groups = previous.groups if previous else []
                state.loaded_at = previous.loaded_at if previous else None
                for key in state.groups:  # the old rules keep running
                    if key in self.groups:
                        wanted[key] = self.groups[key]
                log.error(
                    "cannot load rule file, keeping its previous rules file=%s errors=%d first=%s",
                    path,
                    len(err.errors),
                    err.errors[0],
                )
                files[path] = state
                continue
            state.loaded_at = now
            for spec in rule_file.groups:
                old = self.groups.get(spec.key)
                if old is not None and old.spec == spec:
                    wanted[spec.key] = old
                else:
                    group = self._new_group(spec)
                    if old is not None:
                        group.copy_state(old)
                    wanted[spec.key] = group
                state.groups.append(spec.key)
            files[path] = state
        removed = [key for key in self.groups if key not in wanted]
        for key in removed:
            await self._stop_group(key)
            gone = self.groups[key]
            markers = gone.stale_markers(now)
            if markers:
                with contextlib.suppress(Exception):
                    await self.append(markers)
            if self.store is not None:
                with contextlib.suppress(Exception):
                    await self.store.forget(key)
        replaced = [k for k, g in wanted.items() if k in self.groups and self.groups[k] is not g]
        for key in replaced:
            await self._stop_group(key)
        fresh = [k for k in wanted if k not in self.groups]
        self.groups = wanted
        self.files = files
        self.last_reload = now
        self.last_reload_ok = ok
        if self._running:
            for key in replaced:
                self._start_group(key, restore=False)
            for key in fresh:
                self._start_group(key, restore=True)
        log.info(
            "rules loaded files=%d groups=%d rules=%d ok=%s",
            len(files),
            len(wanted),
            sum(len(g.rules) for g in wanted.values()),
            ok,
        )
        return ok

    def request_reload(self) -> None:
        """Ask for a reload (SIGHUP); the running manager does it promptly."""
        self._reload.set()

    # -- running
    def _start_group(self, key: str, restore: bool) -> None:
        group = self.groups[key]
        self._tasks[key] = asyncio.create_task(self._run_group(group, restore), name=f"rules {key}")

    async def _stop_group(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_group(self, group: RuleGroup, restore: bool) -> None:
        if restore and self.store is not None:
            try:
                await self.store.restore(group, self.clock())
            except Exception as err:  # no database: start with no saved states
                log.warning("cannot restore alert states group=%s error=%s", group.name, err)
                for rule in group.alerting_rules():
                    rule.restored = True
        else:
            for rule in group.alerting_rules():
                rule.restored = True
        offset = eval_offset(group.key, group.interval)
        while True:
            due = next_evaluation(self.clock(), group.interval, offset)
            await asyncio.sleep(max(0.0, due - self.clock()))
            await self.evaluate_group(group, due)

    async def evaluate_group(self, group: RuleGroup, ts: float) -> None:
        try:
            await group.evaluate(ts)
        except Exception:  # the loop must survive any surprise
            log.exception("group evaluation failed group=%s", group.name)
        if self.store is not None:
            try:
                await self.store.save(group)
            except Exception as err:
                log.warning("cannot save alert states group=%s error=%s", group.name, err)

    async def run(self, stop: asyncio.Event) -> None:
        """Load, run every group, and reload on file changes or requests until ``stop``."""
        await self.reload()
        self._running = True
        try:
            for key in list(self.groups):
                self._start_group(key, restore=True)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reload.wait(), self.watch_interval)
                if stop.is_set():
                    break
                if self._reload.is_set() or self._file_signature() != self._signature:
                    self._reload.clear()
                    await self.reload()
        finally:
            self._running = False
            for key in list(self._tasks):
                await self._stop_group(key)

    # -- reading
    def sorted_groups(self) -> list[RuleGroup]:
        return sorted(self.groups.values(), key=lambda g: (g.file, g.name))

    def errors(self) -> dict[str, list[str]]:
        return {path: state.errors for path, state in self.files.items() if state.errors}
