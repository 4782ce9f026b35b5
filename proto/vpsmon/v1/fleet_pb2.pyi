from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EnrolRequest(_message.Message):
    __slots__ = ("token", "exporter_cert_pem", "address", "command_port", "features", "hostname")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_PORT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    token: str
    exporter_cert_pem: str
    address: str
    command_port: int
    features: _containers.RepeatedScalarFieldContainer[str]
    hostname: str
    def __init__(self, token: _Optional[str] = ..., exporter_cert_pem: _Optional[str] = ..., address: _Optional[str] = ..., command_port: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., hostname: _Optional[str] = ...) -> None: ...

class EnrolResponse(_message.Message):
    __slots__ = ("collector_cert_pem", "collector_fingerprint", "command_token", "features", "server_id", "address")
    COLLECTOR_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    collector_cert_pem: str
    collector_fingerprint: str
    command_token: str
    features: _containers.RepeatedScalarFieldContainer[str]
    server_id: int
    address: str
    def __init__(self, collector_cert_pem: _Optional[str] = ..., collector_fingerprint: _Optional[str] = ..., command_token: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., server_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...
