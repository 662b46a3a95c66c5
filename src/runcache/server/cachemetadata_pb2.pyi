from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheScope(_message.Message):
    __slots__ = ("scope", "permission")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    scope: str
    permission: int
    def __init__(self, scope: _Optional[str] = ..., permission: _Optional[int] = ...) -> None: ...

class CacheMetadata(_message.Message):
    __slots__ = ("repository_id", "scope")
    REPOSITORY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    repository_id: int
    scope: _containers.RepeatedCompositeFieldContainer[CacheScope]
    def __init__(self, repository_id: _Optional[int] = ..., scope: _Optional[_Iterable[_Union[CacheScope, _Mapping]]] = ...) -> None: ...
