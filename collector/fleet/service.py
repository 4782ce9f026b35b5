"""The Fleet gRPC service on the collector's gRPC port (proto/vpsmon/v1/fleet_service.proto).

Every call, before anything runs:
1. the `authorization: Bearer vpsmon_…` metadata must be an active API token
   (collector/tokens.py) of an enabled user, else UNAUTHENTICATED; the call acts as that user;
2. Exec and Pty need the operator role (PERMISSION_DENIED for viewers, audited);
3. the target or group is resolved among the servers the user may reach (collector/fleet/
   fanout.py): a server not granted is NOT_FOUND like one that does not exist, and of a
   group only the granted servers run (the others are counted, never named);
4. per server, the enrolment record must exist and enable the feature.
Then each server's run is written to the audit log (`exec` / `pty.open` before it starts,
`exec.end` / `pty.close` with the outcome after), and bridged to that exporter's Agent
service through the collector's pooled, pinned connections (collector/fleet/pool.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from vpsmon.collector import audit, tokens
from vpsmon.collector.access import can_see_server
from vpsmon.collector.accounts import User, role_allows
from vpsmon.collector.fleet import fanout, recordings
from vpsmon.collector.fleet.agents import AgentRecord, agent_target, list_agents
from vpsmon.collector.fleet.fanout import (
    Emit,
    JobError,
    Outcome,
    Output,
    Plan,
    Selector,
    SelectorError,
    Server,
)
from vpsmon.collector.fleet.pool import AgentPool, AgentTarget, PinMismatch
from vpsmon.collector.fleet.server import peer_host
from vpsmon.collector.fleet.tokenkey import TokenKey, TokenKeyError
from vpsmon.exporter.security import RefusalLog
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.v1 import fleet_service_pb2 as fpb
from vpsmon.v1 import fleet_service_pb2_grpc

log = logging.getLogger("vpsmon.collector.fleet")

# Added to a command's own timeout for the call's deadline: the exporter kills the command at
# its timeout and reports it; the deadline only catches an exporter that stops answering.
DEADLINE_GRACE_SECONDS = 15.0
# A terminal re-reads its user's token, role and access this often; it closes when one is gone.
RECHECK_SECONDS = 30.0
# Terminal recordings are stored about this often while the session runs.
FLUSH_SECONDS = 1.0
DEFAULT_ROWS, DEFAULT_COLS = 24, 80
MAX_ARGV_BYTES = 64 * 1024
MAX_TIMEOUT_SECONDS = 7 * 86400.0
# Standard input is sent whole to every server (one message each): keep it small.
MAX_STDIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Caller:
    user: User
    token_id: int
    token: str
    address: str


def bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def selector_of(message: fpb.FleetSelector) -> Selector:
    kind = message.WhichOneof("kind")
    if kind == "target":
        return Selector(target=message.target)
    if kind == "group":
        return Selector(group=message.group)
    raise SelectorError("name one target (a server name or id) or one group")


def server_message(server: Server) -> fpb.FleetServer:
    return fpb.FleetServer(id=server.id, name=server.name)


def plan_message(plan: Plan) -> fpb.FleetPlan:
    return fpb.FleetPlan(
        servers=[server_message(s) for s in plan.servers], not_granted=plan.not_granted
    )


def result_message(outcome: Outcome) -> fpb.FleetServerResult:
    result = fpb.FleetServerResult(
        server=server_message(outcome.server),
        error=outcome.error,
        error_code=outcome.error_code,
        duration_seconds=outcome.duration,
    )
    if outcome.exit_code is not None:
        result.exit.CopyFrom(
            pb.ExitStatus(
                code=outcome.exit_code, signal=outcome.signal, timed_out=outcome.timed_out
            )
        )
    return result


class FleetService(fleet_service_pb2_grpc.FleetServicer):
    def __init__(
        self,
        db: asyncpg.Pool,
        agents: AgentPool,
        token_key: TokenKey,
        *,
        concurrency: int = 50,
        exec_timeout: float = 600.0,
        recheck_seconds: float = RECHECK_SECONDS,
        max_recording_bytes: int = recordings.DEFAULT_MAX_BYTES,
    ) -> None:
        self.db = db
        self.agents = agents
        self.token_key = token_key
        self.concurrency = concurrency
        self.exec_timeout = exec_timeout
        self.recheck_seconds = recheck_seconds
        self.max_recording_bytes = max_recording_bytes
        self._refusals = RefusalLog()

    # ---------------------------------------------------------------- checks

    async def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        token = bearer(context)
        found = await tokens.authenticate_token(self.db, token) if token else None
        if found is None:
            # Logged at most once a minute per address: a loop with a bad token cannot flood.
            if self._refusals.should_log(peer_host(context.peer()) or "?", time.monotonic()):
                log.warning("fleet call refused peer=%s reason=bad token", context.peer())
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid API token is required (authorization: Bearer vpsmon_…)",
            )
        assert found is not None  # abort() raised otherwise
        return Caller(found[0], found[1], token, peer_host(context.peer()) or context.peer())

    async def _audit(
        self,
        caller: Caller,
        action: str,
        server_id: int | None = None,
        *,
        success: bool = True,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await audit.record(
            self.db,
            action,
            user=caller.user,
            server_id=server_id,
            address=caller.address,
            success=success,
            detail={**(detail or {}), "via": "grpc", "api_token_id": caller.token_id},
        )

    async def _require_operator(
        self, context: grpc.aio.ServicerContext, caller: Caller, action: str, detail: dict[str, Any]
    ) -> None:
        if role_allows(caller.user.role, "operator"):
            return
        await self._audit(
            caller, action, success=False, detail={**detail, "error": "needs the operator role"}
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{action} needs the operator role")

    async def _resolve(
        self,
        context: grpc.aio.ServicerContext,
        caller: Caller,
        selector: fpb.FleetSelector,
        action: str | None,
        detail: dict[str, Any],
    ) -> Plan:
        error: SelectorError
        try:
            return await fanout.resolve(self.db, caller.user, selector_of(selector))
        except SelectorError as err:
            error = err
        if action is not None:
            await self._audit(caller, action, success=False, detail={**detail, "error": str(error)})
        code = (
            grpc.StatusCode.NOT_FOUND
            if isinstance(error, fanout.TargetNotFound)
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        await context.abort(code, str(error))
        raise AssertionError("unreachable")  # abort() raises

    # ---------------------------------------------------------------- WhoAmI, Resolve

    async def WhoAmI(
        self, request: fpb.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> fpb.WhoAmIResponse:
        caller = await self._caller(context)
        return fpb.WhoAmIResponse(username=caller.user.username, role=caller.user.role)

    async def Resolve(
        self, request: fpb.FleetSelector, context: grpc.aio.ServicerContext
    ) -> fpb.FleetPlan:
        caller = await self._caller(context)
        return plan_message(await self._resolve(context, caller, request, None, {}))

    # ---------------------------------------------------------------- Exec

    async def Exec(
        self, request: fpb.FleetExecRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fpb.FleetExecEvent]:
        caller = await self._caller(context)
        argv = list(request.exec.argv)
        detail: dict[str, Any] = {"argv": argv, "target": _describe(request.selector)}
        if request.exec.cwd:
            detail["cwd"] = request.exec.cwd
        await self._require_operator(context, caller, "exec", detail)
        if not argv or not argv[0]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no command given")
        if sum(len(a.encode()) for a in argv) > MAX_ARGV_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the command line is too long")
        if len(request.exec.stdin) > MAX_STDIN_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"standard input is at most {MAX_STDIN_BYTES // 1024} KiB",
            )
        if not 0 <= request.exec.timeout_seconds <= MAX_TIMEOUT_SECONDS:  # NaN fails too
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the timeout is between 0 (the default) and {MAX_TIMEOUT_SECONDS:g} seconds",
            )
        plan = await self._resolve(context, caller, request.selector, "exec", detail)
        detail["run"] = secrets.token_hex(8)  # ties the entries of one fan-out together
        if plan.group is not None:
            detail["group"] = plan.group
            detail["not_granted"] = plan.not_granted
        concurrency = min(request.concurrency or self.concurrency, self.concurrency)
        timeout = request.exec.timeout_seconds or self.exec_timeout
        command = pb.ExecRequest()
        command.CopyFrom(request.exec)
        command.timeout_seconds = timeout
        log.info(
            "fleet exec user=%s target=%r servers=%d not_granted=%d argv=%r",
            caller.user.username,
            detail["target"],
            len(plan.servers),
            plan.not_granted,
            argv,
        )

        # One query for the whole fleet's enrolments, after the access filter (plan).
        try:
            agents = await list_agents(self.db, self.token_key, [s.id for s in plan.servers])
        except TokenKeyError as err:  # the key file was lost or replaced: say which file
            log.error("fleet exec: %s", err)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        records = {r.server_id: r for r in agents}

        begun: set[int] = set()
        ended: set[int] = set()

        async def job(server: Server, emit: Emit) -> Outcome:
            await self._audit(caller, "exec", server.id, detail=detail)
            begun.add(server.id)
            return await self._exec_one(server, records.get(server.id), command, timeout, emit)

        yield fpb.FleetExecEvent(plan=plan_message(plan))
        started = time.monotonic()
        outcomes: list[Outcome] = []
        try:
            async for event in fanout.fan_out(
                plan.servers,
                job,
                concurrency=concurrency,
                # The exporter ends the command at `timeout`; this catches a silent exporter.
                server_timeout=timeout + DEADLINE_GRACE_SECONDS,
            ):
                if isinstance(event, Output):
                    output = fpb.FleetOutput(server_id=event.server.id)
                    setattr(output, event.stream, event.data)
                    yield fpb.FleetExecEvent(output=output)
                    continue
                outcomes.append(event)
                ended.add(event.server.id)
                await self._audit(
                    caller,
                    "exec.end",
                    event.server.id,
                    success=event.ok,
                    detail={"run": detail["run"], **_outcome_detail(event)},
                )
                yield fpb.FleetExecEvent(result=result_message(event))
        finally:
            # The client went away: the commands still running were cancelled (the exporters
            # kill them); their entries say so, so none is left without an end.
            cut = sorted(begun - ended)
            if cut:
                await asyncio.shield(self._audit_cut(caller, detail["run"], cut))
        summary = fanout.summarize(outcomes, plan.not_granted, time.monotonic() - started)
        yield fpb.FleetExecEvent(
            summary=fpb.FleetSummary(
                servers=summary.servers,
                succeeded=summary.succeeded,
                failed=summary.failed,
                errors=summary.errors,
                not_granted=summary.not_granted,
                duration_seconds=summary.duration,
            )
        )

    async def _audit_cut(self, caller: Caller, run: str, server_ids: list[int]) -> None:
        for server_id in server_ids:
            await self._audit(
                caller,
                "exec.end",
                server_id,
                success=False,
                detail={"run": run, "error": "cancelled: the client went away"},
            )

    @staticmethod
    def _agent(server: Server, record: AgentRecord | None, feature: str) -> AgentTarget:
        """The enrolment's target if it enables `feature`, else JobError saying why not."""
        if record is None:
            raise JobError("NOT_ENROLLED", "not enrolled for commands (add it with management)")
        if feature not in record.features:
            raise JobError(
                "FEATURE_DISABLED", f"{feature} is not enabled for this server (command.{feature})"
            )
        return record.target

    async def _exec_one(
        self,
        server: Server,
        record: AgentRecord | None,
        command: pb.ExecRequest,
        limit: float,
        emit: Emit,
    ) -> Outcome:
        target = self._agent(server, record, "exec")
        call = None
        try:
            call = self.agents.stub(target).Exec(
                command,
                metadata=self.agents.metadata(target),
                timeout=limit + DEADLINE_GRACE_SECONDS,
            )
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "exit":
                    status = message.exit
                    return Outcome(
                        server,
                        exit_code=status.code,
                        signal=status.signal,
                        timed_out=status.timed_out,
                    )
                if kind in {"stdout", "stderr"}:
                    await emit(kind, getattr(message, kind))
        except grpc.aio.AioRpcError as err:
            raise JobError(err.code().name, err.details() or err.code().name) from None
        except PinMismatch as err:
            raise JobError("PIN_MISMATCH", str(err)) from None
        finally:
            if call is not None:
                call.cancel()  # cut off (deadline, client gone): the exporter kills the command
        raise JobError("UNKNOWN", "the exporter ended the command without an exit status")

    # ---------------------------------------------------------------- Pty

    async def Pty(
        self,
        request_iterator: AsyncIterator[fpb.FleetPtyClientMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.PtyServerMessage]:
        caller = await self._caller(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("kind") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be open")
        assert first is not None
        opening = first.open
        detail: dict[str, Any] = {"target": opening.target, "argv": list(opening.start.argv)}
        await self._require_operator(context, caller, "pty.open", detail)
        plan = await self._resolve(
            context, caller, fpb.FleetSelector(target=opening.target), "pty.open", detail
        )
        if plan.group is not None or len(plan.servers) != 1:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a terminal opens on one server, not a group"
            )
        (server,) = plan.servers
        try:
            record = await agent_target(self.db, server.id, self.token_key)
        except TokenKeyError as err:
            log.error("pty open: %s", err)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        try:
            target = self._agent(server, record, "pty")
        except JobError as err:
            await self._audit(
                caller, "pty.open", server.id, success=False, detail={**detail, "error": str(err)}
            )
            code = (
                grpc.StatusCode.FAILED_PRECONDITION
                if err.code == "NOT_ENROLLED"
                else grpc.StatusCode.PERMISSION_DENIED
            )
            await context.abort(code, f"{server.name}: {err}")
            raise AssertionError("unreachable") from None
        detail["session"] = secrets.token_hex(8)
        bridge = TerminalBridge(self, caller, server, target, opening.start, detail)
        async for message in bridge.run(request_iterator, context):
            yield message


def _describe(selector: fpb.FleetSelector) -> str:
    kind = selector.WhichOneof("kind")
    if kind == "group":
        return f"group:{selector.group}"
    return selector.target if kind == "target" else ""


def _outcome_detail(outcome: Outcome) -> dict[str, Any]:
    detail: dict[str, Any] = {"duration_seconds": round(outcome.duration, 3)}
    if outcome.exit_code is not None:
        detail["exit_code"] = outcome.exit_code
        if outcome.signal:
            detail["signal"] = outcome.signal
        if outcome.timed_out:
            detail["timed_out"] = True
    if outcome.error:
        detail["error"] = outcome.error
        detail["error_code"] = outcome.error_code
    return detail


def add_fleet_service(server: grpc.aio.Server, service: FleetService) -> None:
    fleet_service_pb2_grpc.add_FleetServicer_to_server(service, server)


class TerminalBridge:
    """One `vpsmon shell` session: the client's stream ⇄ the exporter's Agent.Pty, recorded
    like the web terminal's (collector/fleet/recordings.py: output and resizes, never the
    keystrokes) and audited (`pty.open` before the shell starts, `pty.close` after)."""

    def __init__(
        self,
        service: FleetService,
        caller: Caller,
        server: Server,
        target: AgentTarget,
        start: pb.PtyStart,
        detail: dict[str, Any],
    ) -> None:
        self.service = service
        self.db = service.db
        self.caller = caller
        self.server = server
        self.target = target
        self.start = start
        self.detail = detail
        self.recorder = recordings.Recorder(service.max_recording_bytes)
        self.started = time.monotonic()
        self.exit: pb.ExitStatus | None = None
        self.error = ""
        self.revoked = False
        self._seq = 0

    def _now(self) -> float:
        return time.monotonic() - self.started

    async def run(
        self,
        request_iterator: AsyncIterator[fpb.FleetPtyClientMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.PtyServerMessage]:
        rows = self.start.size.rows or DEFAULT_ROWS
        cols = self.start.size.cols or DEFAULT_COLS
        self.recording_id = await recordings.start(
            self.db, user=self.caller.user, server_id=self.server.id, cols=cols, rows=rows
        )
        self.detail["recording"] = self.recording_id
        await self.service._audit(self.caller, "pty.open", self.server.id, detail=self.detail)
        agents = self.service.agents
        call = agents.stub(self.target).Pty(metadata=agents.metadata(self.target))
        helpers = [
            asyncio.create_task(self._typed(call, request_iterator)),
            asyncio.create_task(self._still_allowed(call)),
            asyncio.create_task(self._flush_every_second()),
        ]
        try:
            async for message in call:
                if message.WhichOneof("kind") == "exit":
                    self.exit = message.exit
                else:
                    self.recorder.output(message.data, self._now())
                yield message
        except grpc.aio.AioRpcError as err:
            self.error = err.details() or err.code().name
            await context.abort(err.code(), f"{self.server.name}: {self.error}")
        except asyncio.CancelledError:
            if not self.revoked:
                self.error = "client went away"
                raise
            self.error = "access revoked"
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "access to the server ended")
        finally:
            call.cancel()
            for task in helpers:
                task.cancel()
            # Not awaited to the end: a task blocked reading the client's stream does not
            # always finish when cancelled while the handler is being aborted.
            await asyncio.wait(helpers, timeout=1.0)
            await asyncio.shield(self._finish())

    async def _typed(
        self, call: Any, request_iterator: AsyncIterator[fpb.FleetPtyClientMessage]
    ) -> None:
        await call.write(pb.PtyClientMessage(start=self.start))
        async for message in request_iterator:
            kind = message.WhichOneof("kind")
            if kind == "data":
                self.recorder.typed(message.data)
                await call.write(pb.PtyClientMessage(data=message.data))
            elif kind == "resize":
                size = message.resize
                self.recorder.resize(size.cols, size.rows, self._now())
                await call.write(pb.PtyClientMessage(resize=size))
        await call.done_writing()

    async def _still_allowed(self, call: Any) -> None:
        """A terminal must not outlive its token, its user's role or the server's grant."""
        while True:
            await asyncio.sleep(self.service.recheck_seconds)
            try:
                found = await tokens.authenticate_token(self.db, self.caller.token)
                allowed = (
                    found is not None
                    and role_allows(found[0].role, "operator")
                    and await can_see_server(self.db, found[0], self.server.id)
                )
            except Exception as err:  # database away: keep the session, look again later
                log.warning("cannot re-check terminal access error=%s", err)
                continue
            if not allowed:
                self.revoked = True
                call.cancel()
                return

    async def _flush(self) -> None:
        events = self.recorder.take()
        if events:
            await recordings.append(self.db, self.recording_id, self._seq, events)
            self._seq += 1

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._flush()
            except Exception as err:  # database away: keep the events, try again
                log.warning(
                    "cannot store terminal recording id=%s error=%s", self.recording_id, err
                )

    async def _finish(self) -> None:
        status = self.exit
        end: dict[str, Any] = {
            "session": self.detail["session"],
            "recording": self.recording_id,
            "duration_seconds": round(self._now(), 3),
            "bytes_out": self.recorder.bytes_out,
            "bytes_in": self.recorder.bytes_in,
        }
        if status is not None:
            end["exit_code"] = status.code
            if status.signal:
                end["signal"] = status.signal
        if self.error:
            end["error"] = self.error
        if self.recorder.truncated:
            end["truncated"] = True
        try:
            await self._flush()
            await recordings.finish(
                self.db,
                self.recording_id,
                self.recorder,
                exit_code=status.code if status is not None else None,
                exit_signal=status.signal if status is not None else None,
            )
        except Exception as err:
            log.warning("cannot finish terminal recording id=%s error=%s", self.recording_id, err)
        await self.service._audit(
            self.caller, "pty.close", self.server.id, success=not self.error, detail=end
        )
