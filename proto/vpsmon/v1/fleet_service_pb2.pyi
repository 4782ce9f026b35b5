from vpsmon.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("username", "role")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    username: str
    role: str
    def __init__(self, username: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class FleetSelector(_message.Message):
    __slots__ = ("target", "group")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    target: str
    group: str
    def __init__(self, target: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class FleetServer(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class FleetPlan(_message.Message):
    __slots__ = ("servers", "not_granted")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    NOT_GRANTED_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[FleetServer]
    not_granted: int
    def __init__(self, servers: _Optional[_Iterable[_Union[FleetServer, _Mapping]]] = ..., not_granted: _Optional[int] = ...) -> None: ...

class FleetExecRequest(_message.Message):
    __slots__ = ("selector", "exec", "concurrency")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    selector: FleetSelector
    exec: _agent_pb2.ExecRequest
    concurrency: int
    def __init__(self, selector: _Optional[_Union[FleetSelector, _Mapping]] = ..., exec: _Optional[_Union[_agent_pb2.ExecRequest, _Mapping]] = ..., concurrency: _Optional[int] = ...) -> None: ...

class FleetOutput(_message.Message):
    __slots__ = ("server_id", "stdout", "stderr")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    stdout: bytes
    stderr: bytes
    def __init__(self, server_id: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ...) -> None: ...

class FleetServerResult(_message.Message):
    __slots__ = ("server", "exit", "error", "error_code", "duration_seconds")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    server: FleetServer
    exit: _agent_pb2.ExitStatus
    error: str
    error_code: str
    duration_seconds: float
    def __init__(self, server: _Optional[_Union[FleetServer, _Mapping]] = ..., exit: _Optional[_Union[_agent_pb2.ExitStatus, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class FleetSummary(_message.Message):
    __slots__ = ("servers", "succeeded", "failed", "errors", "not_granted", "duration_seconds")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NOT_GRANTED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    servers: int
    succeeded: int
    failed: int
    errors: int
    not_granted: int
    duration_seconds: float
    def __init__(self, servers: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[int] = ..., not_granted: _Optional[int] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class FleetExecEvent(_message.Message):
    __slots__ = ("plan", "output", "result", "summary")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    plan: FleetPlan
    output: FleetOutput
    result: FleetServerResult
    summary: FleetSummary
    def __init__(self, plan: _Optional[_Union[FleetPlan, _Mapping]] = ..., output: _Optional[_Union[FleetOutput, _Mapping]] = ..., result: _Optional[_Union[FleetServerResult, _Mapping]] = ..., summary: _Optional[_Union[FleetSummary, _Mapping]] = ...) -> None: ...

class FleetPtyOpen(_message.Message):
    __slots__ = ("target", "start")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    target: str
    start: _agent_pb2.PtyStart
    def __init__(self, target: _Optional[str] = ..., start: _Optional[_Union[_agent_pb2.PtyStart, _Mapping]] = ...) -> None: ...

class FleetPtyClientMessage(_message.Message):
    __slots__ = ("open", "data", "resize")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    open: FleetPtyOpen
    data: bytes
    resize: _agent_pb2.PtySize
    def __init__(self, open: _Optional[_Union[FleetPtyOpen, _Mapping]] = ..., data: _Optional[bytes] = ..., resize: _Optional[_Union[_agent_pb2.PtySize, _Mapping]] = ...) -> None: ...
