"""The file manager (issue #7): a server's files through its exporter's Agent Files RPCs.

Page: ``GET /servers/{id}/files?path=…``. JSON API under ``/api/servers/{id}/files/``:

    GET  list?path=DIR          entries of DIR (no path: the first file root) and the roots
    GET  stat?path=P            one entry
    GET  download?path=P        the file's bytes, streamed (Content-Disposition: attachment)
    PUT  upload?path=P[&overwrite=1][&mode=644][&sha256=HEX]
                                the request body, streamed into an atomic write on the exporter
                                (which, given sha256, keeps the file only if the content has it)
    GET  text?path=P            a text file for the editor (UTF-8, at most TEXT_LIMIT bytes)
    PUT  text?path=P[&modified=MTIME]
                                save the editor's text (the body, UTF-8); 409 if the file
                                changed since `modified`
    POST mkdir    {"path"}                  POST rename {"path", "new_path"}
    POST delete   {"path", "recursive"}     POST chmod  {"path", "mode": "0755"}
    GET  may-change             200 {"upload_max_bytes"} when changes may be made now; else
                                the step-up's 401 {"reauth"} (the page asks before uploading)

Every call goes through `open_agent(request, id, "files")` (login, operator role, server
access as 404, enrolment, the feature switched on); every change made from a browser session
also needs a fresh step-up (password or TOTP in the last web.reauth_ttl, as exec and the
terminal do: a file written to ~/.ssh/authorized_keys or a cron directory runs code as surely
as exec), while browsing and downloading do not. API tokens (scripts) are not asked. State
changes need the CSRF token (the session middleware checks X-CSRF-Token), and each change is
written to the audit log before it runs, with a second `success: false` entry when it failed.

Uploads are limited to web.upload_max_bytes (0: no limit): a Content-Length over it is refused
with 413 before anything reaches the exporter, and a body without one is counted as it streams
and the write cancelled once it passes the limit (the exporter then removes its temporary file,
so no partial file stays). The exporter's policy is the
authority on paths: it resolves symlinks and `..` and refuses anything outside its file roots;
its reason comes back to the browser as `{"error": …, "code": …}`.

Transfers never hold a file in the collector: the body is read in CHUNK pieces and each goes to
gRPC as it arrives (HTTP and HTTP/2 flow control push back on a slow side), and downloads are
written to the browser chunk by chunk as the exporter sends them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import posixpath
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from aiohttp import web

from vpsmon.collector import servers as records
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.web import access
from vpsmon.web.command import Agent, audit_command, open_agent, open_agent_for_change
from vpsmon.web.dashboard import server_id_param
from vpsmon.web.keys import CONFIG, POOL

log = logging.getLogger("vpsmon.web.files")

CHUNK = 256 * 1024  # per gRPC message: well under the 4 MiB message limit
TEXT_LIMIT = 1024 * 1024  # the editor's cap; bigger files are downloaded instead
MAX_PATH = 4096

# The exporter's statuses as HTTP answers (exporter/command/service.py STATUS_OF).
HTTP_OF: dict[grpc.StatusCode, type[web.HTTPException]] = {
    grpc.StatusCode.NOT_FOUND: web.HTTPNotFound,
    grpc.StatusCode.PERMISSION_DENIED: web.HTTPForbidden,
    grpc.StatusCode.ALREADY_EXISTS: web.HTTPConflict,
    grpc.StatusCode.FAILED_PRECONDITION: web.HTTPConflict,
    grpc.StatusCode.INVALID_ARGUMENT: web.HTTPBadRequest,
    grpc.StatusCode.UNAUTHENTICATED: web.HTTPBadGateway,
    grpc.StatusCode.UNAVAILABLE: web.HTTPBadGateway,
    grpc.StatusCode.DEADLINE_EXCEEDED: web.HTTPGatewayTimeout,
}


def setup(app: web.Application) -> None:
    app.router.add_get(r"/servers/{id:\d+}/files", files_page)
    api = r"/api/servers/{id:\d+}/files"
    app.router.add_get(api + "/list", api_list)
    app.router.add_get(api + "/stat", api_stat)
    app.router.add_get(api + "/download", api_download)
    app.router.add_put(api + "/upload", api_upload)
    app.router.add_get(api + "/text", api_text_read)
    app.router.add_put(api + "/text", api_text_save)
    app.router.add_post(api + "/mkdir", api_mkdir)
    app.router.add_post(api + "/rename", api_rename)
    app.router.add_post(api + "/delete", api_delete)
    app.router.add_post(api + "/chmod", api_chmod)
    app.router.add_get(api + "/may-change", api_may_change)


# ---------------------------------------------------------------- errors and arguments


def json_error(
    cls: type[web.HTTPException], message: str, *, max_size: int = TEXT_LIMIT, **extra: Any
) -> web.HTTPException:
    text = json.dumps({"error": message, **extra})
    if cls is web.HTTPRequestEntityTooLarge:  # it wants the sizes for its default text
        return web.HTTPRequestEntityTooLarge(
            max_size, 0, text=text, content_type="application/json"
        )
    return cls(text=text, content_type="application/json")


def size_text(size: int) -> str:
    """1,536 bytes -> '1.5 KiB' (messages about limits)."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size:,} bytes"  # pragma: no cover (the loop returns)


