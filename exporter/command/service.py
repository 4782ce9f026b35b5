"""The Agent service (proto/vpsmon/v1/agent.proto): each call is guarded, then done.

Errors a caller can act on become gRPC statuses with a one-line reason: a policy refusal is
PERMISSION_DENIED, a missing file NOT_FOUND, an existing one ALREADY_EXISTS, bad arguments
INVALID_ARGUMENT. Every call is logged with its peer, what it did and how it ended, so the
server keeps its own record beside the collector's audit log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from vpsmon import __version__
from vpsmon.exporter.command import files as fileops
from vpsmon.exporter.command.dockerctl import DockerControl
from vpsmon.exporter.command.guard import Guard
from vpsmon.exporter.command.identity import RunAs
from vpsmon.exporter.command.policy import Policy, PolicyError
from vpsmon.exporter.command.processes import Exit, Terminal, run
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.v1 import agent_pb2_grpc

log = logging.getLogger("vpsmon.exporter.command")

T = TypeVar("T")

STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (PolicyError, grpc.StatusCode.PERMISSION_DENIED),
    (FileNotFoundError, grpc.StatusCode.NOT_FOUND),
    (FileExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (PermissionError, grpc.StatusCode.PERMISSION_DENIED),
    (IsADirectoryError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotADirectoryError, grpc.StatusCode.FAILED_PRECONDITION),
    (OSError, grpc.StatusCode.FAILED_PRECONDITION),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(err: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(err, kind):
            return code
    return None


def message_for(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


def info_message(info: fileops.Info) -> pb.FileInfo:
    return pb.FileInfo(
        path=info.path,
        name=info.name,
        type=info.type,
        size=info.size,
        mode=info.mode,
        modified=info.modified,
        owner=info.owner,
        group=info.group,
        target=info.target,
    )


def exit_message(status: Exit) -> pb.ExitStatus:
    return pb.ExitStatus(code=status.code, signal=status.signal, timed_out=status.timed_out)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(
        self, guard: Guard, run_as: RunAs, policy: Policy, exec_timeout: float, docker_host: str
    ) -> None:
        self.guard = guard
        self.run_as = run_as
        self.policy = policy
        self.exec_timeout = exec_timeout
        self.files = fileops.Files(policy, run_as)
        self.docker = DockerControl(docker_host)
        # One thread for file I/O: transfers stay sequential per chunk anyway, and every extra
        # thread would get a malloc arena of its own that keeps freed chunk buffers resident.
        self._io = concurrent.futures.ThreadPoolExecutor(1, "files")

    async def _in_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    async def _fail(self, context: grpc.aio.ServicerContext, err: BaseException, what: str) -> None:
        code = status_for(err)
        if code is None:
            log.exception("command failed peer=%s call=%s", context.peer(), what)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error (see the exporter log)")
        log.info(
            "command refused peer=%s call=%s code=%s reason=%r",
            context.peer(),
            what,
            code.name if code else "",
            message_for(err),
        )
        await context.abort(code or grpc.StatusCode.INTERNAL, message_for(err))

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        feature: str,
        what: str,
        work: Callable[[], T],
    ) -> T:
        """Guard, run blocking `work` in a thread, log, and map errors to statuses."""
        await self.guard.check(context, feature)
        try:
            result = await asyncio.to_thread(work)
        except Exception as err:
            await self._fail(context, err, what)
            raise  # not reached: abort raises
        log.info("command done peer=%s call=%s", context.peer(), what)
        return result

    # ---------------------------------------------------------------- info

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.guard.check(context, None)
        return pb.InfoResponse(
            version=__version__,
            hostname=socket.gethostname(),
            features=sorted(self.guard.features),
            run_as=self.run_as.name,
            file_roots=[str(r) for r in self.policy.file_roots]
            if "files" in self.guard.features
            else [],
        )

    # ---------------------------------------------------------------- exec

    async def Exec(
        self, request: pb.ExecRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecOutput]:
        await self.guard.check(context, "exec")
        argv = list(request.argv)
        what = f"exec argv={argv!r}"
        timeout = self.exec_timeout
        if 0 < request.timeout_seconds < timeout:
            timeout = request.timeout_seconds
        try:
            stream = run(
                argv,
                run_as=self.run_as,
                policy=self.policy,
                cwd=request.cwd,
                env=dict(request.env),
                stdin=request.stdin,
                limit_seconds=timeout,
            )
            async for item in stream:
                if isinstance(item, Exit):
                    log.info(
                        "command done peer=%s call=%s code=%d signal=%d timed_out=%s",
                        context.peer(),
                        what,
                        item.code,
                        item.signal,
                        item.timed_out,
                    )
                    yield pb.ExecOutput(exit=exit_message(item))
                elif item[0] == "stdout":
                    yield pb.ExecOutput(stdout=item[1])
                else:
                    yield pb.ExecOutput(stderr=item[1])
        except Exception as err:
            await self._fail(context, err, what)

    # ---------------------------------------------------------------- pty

    async def Pty(
        self,
        request_iterator: AsyncIterator[pb.PtyClientMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.PtyServerMessage]:
        await self.guard.check(context, "pty")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("kind") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        assert first is not None  # abort() raised otherwise
        start = first.start
        argv = list(start.argv) or [self.run_as.shell, "-l"]
        what = f"pty argv={argv!r}"
        try:
            terminal = await Terminal.start(
                argv,
                run_as=self.run_as,
                policy=self.policy,
                env=dict(start.env),
                term=start.term,
                rows=start.size.rows,
                cols=start.size.cols,
            )
        except Exception as err:
            await self._fail(context, err, what)
            return
        log.info("pty started peer=%s call=%s pid=%d", context.peer(), what, terminal.process.pid)

        async def typed() -> None:
            async for message in request_iterator:
                kind = message.WhichOneof("kind")
                if kind == "data":
                    await terminal.write(message.data)
                elif kind == "resize":
                    terminal.resize(message.resize.rows, message.resize.cols)

        typing = asyncio.create_task(typed())
        try:
            async for data in terminal.output():
                yield pb.PtyServerMessage(data=data)
            status = await terminal.wait()
            log.info(
                "pty ended peer=%s call=%s code=%d signal=%d",
                context.peer(),
                what,
                status.code,
                status.signal,
            )
            yield pb.PtyServerMessage(exit=exit_message(status))
        finally:
            typing.cancel()
            await terminal.close()

    # ---------------------------------------------------------------- files

    async def FileStat(self, request: pb.FilePath, context: grpc.aio.ServicerContext) -> Any:
        info = await self._unary(
            context, "files", f"stat {request.path}", lambda: self.files.stat(request.path)
        )
        return info_message(info)

    async def FileList(self, request: pb.FilePath, context: grpc.aio.ServicerContext) -> Any:
        entries, truncated = await self._unary(
            context, "files", f"list {request.path}", lambda: self.files.list(request.path)
        )
        return pb.FileListResponse(entries=[info_message(i) for i in entries], truncated=truncated)

    async def FileRead(
        self, request: pb.FileReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FileChunk]:
        await self.guard.check(context, "files")
        what = f"read {request.path}"
        try:
            chunks = self.files.read(request.path, request.offset, request.length)
            sent = 0
            while True:
                # One chunk at a time from a thread: memory stays flat whatever the file size.
                chunk = await self._in_io(next, chunks, None)
                if chunk is None:
                    break
                sent += len(chunk)
                yield pb.FileChunk(data=chunk)
        except Exception as err:
            await self._fail(context, err, what)
        log.info("command done peer=%s call=%s bytes=%d", context.peer(), what, sent)

    async def FileWrite(
        self,
        request_iterator: AsyncIterator[pb.FileWriteRequest],
        context: grpc.aio.ServicerContext,
    ) -> Any:
        await self.guard.check(context, "files")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("kind") != "header":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message must be header"
            )
        assert first is not None  # abort() raised otherwise
        header = first.header
        what = f"write {header.path}"
        upload: fileops.Upload | None = None
        try:
            upload = await self._in_io(
                self.files.start_write, header.path, header.mode, header.overwrite
            )
            async for message in request_iterator:
                if message.WhichOneof("kind") != "data":
                    raise ValueError("only data may follow the header")
                await self._in_io(upload.add, message.data)
            info = await self._in_io(upload.commit, header.sha256, header.overwrite)
        except BaseException as err:
            if upload is not None:
                upload.abort()  # the caller went away or failed: no half-written file stays
            if isinstance(err, Exception):
                await self._fail(context, err, what)
            raise
        log.info("command done peer=%s call=%s bytes=%d", context.peer(), what, upload.size)
        return info_message(info)

    async def FileMkdir(
        self, request: pb.FileMkdirRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        info = await self._unary(
            context,
            "files",
            f"mkdir {request.path}",
            lambda: self.files.mkdir(request.path, request.mode, request.parents),
        )
        return info_message(info)

    async def FileRename(
        self, request: pb.FileRenameRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        info = await self._unary(
            context,
            "files",
            f"rename {request.path} {request.new_path}",
            lambda: self.files.rename(request.path, request.new_path, request.overwrite),
        )
        return info_message(info)

    async def FileDelete(
        self, request: pb.FileDeleteRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await self._unary(
            context,
            "files",
            f"delete {request.path}",
            lambda: self.files.delete(request.path, request.recursive),
        )
        return pb.FileDeleteResponse()

    async def FileChmod(
        self, request: pb.FileChmodRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        info = await self._unary(
            context,
            "files",
            f"chmod {request.path} {request.mode:o}",
            lambda: self.files.chmod(request.path, request.mode),
        )
        return info_message(info)

    # ---------------------------------------------------------------- docker

    async def DockerList(
        self, request: pb.DockerListRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        found = await self._unary(
            context, "docker", "docker list", lambda: self.docker.list(request.all)
        )
        return pb.DockerListResponse(containers=[pb.Container(**c) for c in found])

    async def DockerInspect(
        self, request: pb.ContainerRef, context: grpc.aio.ServicerContext
    ) -> Any:
        document = await self._unary(
            context,
            "docker",
            f"docker inspect {request.container}",
            lambda: self.docker.inspect(request.container),
        )
        return pb.DockerInspectResponse(json=json.dumps(document))

    async def DockerStart(self, request: pb.ContainerRef, context: grpc.aio.ServicerContext) -> Any:
        found = await self._unary(
            context,
            "docker",
            f"docker start {request.container}",
            lambda: self.docker.start(request.container),
        )
        return pb.DockerActionResponse(container=pb.Container(**found))

    async def DockerStop(
        self, request: pb.DockerStopRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        found = await self._unary(
            context,
            "docker",
            f"docker stop {request.container}",
            lambda: self.docker.stop(request.container, request.timeout_seconds or None),
        )
        return pb.DockerActionResponse(container=pb.Container(**found))

    async def DockerRestart(
        self, request: pb.DockerStopRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        found = await self._unary(
            context,
            "docker",
            f"docker restart {request.container}",
            lambda: self.docker.restart(request.container, request.timeout_seconds or None),
        )
        return pb.DockerActionResponse(container=pb.Container(**found))

    async def DockerStats(self, request: pb.ContainerRef, context: grpc.aio.ServicerContext) -> Any:
        document = await self._unary(
            context,
            "docker",
            f"docker stats {request.container}",
            lambda: self.docker.stats(request.container),
        )
        return pb.DockerStatsResponse(json=json.dumps(document))

    async def DockerLogs(
        self, request: pb.DockerLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DockerLogChunk]:
        await self.guard.check(context, "docker")
        what = f"docker logs {request.container} follow={request.follow}"
        try:
            async for stream, data in self.docker.logs(
                request.container,
                follow=request.follow,
                tail=request.tail,
                since=request.since,
                timestamps=request.timestamps,
            ):
                yield pb.DockerLogChunk(stream=stream, data=data)
        except Exception as err:
            await self._fail(context, err, what)
        log.info("command done peer=%s call=%s", context.peer(), what)
