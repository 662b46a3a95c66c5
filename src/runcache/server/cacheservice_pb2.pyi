from runcache.server import cachemetadata_pb2 as _cachemetadata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateCacheEntryRequest(_message.Message):
    __slots__ = ("metadata", "key", "version")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    metadata: _cachemetadata_pb2.CacheMetadata
    key: str
    version: str
    def __init__(self, metadata: _Optional[_Union[_cachemetadata_pb2.CacheMetadata, _Mapping]] = ..., key: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class CreateCacheEntryResponse(_message.Message):
    __slots__ = ("ok", "signed_upload_url", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    SIGNED_UPLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    signed_upload_url: str
    message: str
    def __init__(self, ok: _Optional[bool] = ..., signed_upload_url: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FinalizeCacheEntryUploadRequest(_message.Message):
    __slots__ = ("metadata", "key", "size_bytes", "version")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    metadata: _cachemetadata_pb2.CacheMetadata
    key: str
    size_bytes: int
    version: str
    def __init__(self, metadata: _Optional[_Union[_cachemetadata_pb2.CacheMetadata, _Mapping]] = ..., key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class FinalizeCacheEntryUploadResponse(_message.Message):
    __slots__ = ("ok", "entry_id", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    entry_id: int
    message: str
    def __init__(self, ok: _Optional[bool] = ..., entry_id: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GetCacheEntryDownloadURLRequest(_message.Message):
    __slots__ = ("metadata", "key", "restore_keys", "version")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESTORE_KEYS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    metadata: _cachemetadata_pb2.CacheMetadata
    key: str
    restore_keys: _containers.RepeatedScalarFieldContainer[str]
    version: str
    def __init__(self, metadata: _Optional[_Union[_cachemetadata_pb2.CacheMetadata, _Mapping]] = ..., key: _Optional[str] = ..., restore_keys: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ...) -> None: ...

class GetCacheEntryDownloadURLResponse(_message.Message):
    __slots__ = ("ok", "signed_download_url", "matched_key")
    OK_FIELD_NUMBER: _ClassVar[int]
    SIGNED_DOWNLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    MATCHED_KEY_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    signed_download_url: str
    matched_key: str
    def __init__(self, ok: _Optional[bool] = ..., signed_download_url: _Optional[str] = ..., matched_key: _Optional[str] = ...) -> None: ...
