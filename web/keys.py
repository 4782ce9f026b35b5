"""Typed application keys shared by the web handlers (STYLE.md: one module of AppKeys)."""

from __future__ import annotations

import weakref

import asyncpg
from aiohttp import web

from vpsmon.collector.config import CollectorConfig
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.head import Head
from vpsmon.collector.rules.api import RulesApi
from vpsmon.collector.storage.chart import ChartReader
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.writer import SampleWriter
from vpsmon.collector.traffic import TrafficAccountant
from vpsmon.web.auth import LoginLimiter
from vpsmon.web.live import LiveHub

POOL = web.AppKey("pool", asyncpg.Pool)
HEAD = web.AppKey("head", Head)
CONFIG = web.AppKey("config", CollectorConfig)
HUB = web.AppKey("hub", LiveHub)
LIMITER = web.AppKey("limiter", LoginLimiter)
TRAFFIC = web.AppKey("traffic", TrafficAccountant)
# Stored samples (head + database): the SampleSource for PromQL/API, and charts at ~1,000 points.
SAMPLES = web.AppKey("samples", StorageReader)
CHARTS = web.AppKey("charts", ChartReader)
WRITER = web.AppKey("writer", SampleWriter)  # set by the collector (collector/app.py)
# The rule manager's groups, rules and alerts (web/rules.py, /api/v1/rules, /api/v1/alerts).
RULES = web.AppKey("rules", RulesApi)
# Pooled, pinned gRPC channels to enrolled exporters, presenting the collector's identity
# (issue #7; web/command.py open_agent is how handlers use it).
AGENTS = web.AppKey("agents", AgentPool)
# The key file that opens agents.command_token (collector/fleet/tokenkey.py), read on first use.
TOKEN_KEY = web.AppKey("token_key", TokenKey)
# Open container log sockets (web/docker.py), closed on shutdown.
DOCKER_SOCKETS = web.AppKey("docker_sockets", weakref.WeakSet[web.WebSocketResponse])
