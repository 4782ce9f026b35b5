"""Prometheus-compatible HTTP API under /api/v1 (issue #8), so Grafana's Prometheus data source,
promtool-style scripts and other Prometheus clients work against the collector.

Shapes and errors follow https://prometheus.io/docs/prometheus/latest/querying/api/:
``{"status": "success", "data": ...}`` or ``{"status": "error", "errorType": "bad_data",
"error": "..."}`` with HTTP 400 (bad_data), 422 (execution), 503 (timeout). Every endpoint takes
GET parameters or a POST form body, as Prometheus does.

Access: the request must be authenticated (session cookie, or an API token as
``Authorization: Bearer ...``); a user who may see only some servers queries only the series of
those servers (collector/promql/scope.py), and sees only their targets and rules.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from vpsmon import __version__
from vpsmon.collector.accounts import role_allows
from vpsmon.collector.promql import Engine, PromQLError, parse_expr, result_json
from vpsmon.collector.promql.importer import InvalidImport, parse_import
from vpsmon.collector.promql.labels import valid_label_name
from vpsmon.collector.promql.nodes import VectorSel
from vpsmon.collector.promql.scope import SeriesFinder, ServerScopedSource
from vpsmon.collector.storage.bulk import BulkSeries, append_series
from vpsmon.collector.storage.query import Matcher, SampleSource
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.web import access
from vpsmon.web.keys import CONFIG, POOL, SAMPLES

# The Prometheus version whose query semantics and API we follow (docs/promql.md).
PROMETHEUS_VERSION = "2.42.0"
# Prometheus refuses range queries with more points per series than this.
MAX_POINTS = 11_000
# Earliest and latest times for series/labels requests without start/end: all of them.
MIN_TIME = 0.0
MAX_TIME = 4_102_444_800.0  # 2100-01-01

VisibleServers = frozenset[int] | None  # None: every server


@dataclass(frozen=True)
class Principal:
    """Who is asking: their role and the servers whose series they may see."""

    username: str
    role: str  # admin, operator or viewer
    visible: VisibleServers


class AccessCheck(Protocol):
    """Authenticates a request (raising ApiError 401/403) and says who it is."""

    async def __call__(self, request: web.Request) -> Principal: ...


class TargetStatusLike(Protocol):
    """What /api/v1/targets shows of a target (the scrape stage's TargetStatus)."""

    server_id: int
    url: str
    labels: dict[str, str]
    health: str
    last_scrape: float | None
    last_duration: float | None
    last_error: str | None
    interval: float
    timeout: float


class TargetSource(Protocol):
    """The scrape stage's TargetStatusProvider, as far as /api/v1/targets needs it."""

    def target_status(self) -> Sequence[TargetStatusLike]: ...


class RulesView(Protocol):
    """What the rule manager shows through /api/v1/rules and /api/v1/alerts.

    Both return Prometheus' JSON objects (a rule group: name, file, rules, interval,
    lastEvaluation, evaluationTime; an alert: labels, annotations, state, activeAt, value),
    limited to what a user who sees ``visible`` servers may see (None: everything).
    """

    def rule_groups(self, visible: VisibleServers) -> list[dict[str, Any]]: ...

    def alerts(self, visible: VisibleServers) -> list[dict[str, Any]]: ...


SOURCE = web.AppKey("promql_source", SeriesFinder)
ACCESS = web.AppKey("promql_access", AccessCheck)
TARGETS = web.AppKey("promql_targets", TargetSource)
RULES = web.AppKey("promql_rules", RulesView)


def setup(app: web.Application, source: SeriesFinder | None = None) -> None:
    """Register /api/v1/*. ``source`` defaults to the app's storage reader (head + database)."""
    if source is None:
        source = app[SAMPLES] if SAMPLES in app else StorageReader(app[POOL])
    app[SOURCE] = source
    if ACCESS not in app:
        app[ACCESS] = session_access
    routes = [
        ("/api/v1/query", query),
        ("/api/v1/query_range", query_range),
        ("/api/v1/series", series),
        ("/api/v1/labels", labels),
        ("/api/v1/label/{name}/values", label_values),
        ("/api/v1/targets", targets),
        ("/api/v1/rules", rules),
        ("/api/v1/alerts", alerts),
        ("/api/v1/status/buildinfo", buildinfo),
        ("/api/v1/metadata", metadata),
        ("/api/v1/query_exemplars", exemplars),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler)
        app.router.add_post(path, handler)
    app.router.add_post("/api/v1/import/prometheus", import_prometheus)


async def session_access(request: web.Request) -> Principal:
    """The request's user (session or API token) and the servers they may see (issue #5)."""
    user = access.current_user(request)
    if user is None:
        raise ApiError("unauthorized", "login required (session or API token)")
    return Principal(user.username, user.role, await access.request_visible_ids(request))


class ApiError(Exception):
    STATUS = {
        "bad_data": 400,
        "execution": 422,
        "timeout": 503,
        "unauthorized": 401,
        "forbidden": 403,
        "too_large": 413,
    }

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or self.STATUS.get(error_type, 500)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def success(data: Any, warnings: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return _json(body)


def failure(err: ApiError) -> web.Response:
    return _json({"status": "error", "errorType": err.error_type, "error": err.message}, err.status)


Handler = Callable[[web.Request, MultiDict[str], Principal], Awaitable[web.Response]]


def _endpoint(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    return _endpoint_with(fn, form=True)


def _body_endpoint(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An endpoint whose POST body is data, not a form: parameters come from the URL only."""
    return _endpoint_with(fn, form=False)


def _endpoint_with(fn: Handler, form: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        try:
            principal = await request.app[ACCESS](request)
            params = await _params(request) if form else MultiDict(request.query)
            return await fn(request, params, principal)
        except ApiError as err:
            return failure(err)
        except PromQLError as err:
            kind = {"parse": "bad_data", "execution": "execution", "timeout": "timeout"}
            return failure(ApiError(kind[err.kind], str(err)))
        except ValueError as err:  # e.g. the reader refusing a selector matching too much
            return failure(ApiError("execution", str(err)))

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


async def _params(request: web.Request) -> MultiDict[str]:
    params: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST":
        if not request.content_type.endswith("x-www-form-urlencoded") and request.can_read_body:
            raise ApiError("bad_data", "POST bodies must be application/x-www-form-urlencoded")
        form: MultiDictProxy[Any] = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                params.add(key, value)
    return params


# --- parameter parsing, as Prometheus' web/api/v1 does it ------------------------------------

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_time(text: str, name: str) -> float:
    try:
        value = float(text)
        if math.isfinite(value):
            return round(value, 3)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            "bad_data", f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp'
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp(), 3)


def parse_duration(text: str, name: str) -> float:
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    match = _DURATION.match(text)
    if text and match and any(match.groups()):
        return sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)
    raise ApiError(
        "bad_data", f'invalid parameter "{name}": cannot parse "{text}" to a valid duration'
    )


def _matchers(params: Mapping[str, str] | MultiDict[str], required: bool) -> list[list[Matcher]]:
    assert isinstance(params, MultiDict)
    texts = params.getall("match[]", [])
    if required and not texts:
        raise ApiError("bad_data", "no match[] parameter provided")
    out = []
    for text in texts:
        try:
            node = parse_expr(text)
        except PromQLError as err:
            raise ApiError("bad_data", f'invalid parameter "match[]": {err}') from None
        if not isinstance(node, VectorSel) or node.offset or node.at is not None:
            raise ApiError(
                "bad_data", f'invalid parameter "match[]": {text} is not a series selector'
            )
        out.append(list(node.matchers))
    return out


def _time_range(params: MultiDict[str]) -> tuple[float, float]:
    start = parse_time(params["start"], "start") if params.get("start") else MIN_TIME
    end = parse_time(params["end"], "end") if params.get("end") else MAX_TIME
    if end < start:
        raise ApiError("bad_data", "end timestamp must not be before start time")
    return start, end


def _source(request: web.Request, visible: VisibleServers) -> SampleSource:
    inner = request.app[SOURCE]
    if visible is None:
        return inner
    return ServerScopedSource(inner, visible)


def _engine(request: web.Request, params: MultiDict[str], visible: VisibleServers) -> Engine:
    settings = request.app[CONFIG].promql
    timeout = settings.query_timeout
    if params.get("timeout"):
        timeout = min(timeout, parse_duration(params["timeout"], "timeout"))
    return Engine(
        _source(request, visible),
        lookback_delta=settings.lookback_delta,
        timeout=timeout,
        max_samples=settings.max_samples,
    )


# --- endpoints ----------------------------------------------------------------------------------


@_endpoint
async def query(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    expr = params.get("query")
    if not expr:
        raise ApiError("bad_data", 'invalid parameter "query": empty query')
    at = parse_time(params["time"], "time") if params.get("time") else round(time.time(), 3)
    value = await _engine(request, params, visible).instant_query(expr, at)
    return success(result_json(value))


@_endpoint
async def query_range(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    expr = params.get("query")
    if not expr:
        raise ApiError("bad_data", 'invalid parameter "query": empty query')
    for name in ("start", "end", "step"):
        if not params.get(name):
            raise ApiError("bad_data", f'invalid parameter "{name}": missing')
    start, end = parse_time(params["start"], "start"), parse_time(params["end"], "end")
    step = parse_duration(params["step"], "step")
    if end < start:
        raise ApiError("bad_data", "end timestamp must not be before start time")
    if step <= 0:
        raise ApiError(
            "bad_data",
            "zero or negative query resolution step widths are not accepted. "
            "Try a positive integer",
        )
    if (end - start) / step > MAX_POINTS:
        raise ApiError(
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)",
        )
    value = await _engine(request, params, visible).range_query(expr, start, end, step)
    return success(result_json(value))


@_endpoint
async def series(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    sets = _matchers(params, required=True)
    start, end = _time_range(params)
    source = _source(request, visible)
    found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for matchers in sets:
        for labels in await source.series(matchers, start, end):
            found[tuple(sorted(labels.items()))] = labels
    return success([found[k] for k in sorted(found)])


_ANY_SERIES = [Matcher("__name__", "=~", ".+")]


@_endpoint
async def labels(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    sets = _matchers(params, required=False) or [_ANY_SERIES]
    start, end = _time_range(params)
    source = _source(request, visible)
    names: set[str] = set()
    for matchers in sets:
        names.update(await source.label_names(matchers, start, end))
    return success(sorted(names))


@_endpoint
async def label_values(
    request: web.Request, params: MultiDict[str], who: Principal
) -> web.Response:
    visible = who.visible
    name = request.match_info["name"]
    if not valid_label_name(name):
        raise ApiError("bad_data", f"invalid label name: {name!r}")
    sets = _matchers(params, required=False) or [_ANY_SERIES]
    start, end = _time_range(params)
    source = _source(request, visible)
    values: set[str] = set()
    for matchers in sets:
        values.update(await source.label_values(name, matchers, start, end))
    return success(sorted(values))


def _rfc3339(ts: float | None) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _go_duration(seconds: float) -> str:
    if seconds % 60 == 0 and seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@_endpoint
async def targets(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    provider = request.app.get(TARGETS)
    state = params.get("state", "any")
    active = []
    for t in provider.target_status() if provider is not None else []:
        if visible is not None and t.server_id not in visible:
            continue
        job = t.labels.get("job", "")
        active.append(
            {
                "discoveredLabels": {"__address__": t.labels.get("instance", ""), "job": job},
                "labels": dict(t.labels),
                "scrapePool": job,
                "scrapeUrl": t.url,
                "globalUrl": t.url,
                "lastError": t.last_error or "",
                "lastScrape": _rfc3339(t.last_scrape),
                "lastScrapeDuration": t.last_duration or 0,
                "health": t.health,
                "scrapeInterval": _go_duration(t.interval),
                "scrapeTimeout": _go_duration(t.timeout),
            }
        )
    if state == "dropped":
        active = []
    return success({"activeTargets": active, "droppedTargets": []})


@_endpoint
async def rules(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    view = request.app.get(RULES)
    groups = view.rule_groups(visible) if view is not None else []
    kind = params.get("type")
    if kind not in (None, "", "alert", "record"):
        raise ApiError("bad_data", f'invalid parameter "type": {kind!r}')
    if kind:
        wanted = "alerting" if kind == "alert" else "recording"
        groups = [
            {**g, "rules": [r for r in g.get("rules", []) if r.get("type") == wanted]}
            for g in groups
        ]
    return success({"groups": groups})


@_endpoint
async def alerts(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    visible = who.visible
    view = request.app.get(RULES)
    return success({"alerts": view.alerts(visible) if view is not None else []})


@_endpoint
async def buildinfo(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    return success(
        {
            "version": PROMETHEUS_VERSION,
            "revision": f"vpsmon-{__version__}",
            "branch": "vpsmon",
            "buildUser": "vpsmon",
            "buildDate": "",
            "goVersion": "",
        }
    )


@_endpoint
async def metadata(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    # The collector does not keep HELP/TYPE metadata; Grafana copes with an empty answer.
    return success({})


@_endpoint
async def exemplars(request: web.Request, params: MultiDict[str], who: Principal) -> web.Response:
    return success([])


MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_IMPORT_SAMPLES = 2_000_000


async def _read_limited(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(1024 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ApiError("too_large", f"the body is larger than {limit} bytes; split the import")
        chunks.append(chunk)


@_body_endpoint
async def import_prometheus(
    request: web.Request, params: MultiDict[str], who: Principal
) -> web.Response:
    """Store exposition text with millisecond timestamps (backfill; docs/promql.md)."""
    if not role_allows(who.role, "operator"):
        raise ApiError("forbidden", "importing needs the operator or admin role")
    server_id: int | None = None
    if params.get("server"):
        try:
            server_id = int(params["server"])
        except ValueError:
            raise ApiError("bad_data", 'invalid parameter "server": a server id') from None
    if who.visible is not None and (server_id is None or server_id not in who.visible):
        raise ApiError(
            "forbidden", "give ?server=ID of a server you may see; its series are yours to import"
        )
    body = await _read_limited(request, MAX_IMPORT_BYTES)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("bad_data", "the body is not UTF-8 text") from None
    try:
        parsed = parse_import(text, max_samples=MAX_IMPORT_SAMPLES)
    except InvalidImport as err:
        raise ApiError("bad_data", str(err)) from None
    try:
        stored = await append_series(
            request.app[POOL],
            [BulkSeries(s.name, s.labels, s.timestamps, s.values) for s in parsed.series],
            server_id=server_id,
        )
    except ValueError as err:
        raise ApiError("bad_data", str(err)) from None
    await access.audit(
        request,
        "metrics.import",
        server_id=server_id,
        detail={"series": stored.series, "samples": parsed.samples, "stored": stored.samples},
    )
    return success({"series": stored.series, "samples": parsed.samples, "stored": stored.samples})