def upload_too_large(limit: int, size: int | None = None) -> web.HTTPException:
    what = f"this upload ({size_text(size)})" if size is not None else "this upload"
    return json_error(
        web.HTTPRequestEntityTooLarge,
        f"{what} is larger than the {size_text(limit)} this collector accepts"
        " (web.upload_max_bytes)",
        max_size=limit,
        code="UPLOAD_TOO_LARGE",
        limit=limit,
    )


class UploadRefused(Exception):
    """The upload was stopped by the collector (past web.upload_max_bytes): `response` says why."""

    def __init__(self, response: web.HTTPException, reason: str) -> None:
        super().__init__(reason)
        self.response = response


def agent_error(err: grpc.aio.AioRpcError) -> web.HTTPException:
    """The exporter's refusal as an HTTP error carrying its one-line reason."""
    code = err.code()
    cls = HTTP_OF.get(code, web.HTTPBadGateway)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = "the server's exporter did not answer (is it running and reachable?)"
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        message = "the exporter refused the collector's token; enrol the server again"
    else:
        message = err.details() or code.name
    return json_error(cls, message, code=code.name)


def check_path(value: object, what: str = "path") -> str:
    """An absolute path as the exporter wants it; the exporter's policy checks the rest."""
    if not isinstance(value, str) or not value:
        raise json_error(web.HTTPBadRequest, f"{what} is required")
    if not value.startswith("/"):
        raise json_error(web.HTTPBadRequest, f"{what} must be absolute (start with /)")
    if "\x00" in value or len(value) > MAX_PATH:
        raise json_error(web.HTTPBadRequest, f"{what} is not a valid path")
    return value


