"""Adapters between the rules and the other stages: the PromQL engine and the storage writer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from vpsmon.collector.promql import Engine, PromQLError, Scalar, Vector
from vpsmon.collector.rules.model import (
    AppendFunc,
    NotifyFunc,
    OutputSample,
    QueryError,
    QueryFunc,
    Sample,
    VectorSample,
)

log = logging.getLogger("vpsmon.rules")


def engine_query(engine: Engine) -> QueryFunc:
    """Prometheus' EngineQueryFunc: an instant query whose result must be a vector or scalar."""

    async def query(expr: str, t: float) -> Sequence[VectorSample]:
        try:
            value = await engine.instant_query(expr, t)
        except PromQLError as err:
            raise QueryError(str(err)) from None
        if isinstance(value, Vector):
            # The engine's samples as they are: the rules only read them (an alert storm
            # returns ~100,000 of them per cycle, issue #8).
            return value.samples
        if isinstance(value, Scalar):
            return [Sample({}, value.value)]
        raise QueryError("rule result is not a vector or scalar")

    return query


class SeriesWriter(Protocol):
    async def append_series(self, samples: Any) -> None: ...


def writer_append(writer: SeriesWriter) -> AppendFunc:
    """Rule outputs into the storage writer's series entry point."""

    async def append(samples: list[OutputSample]) -> None:
        await writer.append_series(
            (
                s.labels["__name__"],
                # The key is the sorted labels already (alerting and recording outputs carry
                # it): no sort per series per cycle (issue #8).
                tuple(sorted((k, v) for k, v in s.labels.items() if k != "__name__"))
                if s.key is None
                else tuple([p for p in s.key if p[0] != "__name__"]),
                s.timestamp,
                s.value,
            )
            for s in samples
        )

    return append


def logging_notify() -> NotifyFunc:
    """Until a notify stage is wired in: alerts are logged, one line each."""

    async def notify(alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            log.info(
                "alert alertname=%s labels=%s endsAt=%s",
                alert["labels"].get("alertname"),
                alert["labels"],
                alert.get("endsAt"),
            )

    return notify
