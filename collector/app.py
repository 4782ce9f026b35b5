"""Builds the collector from its stages and runs it (STYLE.md: one place wires the stages).

scrape loop ──▶ head (live view) ──▶ web UI / WebSocket
            └─▶ writer ──▶ PostgreSQL
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncpg
import grpc
from aiohttp import web

from vpsmon.collector import accounts
from vpsmon.collector.config import CollectorConfig
from vpsmon.collector.fleet.identity import ensure_identity
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.collector.fleet.server import GrpcService, enrol_service, start_grpc_server
from vpsmon.collector.fleet.service import FleetService, add_fleet_service
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.head import Head
from vpsmon.collector.notify.service import NotifyService
from vpsmon.collector.promql import Engine
from vpsmon.collector.rules.api import InstanceIndex, RulesApi
from vpsmon.collector.rules.engine import engine_query, writer_append
from vpsmon.collector.rules.manager import RuleManager
from vpsmon.collector.rules.model import NotifyFunc
from vpsmon.collector.rules.store import AlertStore
from vpsmon.collector.scrape.backfill import HistoryBackfill
from vpsmon.collector.scrape.loop import Scraper, ScrapeResult
from vpsmon.collector.scrape.sources import TargetSources, last_stored
from vpsmon.collector.storage.db import connect_pool
from vpsmon.collector.storage.maintenance import Retention, ensure_partitions, run_maintenance
from vpsmon.collector.storage.migrate import migrate
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.spool import Spool
from vpsmon.collector.storage.timescale import prepare as prepare_layout
from vpsmon.collector.storage.writer import SampleWriter
from vpsmon.exporter.security import CertificatePaths
from vpsmon.web import promapi
from vpsmon.web.app import create_app
from vpsmon.web.keys import AGENTS, RULES, WRITER
from vpsmon.web.targets import TARGET_STATUS

log = logging.getLogger("vpsmon.collector")

TARGET_REFRESH_SECONDS = 5.0
# Scrapes queued in the writer above which backfill waits.
BACKFILL_PENDING_LIMIT = 2_000


@dataclass(frozen=True)
class Ready:
    """What a person needs to know once the collector serves: printed by the CLI."""

    url: str
    admin_password: str | None


async def serve_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror}") from None
    return runner


async def run_collector(
    config: CollectorConfig,
    database_url: str,
    stop: asyncio.Event,
    *,
    admin_password: str | None = None,
    on_ready: Callable[[Ready], None] = lambda ready: None,
) -> None:
    pool = await connect_pool(database_url)
    try:
        await migrate(pool)
        await prepare_layout(pool, config.storage_timescaledb, Retention.of(config))
        async with pool.acquire() as conn:  # this hour's partition before the first write
            await ensure_partitions(conn, time.time())
        created_password = await accounts.ensure_admin(pool, admin_password)
        head = Head(job=config.job, window=config.head_window)
        spool = Spool(config.data_dir / "spool", config.spool_max_bytes)
        writer = SampleWriter(pool, config.job, spool=spool)
        notify = NotifyService(pool, config)  # notify.submit is the rule manager's notify function
        sources = TargetSources(config)
        scraper = _scraper(config, pool, head, writer)
        scraper.sources = sources.status
        # Static and file targets get their server records before the first page is served.
        initial = await sources.targets(pool)
        builder_file = config.data_dir / "rules" / "builder.yml"
        samples = StorageReader(pool, recent=head.recent)
        rules = _rule_manager(config, samples, writer, notify.submit, builder_file)
        app = create_app(config, pool, head, notify=notify)
        app[WRITER] = writer
        app[TARGET_STATUS] = scraper
        servers_of_alerts = InstanceIndex()
        app[RULES] = app[promapi.RULES] = RulesApi(rules, servers_of_alerts, builder_file)
        # Prometheus' /api/v1/targets reads the same status. The cast: TargetStatus is frozen,
        # promapi's protocol declares plain (settable) attributes, which mypy tells apart.
        app[promapi.TARGETS] = cast(promapi.TargetSource, scraper)
        runner = await serve_site(app, config.listen.host, config.listen.port)
        grpc_server = await _start_grpc(config, pool, app[AGENTS])
        try:
            async with notify.running(head), scraper:
                await scraper.sync(initial)
                tasks = [
                    asyncio.create_task(writer.run(), name="writer"),
                    asyncio.create_task(
                        run_maintenance(pool, Retention.of(config)), name="storage maintenance"
                    ),
                    asyncio.create_task(_refresh_targets(pool, scraper, sources), name="targets"),
                    asyncio.create_task(rules.run(stop), name="rules"),
                    asyncio.create_task(
                        _index_instances(scraper, servers_of_alerts, config.job), name="index"
                    ),
                ]
                _on_sighup(rules.request_reload)
                host = config.listen.host
                shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
                shown = f"[{shown}]" if ":" in shown else shown
                on_ready(Ready(f"http://{shown}:{config.listen.port}/", created_password))
                await stop.wait()
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            # Scrapes already taken are written before we go.
            if not await writer.flush():
                log.warning(
                    "database away at exit: queued scrapes kept in the spool for the next start"
                    " spool_bytes=%d",
                    spool.size,
                )
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2)
            await runner.cleanup()
    finally:
        await pool.close()


def _grpc_services(
    config: CollectorConfig, pool: asyncpg.Pool, identity: CertificatePaths, agents: AgentPool
) -> list[GrpcService]:
    """The services on the collector's gRPC port (grpc.listen). Add yours here: a callable
    that registers your servicer, e.g. `lambda server: add_XServicer_to_server(X(...), server)`."""
    token_key = TokenKey.in_data_dir(config.data_dir)
    fleet = FleetService(
        pool,
        agents,
        token_key,
        concurrency=config.fleet_exec_concurrency,
        exec_timeout=config.fleet_exec_timeout,
        max_recording_bytes=config.terminal_recording_max_bytes,
    )
    return [
        enrol_service(pool, identity, token_key),
        lambda server: add_fleet_service(server, fleet),
    ]


async def _start_grpc(
    config: CollectorConfig, pool: asyncpg.Pool, agents: AgentPool
) -> grpc.aio.Server | None:
    """The gRPC port, or None when it cannot start: monitoring and the web UI go on without
    enrolment and fleet commands (the error is logged and shown in the add-server dialog)."""
    try:
        identity = await asyncio.to_thread(ensure_identity, config.data_dir)
        return await start_grpc_server(
            config.grpc_listen, identity, _grpc_services(config, pool, identity, agents)
        )
    except OSError as err:
        log.error(
            "collector gRPC port not started: enrolment and fleet commands are off"
            " address=%s error=%s",
            config.grpc_listen,
            err,
        )
        return None


def _rule_manager(
    config: CollectorConfig,
    samples: StorageReader,
    writer: SampleWriter,
    notify: NotifyFunc,
    builder_file: Path,
) -> RuleManager:
    listen = config.listen
    host = "127.0.0.1" if listen.host in {"0.0.0.0", ""} else listen.host
    host = f"[{host}]" if ":" in host else host
    return RuleManager(
        [*config.rule_files, str(builder_file)],
        # The selector cache lets rules of one evaluation that read the same series fetch them
        # once (docs/benchmarks.md); the head answers the recent window without the database.
        query=engine_query(
            Engine(
                samples,
                config.promql.lookback_delta,
                default_subquery_step=config.rule_interval,
                timeout=config.promql.query_timeout,
                max_samples=config.promql.max_samples,
                selector_cache_ttl=5.0,
            )
        ),
        append=writer_append(writer),
        notify=notify,
        store=AlertStore(samples.pool),
        default_interval=config.rule_interval,
        external_labels=config.external_labels,
        external_url=config.external_url or f"http://{host}:{listen.port}/",
    )


async def _index_instances(scraper: Scraper, index: InstanceIndex, job: str) -> None:
    """Keep the instance -> server map that limits which alerts a user sees."""
    while True:
        with contextlib.suppress(Exception):
            index.update(
                (dict(t.target_labels(job)).get("instance", ""), t.server_id)
                for t in scraper.targets
            )
        await asyncio.sleep(TARGET_REFRESH_SECONDS)


def _on_sighup(reload: Callable[[], None]) -> None:
    """SIGHUP reloads the rule files, as it does for Prometheus (main thread only)."""
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _scraper(
    config: CollectorConfig, pool: asyncpg.Pool, head: Head, writer: SampleWriter
) -> Scraper:
    async def store_backfilled(result: ScrapeResult) -> None:
        await writer.append(result)

    async def let_writer_drain() -> None:
        # Backfill must not outrun the writer: a restart of a big fleet would queue hours.
        while writer.pending > BACKFILL_PENDING_LIMIT:  # noqa: ASYNC110 (polls a counter)
            await asyncio.sleep(0.5)

    backfill = HistoryBackfill(
        store_backfilled,
        lambda server_id: last_stored(pool, server_id),
        max_gap=config.backfill_max,
        body_size_limit=config.body_size_limit,
        pause=let_writer_drain,
    )
    return Scraper(
        [head.append, writer.append],
        # Backfilled samples and end markers go to the head window too: queries inside the
        # window read only the head.
        on_store=[head.append, writer.append],
        body_size_limit=config.body_size_limit,
        sample_limit=config.sample_limit,
        backfill=backfill if config.backfill else None,
        job=config.job,
    )


async def _refresh_targets(pool: asyncpg.Pool, scraper: Scraper, sources: TargetSources) -> None:
    while True:
        await asyncio.sleep(TARGET_REFRESH_SECONDS)
        try:
            await scraper.sync(await sources.targets(pool))
        except Exception as err:  # database away: keep scraping the targets we know
            log.warning("cannot refresh targets error=%s", err)