def parse_mode(value: object) -> int:
    """Permission bits from 493, "755", "0755" or "0o755"; 0…0o7777."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise json_error(
                web.HTTPBadRequest, f"mode {value!r} is not octal permission bits like 0644"
            ) from None
    else:
        raise json_error(web.HTTPBadRequest, "mode is required, as octal like 0644")
    if not 0 <= mode <= 0o7777:
        raise json_error(web.HTTPBadRequest, f"mode {value!r} is outside 0000…7777")
    return mode


def flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "") in ("1", "true", "yes", "on")


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise json_error(web.HTTPBadRequest, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "the body must be a JSON object")
    return body


def entry_json(info: pb.FileInfo) -> dict[str, Any]:
    return {
        "path": info.path,
        "name": info.name,
        "type": info.type,
        "size": info.size,
        "mode": f"{info.mode:04o}",
        "modified": info.modified,
        "owner": info.owner,
        "group": info.group,
        "target": info.target,
    }


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name and the exact one in RFC 6266's filename*.

    The fallback keeps letters, digits and a few safe marks (no quotes, backslashes, control
    characters or separators that could end the header value or the parameter)."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-+ ") else "_" for c in name)
    fallback = fallback.strip(" ") or "download"
    exact = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


# ---------------------------------------------------------------- calls to the agent


def options(agent: Agent, timeout: float | None = None, *, stream: bool = False) -> dict[str, Any]:
    """The call's token and deadline. Transfers have no overall deadline (a large file on a
    slow link may take long); they end when either side goes away."""
    if stream:
        return {"metadata": agent.metadata}
    return agent.options(timeout)


async def stat(agent: Agent, path: str) -> pb.FileInfo | None:
    """The entry at `path`, or None if there is none (other refusals raise)."""
    try:
        info: pb.FileInfo = await agent.stub.FileStat(pb.FilePath(path=path), **options(agent))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise agent_error(err) from None
    return info


async def existing_file(agent: Agent, path: str) -> pb.FileInfo:
    info = await stat(agent, path)
    if info is None:
        raise json_error(web.HTTPNotFound, f"{path}: no such file or directory", code="NOT_FOUND")
    if info.type != "file":
        raise json_error(web.HTTPConflict, f"{path}: not a regular file", code="NOT_A_FILE")
    return info


async def changed(
    request: web.Request, agent: Agent, action: str, detail: dict[str, Any], call: Any
) -> Any:
    """Audit `action`, run `call()` (an awaitable factory), and audit a failure as well."""
    server_id = agent.server.id
    await audit_command(request, action, server_id, detail)
    try:
        return await call()
    except grpc.aio.AioRpcError as err:
        failure = agent_error(err)
        reason = err.details() or err.code().name
    except UploadRefused as err:
        failure, reason = err.response, str(err)
    await audit_command(request, action, server_id, {**detail, "error": reason}, success=False)
    raise failure from None


async def open_for_change(request: web.Request) -> Agent:
    """The files Agent for a change: every check of open_agent and, for a browser session, a
    fresh step-up. An API token is the scripted way to change files (docs/files.md): creating
    one needed a step-up, it is revocable, and the Fleet service lets it run commands anyway,
    so it is not asked (it could not answer)."""
    return await open_agent_for_change(request, server_id_param(request), "files")


# ---------------------------------------------------------------- page


async def files_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    access.require_role(request, "operator")
    server_id = server_id_param(request)
    await access.require_server(request, server_id)
    server = await records.get_server(request.app[POOL], server_id)
    if server is None:
        raise web.HTTPNotFound(text="no such server")
    return render(
        request,
        "files.html",
        server=server,
        start=request.query.get("path", ""),
        text_limit=TEXT_LIMIT,
        upload_max_bytes=request.app[CONFIG].upload_max_bytes,
    )


async def api_may_change(request: web.Request) -> web.Response:
    """200 when this user may change files on the server now (fresh step-up included); the
    page asks before an upload, whose body a refusal could not stop once it is on its way."""
    await open_for_change(request)
    return web.json_response(
        {"ok": True, "upload_max_bytes": request.app[CONFIG].upload_max_bytes},
        headers={"Cache-Control": "no-store"},
    )


# ---------------------------------------------------------------- reading


async def api_list(request: web.Request) -> web.Response:
    agent = await open_agent(request, server_id_param(request), "files")
    try:
        info = await agent.stub.Info(pb.InfoRequest(), **options(agent))
    except grpc.aio.AioRpcError as err:
        raise agent_error(err) from None
    roots = list(info.file_roots)
    requested = request.query.get("path", "")
    path = check_path(requested) if requested else (roots[0] if roots else "/")
    try:
        listing = await agent.stub.FileList(pb.FilePath(path=path), **options(agent))
    except grpc.aio.AioRpcError as err:
        raise agent_error(err) from None
    return web.json_response(
        {
            "path": path,
            "roots": roots,
            "run_as": info.run_as,
            "entries": [entry_json(e) for e in listing.entries],
            "truncated": listing.truncated,
        },
        headers={"Cache-Control": "no-store"},
    )


async def api_stat(request: web.Request) -> web.Response:
    agent = await open_agent(request, server_id_param(request), "files")
    path = check_path(request.query.get("path"))
    info = await stat(agent, path)
    if info is None:
        raise json_error(web.HTTPNotFound, f"{path}: no such file or directory", code="NOT_FOUND")
    return web.json_response(entry_json(info), headers={"Cache-Control": "no-store"})


async def api_download(request: web.Request) -> web.StreamResponse:
    agent = await open_agent(request, server_id_param(request), "files")
    path = check_path(request.query.get("path"))
    info = await existing_file(agent, path)
    await audit_command(
        request, "file.download", agent.server.id, {"path": path, "size": info.size}
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": content_disposition(info.name),
            "Cache-Control": "no-store",
        }
    )
    # The size as it was at stat; the read stops there, so the length sent matches it (a file
    # that shrank meanwhile ends the response early, which the browser reports as failed).
    response.content_length = info.size
    if info.size == 0:
        await response.prepare(request)
        await response.write_eof()
        return response
    call = agent.stub.FileRead(
        pb.FileReadRequest(path=path, length=info.size), **options(agent, stream=True)
    )
    try:
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as err:
            raise agent_error(err) from None
        await response.prepare(request)
        chunk = first
        while chunk is not grpc.aio.EOF:
            # write() waits while the browser is slower than the exporter (flow control), so
            # at most a few chunks are in the collector at any time.
            await response.write(chunk.data)
            chunk = await call.read()
        await response.write_eof()
    except grpc.aio.AioRpcError as err:
        # Headers are gone; all that is left is to end the response short.
        log.warning(
            "download failed server=%s path=%r reason=%s", agent.server.id, path, err.details()
        )
        raise ConnectionResetError("the exporter stopped sending the file") from err
    finally:
        call.cancel()  # no-op when done; stops the exporter's read when the browser left
    return response


async def api_text_read(request: web.Request) -> web.Response:
    agent = await open_agent(request, server_id_param(request), "files")
    path = check_path(request.query.get("path"))
    info = await existing_file(agent, path)
    if info.size > TEXT_LIMIT:
        raise json_error(
            web.HTTPRequestEntityTooLarge,
            f"{info.name} is {info.size:,} bytes; the editor opens files up to"
            f" {TEXT_LIMIT // 1024:,} KiB. Download it instead.",
            code="TOO_LARGE",
        )
    data = bytearray()
    try:
        async for chunk in agent.stub.FileRead(
            pb.FileReadRequest(path=path, length=TEXT_LIMIT + 1), **options(agent)
        ):
            data += chunk.data
    except grpc.aio.AioRpcError as err:
        raise agent_error(err) from None
    if len(data) > TEXT_LIMIT:
        raise json_error(
            web.HTTPRequestEntityTooLarge,
            f"{info.name} grew past the editor's limit",
            code="TOO_LARGE",
        )
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", bytes(data), 0, 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise json_error(
            web.HTTPUnsupportedMediaType,
            f"{info.name} is not UTF-8 text (a binary file?); download it instead.",
            code="BINARY",
        ) from None
    await audit_command(request, "file.read", agent.server.id, {"path": path, "size": len(data)})
    return web.json_response(
        {**entry_json(info), "content": text}, headers={"Cache-Control": "no-store"}
    )


# ---------------------------------------------------------------- writing


async def api_upload(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    limit = request.app[CONFIG].upload_max_bytes
    if limit and request.content_length is not None and request.content_length > limit:
        raise upload_too_large(limit, request.content_length)
    path = check_path(request.query.get("path"))
    overwrite = flag(request.query, "overwrite")
    mode = parse_mode(request.query["mode"]) if request.query.get("mode") else 0
    digest = request.query.get("sha256", "").lower()
    if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
        raise json_error(web.HTTPBadRequest, "sha256 must be 64 hex digits")
    # Refusals the exporter would give after the header are asked first, so they reach the
    # browser before it has sent the whole body (a response to an unread body can be lost).
    parent = posixpath.dirname(path.rstrip("/")) or "/"
    folder = await stat(agent, parent)
    if folder is None or folder.type != "dir":
        raise json_error(web.HTTPConflict, f"{parent}: no such directory", code="NO_DIRECTORY")
    existing = await stat(agent, path)
    if existing is not None and existing.type == "dir":
        raise json_error(web.HTTPConflict, f"{path}: is a directory", code="IS_A_DIRECTORY")
    if existing is not None and not overwrite:
        raise json_error(
            web.HTTPConflict, f"{path}: exists (upload again to replace it)", code="ALREADY_EXISTS"
        )
    received = 0
    over_limit = False

    async def messages() -> AsyncIterator[pb.FileWriteRequest]:
        nonlocal received, over_limit
        yield pb.FileWriteRequest(
            header=pb.FileWriteHeader(path=path, mode=mode, overwrite=overwrite, sha256=digest)
        )
        async for piece in request.content.iter_chunked(CHUNK):
            received += len(piece)
            if limit and received > limit:
                # gRPC cancels the call when its request iterator raises; the exporter then
                # aborts the write and removes its temporary file.
                over_limit = True
                raise OverflowError("upload past web.upload_max_bytes")
            yield pb.FileWriteRequest(data=piece)

    async def write() -> pb.FileInfo:
        try:
            info: pb.FileInfo = await agent.stub.FileWrite(
                messages(), **options(agent, stream=True)
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if over_limit and task is not None and not task.cancelling():
                # Our own cancel (above), not the browser going away.
                raise UploadRefused(
                    upload_too_large(limit), f"larger than web.upload_max_bytes ({limit})"
                ) from None
            raise
        return info

    detail: dict[str, Any] = {"path": path, "overwrite": overwrite}
    if request.content_length is not None:
        detail["size"] = request.content_length
    info = await changed(request, agent, "file.upload", detail, write)
    if request.content_length is not None and received != request.content_length:
        # Cannot happen with aiohttp (it ends the body with an error) but a torn upload must
        # never look complete.
        raise json_error(web.HTTPBadRequest, "the upload ended early")
    log.info("upload server=%s path=%r bytes=%d", agent.server.id, path, received)
    return web.json_response({**entry_json(info), "received": received})


async def read_text_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > TEXT_LIMIT:
        raise _too_large()
    body = bytearray()
    async for piece in request.content.iter_chunked(64 * 1024):
        body += piece
        if len(body) > TEXT_LIMIT:
            raise _too_large()
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise json_error(web.HTTPBadRequest, "the text must be UTF-8") from None
    return bytes(body)


def _too_large() -> web.HTTPException:
    return json_error(
        web.HTTPRequestEntityTooLarge,
        f"the editor saves at most {TEXT_LIMIT // 1024:,} KiB; upload larger files instead",
        code="TOO_LARGE",
    )


async def api_text_save(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    path = check_path(request.query.get("path"))
    body = await read_text_body(request)
    info = await stat(agent, path)
    if info is not None and info.type != "file":
        raise json_error(web.HTTPConflict, f"{path}: not a regular file", code="NOT_A_FILE")
    expected = request.query.get("modified")
    if expected:
        try:
            when = float(expected)
        except ValueError:
            raise json_error(web.HTTPBadRequest, "modified must be a number") from None
        # Absolute: a relative tolerance on Unix seconds would be whole seconds wide.
        if info is None or abs(info.modified - when) > 1e-6:
            raise json_error(
                web.HTTPConflict,
                f"{path} changed on the server since you opened it; reload it before saving",
                code="CHANGED",
            )
    digest = hashlib.sha256(body).hexdigest()

    async def messages() -> AsyncIterator[pb.FileWriteRequest]:
        yield pb.FileWriteRequest(
            header=pb.FileWriteHeader(path=path, overwrite=True, sha256=digest)
        )
        for start in range(0, len(body), CHUNK):
            yield pb.FileWriteRequest(data=body[start : start + CHUNK])

    saved = await changed(
        request,
        agent,
        "file.write",
        {"path": path, "size": len(body), "sha256": digest},
        lambda: agent.stub.FileWrite(messages(), **options(agent)),
    )
    return web.json_response(entry_json(saved))


async def api_mkdir(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    body = await json_body(request)
    path = check_path(body.get("path"))
    mode = parse_mode(body["mode"]) if body.get("mode") not in (None, "") else 0
    info = await changed(
        request,
        agent,
        "file.mkdir",
        {"path": path},
        lambda: agent.stub.FileMkdir(pb.FileMkdirRequest(path=path, mode=mode), **options(agent)),
    )
    return web.json_response(entry_json(info))


async def api_rename(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    body = await json_body(request)
    path = check_path(body.get("path"))
    new_path = check_path(body.get("new_path"), "new_path")
    info = await changed(
        request,
        agent,
        "file.rename",
        {"path": path, "new_path": new_path},
        lambda: agent.stub.FileRename(
            pb.FileRenameRequest(path=path, new_path=new_path), **options(agent)
        ),
    )
    return web.json_response(entry_json(info))


async def api_delete(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    body = await json_body(request)
    path = check_path(body.get("path"))
    recursive = body.get("recursive") is True
    await changed(
        request,
        agent,
        "file.delete",
        {"path": path, "recursive": recursive},
        lambda: agent.stub.FileDelete(
            # A recursive delete of a big tree may take a while.
            pb.FileDeleteRequest(path=path, recursive=recursive),
            **options(agent, 300 if recursive else None),
        ),
    )
    return web.json_response({"deleted": path})


async def api_chmod(request: web.Request) -> web.Response:
    agent = await open_for_change(request)
    body = await json_body(request)
    path = check_path(body.get("path"))
    mode = parse_mode(body.get("mode"))
    info = await changed(
        request,
        agent,
        "file.chmod",
        {"path": path, "mode": f"{mode:04o}"},
        lambda: agent.stub.FileChmod(pb.FileChmodRequest(path=path, mode=mode), **options(agent)),
    )
    return web.json_response(entry_json(info))
