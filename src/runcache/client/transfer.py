"""Talking to a cache service over GitHub's protocols (v1 REST or v2 twirp + blob URLs), streaming both ways."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if "httpx" not in sys.modules:
    # httpx's package imports its own command-line tool whenever click, rich and pygments are installed
    # (they are, for the server and the runner): about half of httpx's import time, for a tool this client
    # never runs. A None entry makes that optional import fail, so httpx falls back to its stub `main`;
    # the entry is removed again right after, so nothing else in the process is affected.
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]
else:
    import httpx

if TYPE_CHECKING:
    from concurrent.futures import Future

from runcache.client.archive import rechunk
from runcache.client.interrupt import Interrupted
from runcache.client.pipeline import background

READ_DENIED = "cache read denied:"
WRITE_DENIED = "cache write denied:"
TWIRP = "twirp/github.actions.results.api.v1.CacheService/"
V1_ACCEPT = "application/json;api-version=6.0-preview.1"
CHUNK_SIZE = 32 * 1024 * 1024
UPLOAD_CONCURRENCY = 4
# A chunk goes out in slices so an abandoned save stops its upload threads within one slice.
SEND_SLICE = 1024 * 1024
# Cancelling a reservation is one small request; an interrupted command must not hang on it.
ABANDON_TIMEOUT = 5.0


class CacheServiceError(Exception):
    """The service failed or answered something unusable; the action treats these as warnings."""


class ReadDeniedError(CacheServiceError):
    pass


class WriteDeniedError(CacheServiceError):
    pass


class ReserveConflictError(CacheServiceError):
    """Another job saved or is saving the same key and version."""


class _Abandoned(Exception):
    """Raised inside a request body once the save is given up: that request stops mid-body."""


@dataclass(frozen=True)
class Hit:
    key: str
    url: str


@dataclass
class Download:
    """An open archive download: iterate `chunks`, then `sha256`/`received` describe what arrived."""

    size: int | None
    expected_sha256: str | None
    chunks: Iterator[bytes]
    received: int = 0

    def __post_init__(self) -> None:
        self._digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self._digest.update(chunk)
            self.received += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def verify(self) -> None:
        """The archive must be whole and, when the server recorded one, match its SHA-256."""
        if self.size is not None and self.received != self.size:
            raise CacheServiceError(
                f"Incomplete download. Expected file size: {self.size}, actual file size: {self.received}"
            )
        if self.expected_sha256 and self.sha256 != self.expected_sha256:
            raise CacheServiceError(f"archive SHA-256 {self.sha256} does not match the entry's {self.expected_sha256}")


class _Transport(httpx.BaseTransport):
    """httpx's own transport, with its TLS side built on the first https:// request.

    Building an HTTPS transport loads the CA bundle (~25-50 ms), which a command talking only to a plain
    http:// service would pay for nothing; httpx.Client() does it up front whatever the URL. https://
    requests get exactly httpx's default transport (verification on, its CA bundle, SSL_CERT_* honoured);
    http:// requests go through a transport whose TLS settings can never be used. Proxies from the
    environment are unchanged: httpx mounts them in front of this default transport, as before.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._plain = httpx.HTTPTransport(verify=False, limits=limits)
        self._tls: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def _https(self) -> httpx.HTTPTransport:
        with self._lock:
            if self._tls is None:
                self._tls = httpx.HTTPTransport(verify=True, limits=self._limits)
            return self._tls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return self._plain.handle_request(request)
        return self._https().handle_request(request)

    def close(self) -> None:
        self._plain.close()
        with self._lock:
            if self._tls is not None:
                self._tls.close()


class CacheClient:
    def __init__(self, base_url: str, token: str, protocol: str = "v2", *, timeout: float = 60.0) -> None:
        if protocol not in ("v1", "v2"):
            raise ValueError(f"protocol must be v1 or v2, got {protocol!r}")
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.protocol = protocol
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        # One client (one connection pool) for the service and the blob URLs. The token goes only with the
        # service's own calls: blob URLs carry their own signature and may point at another host.
        self._auth = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"User-Agent": "runcache"},
            transport=_Transport(limits),
        )
        self._blob = self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol calls -------------------------------------------------------------------------
    def _twirp(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = self._http.post(self.base + TWIRP + method, json=body, headers=self._auth)
        except httpx.HTTPError as exc:
            raise CacheServiceError(f"cache service unreachable at {self.base}: {exc}") from exc
        try:
            data = r.json()
        except ValueError:
            raise CacheServiceError(f"{method}: cache service answered {r.status_code} with a non-JSON body") from None
        if r.status_code != 200:
            msg = data.get("msg", "") if isinstance(data, dict) else ""
            if READ_DENIED in msg:
                raise ReadDeniedError(msg)
            raise CacheServiceError(f"Failed to {method}: {r.status_code} {msg}".rstrip())
        return data

    def _v1(self, method: str, resource: str, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": V1_ACCEPT, **self._auth, **kwargs.pop("headers", {})}
        try:
            return self._http.request(method, self.base + "_apis/artifactcache/" + resource, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise CacheServiceError(f"cache service unreachable at {self.base}: {exc}") from exc

    @staticmethod
    def _v1_message(r: httpx.Response) -> str:
        try:
            return str(r.json().get("message", ""))
        except ValueError:
            return r.text[:200]

    def lookup(self, keys: list[str], version: str) -> Hit | None:
        if self.protocol == "v2":
            data = self._twirp(
                "GetCacheEntryDownloadURL", {"key": keys[0], "restore_keys": keys[1:], "version": version}
            )
            if not data.get("ok"):
                return None
            return Hit(
                data.get("matched_key") or data.get("matchedKey") or "",
                data.get("signed_download_url") or data.get("signedDownloadUrl") or "",
            )
        r = self._v1("GET", f"cache?keys={quote(','.join(keys), safe='')}&version={quote(version, safe='')}")
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            msg = self._v1_message(r)
            if READ_DENIED in msg:
                raise ReadDeniedError(msg)
            raise CacheServiceError(f"Cache service responded with {r.status_code}: {msg}".rstrip(": "))
        data = r.json()
        if not data.get("archiveLocation"):
            raise CacheServiceError("Cache not found.")
        return Hit(data.get("cacheKey", ""), data["archiveLocation"])

    def open_download(self, url: str) -> Download:
        request = self._blob.build_request("GET", url)
        try:
            response = self._blob.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise CacheServiceError(f"archive download failed: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise CacheServiceError(f"archive download answered {response.status_code}")
        length = response.headers.get("content-length")
        # The socket is read on its own thread so the network keeps flowing while the consumer extracts.
        chunks = background(response.iter_raw(1024 * 1024), depth=64, name="download", on_exit=response.close)
        return Download(
            int(length) if length and length.isdigit() else None, _recorded_sha256(response.headers), chunks
        )

    def save(
        self, key: str, version: str, stream: Iterable[bytes], progress: Callable[[int], None] | None = None
    ) -> int:
        """Reserve, stream the archive pieces up (any sizes; chunked where the protocol needs it), commit.

        Returns the archive size."""
        if self.protocol == "v2":
            return self._save_v2(key, version, stream, progress)
        return self._save_v1(key, version, stream, progress)

    def _save_v1(self, key: str, version: str, stream: Iterable[bytes], progress: Callable[[int], None] | None) -> int:
        r = self._v1("POST", "caches", json={"key": key, "version": version})
        if r.status_code == 409:
            raise ReserveConflictError(
                f"Unable to reserve cache with key {key}, another job may be creating this "
                f"cache. More details: {self._v1_message(r)}"
            )
        if r.status_code >= 300 or not r.json().get("cacheId"):
            msg = self._v1_message(r)
            if msg.startswith(WRITE_DENIED):
                raise WriteDeniedError(f"Unable to reserve cache with key {key}. More details: {msg}")
            raise CacheServiceError(f"Unable to reserve cache with key {key}: {r.status_code} {msg}")
        cache_id = r.json()["cacheId"]

        def put(offset: int, data: _Chunk) -> None:
            resp = self._v1(
                "PATCH",
                f"caches/{cache_id}",
                content=data,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes {offset}-{offset + len(data) - 1}/*",
                    "Content-Length": str(len(data)),
                },
            )
            if resp.status_code >= 300:
                raise CacheServiceError(f"chunk upload failed: {resp.status_code} {self._v1_message(resp)}")

        with self._abandon_on_failure(key, lambda: self._v1("DELETE", f"caches/{cache_id}", timeout=ABANDON_TIMEOUT)):
            size = _parallel_upload(rechunk(stream, CHUNK_SIZE), put, progress)
            r = self._v1("POST", f"caches/{cache_id}", json={"size": size})
            if r.status_code >= 300:
                raise CacheServiceError(f"commit failed: {r.status_code} {self._v1_message(r)}")
        return size

    def _save_v2(self, key: str, version: str, stream: Iterable[bytes], progress: Callable[[int], None] | None) -> int:
        data = self._twirp("CreateCacheEntry", {"key": key, "version": version})
        if not data.get("ok"):
            msg = data.get("message", "")
            if msg.startswith(WRITE_DENIED):
                raise WriteDeniedError(f"Unable to reserve cache with key {key}. More details: {msg}")
            raise ReserveConflictError(
                f"Unable to reserve cache with key {key}, another job may be creating this cache. {msg}".rstrip()
            )
        url = data.get("signed_upload_url") or data.get("signedUploadUrl")
        # Azure's Delete Blob on the signed URL: the signature proves it is our upload.
        with self._abandon_on_failure(key, lambda: self._blob.delete(url, timeout=ABANDON_TIMEOUT)):
            if not _is_azure(url):
                # A runcache blob URL takes one streamed Put Blob: the server writes and hashes it as it
                # arrives, where staged blocks would cost it a second copy and a second read at commit.
                # Real Azure Storage needs a Content-Length on Put Blob, so it gets blocks below.
                sent = 0

                def body() -> Iterator[bytes]:
                    nonlocal sent
                    for piece in stream:
                        sent += len(piece)
                        yield piece
                        if progress:
                            progress(len(piece))

                self._blob_put(url, body(), {"x-ms-blob-type": "BlockBlob"})
                size = sent
            else:
                size = self._put_blocks(url, rechunk(stream, CHUNK_SIZE), progress)
            fin = self._twirp("FinalizeCacheEntryUpload", {"key": key, "version": version, "size_bytes": str(size)})
            if not fin.get("ok"):
                raise CacheServiceError(f"Unable to finalize cache with key {key}: {fin.get('message', '')}")
        return size

    @contextlib.contextmanager
    def _abandon_on_failure(self, key: str, cancel: Callable[[], httpx.Response]) -> Iterator[None]:
        """Until the commit succeeds, a failure or an interruption gives the reservation back at once;
        otherwise the key stays blocked until the server expires it ("another job may be creating this
        cache"). The server never lets this remove a committed entry."""
        try:
            yield
        except BaseException as exc:
            outcome = _abandon(cancel)  # a second Ctrl-C in here ends the wait: the server expires it later
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
                raise Interrupted(f"the upload of key {key} {outcome}") from exc
            raise

    def _put_blocks(self, url: str, chunks: Iterator[bytes], progress: Callable[[int], None] | None) -> int:
        """What the Azure SDK does: one Put Blob when it fits a chunk, else parallel Put Block + Put Block List.

        The blob gets the archive's SHA-256 as metadata `sha256` (with the request that makes it exist), as
        the blobs runcache writes itself have it: every download, straight from the storage (x-ms-meta-sha256)
        or through a runcache server (which records it at finalize), is then checked against it."""
        whole = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            # Read in order on this thread (the upload threads only send), so the digest is the archive's.
            for chunk in chunks:
                whole.update(chunk)
                yield chunk

        ordered = hashed()
        first = next(ordered, b"")
        second = next(ordered, None)
        if second is None:
            self._blob_put(url, first, {"x-ms-blob-type": "BlockBlob", "x-ms-meta-sha256": whole.hexdigest()})
            if progress:
                progress(len(first))
            return len(first)
        import base64
        import uuid

        prefix = uuid.uuid4().hex

        def block_id(index: int) -> str:
            return base64.b64encode(f"{prefix}{index:012d}".encode()).decode()

        def put(offset: int, body: _Chunk) -> None:
            self._blob_put(
                f"{url}&comp=block&blockid={quote(block_id(offset // CHUNK_SIZE), safe='')}",
                body,
                {"Content-Length": str(len(body))},
            )

        size = _parallel_upload(itertools.chain((first, second), ordered), put, progress, expect_full_chunks=True)
        listed = "".join(f"<Latest>{block_id(i)}</Latest>" for i in range((size + CHUNK_SIZE - 1) // CHUNK_SIZE))
        xml = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listed}</BlockList>'
        headers = {"Content-Type": "application/xml", "x-ms-meta-sha256": whole.hexdigest()}
        self._blob_put(f"{url}&comp=blocklist", xml.encode(), headers)
        return size

    def _blob_put(self, url: str, body: bytes | Iterable[bytes], headers: dict[str, str]) -> None:
        try:
            r = self._blob.put(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CacheServiceError(f"blob upload failed: {exc}") from exc
        if r.status_code >= 300:
            raise CacheServiceError(f"blob upload answered {r.status_code}: {r.text[:300]}")


def _recorded_sha256(headers: httpx.Headers) -> str | None:
    """The archive's SHA-256 as its store recorded it: runcache's blob endpoint and Azure send blob metadata
    as x-ms-meta-*, an S3 presigned download (`serve --downloads direct`) the object's as x-amz-meta-*."""
    return headers.get("x-ms-meta-sha256") or headers.get("x-amz-meta-sha256")


def _is_azure(url: str) -> bool:
    """Azure Blob Storage itself (any endpoint: Azurite, a private endpoint, another cloud), not runcache's own
    blob routes: its SAS names a storage service version (`sv`), which runcache's signed URLs never carry."""
    parsed = httpx.URL(url)
    return (parsed.host or "").endswith(".blob.core.windows.net") or "sv" in parsed.params


def _abandon(cancel: Callable[[], httpx.Response]) -> str:
    """Cancel a reservation, best effort; what became of it, in words."""
    try:
        r = cancel()
    except (httpx.HTTPError, CacheServiceError) as exc:
        return f"could not be cancelled ({exc}); the server frees the key once the upload expires"
    if r.is_success:
        return "was cancelled"
    if r.status_code == 404:
        return "was already finished or removed on the server"
    if r.status_code == 409:
        return "was not cancelled: the server is already committing it"
    return f"could not be cancelled (HTTP {r.status_code}); the server frees the key once the upload expires"


class _Chunk:
    """One chunk as a request body that stops mid-way once the save is given up, so an upload thread
    ends within one slice instead of sending the rest of a 32 MiB chunk after Ctrl-C."""

    def __init__(self, data: bytes, cancel: threading.Event) -> None:
        self.data = data
        self._cancel = cancel

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), SEND_SLICE):
            if self._cancel.is_set():
                raise _Abandoned("the save was given up")
            yield self.data[start : start + SEND_SLICE]


def _parallel_upload(
    chunks: Iterable[bytes],
    put: Callable[[int, _Chunk], None],
    progress: Callable[[int], None] | None,
    expect_full_chunks: bool = False,
) -> int:
    """Upload chunks at their offsets with a bounded number in flight, while the producer keeps producing.

    On any failure (or Ctrl-C) the chunks still being sent stop at their next slice, so leaving the pool
    (which waits for its threads) is prompt."""
    offset = 0
    # Imported here: only saves upload in parallel, and a restore's start-up should not pay for the pool.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pending: set[Future[None]] = set()
    cancel = threading.Event()
    with ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="upload") as pool:
        try:
            for chunk in chunks:
                if expect_full_chunks and offset % CHUNK_SIZE:
                    raise CacheServiceError("internal error: a short chunk was not the last one")
                if len(pending) >= UPLOAD_CONCURRENCY:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                fut = pool.submit(put, offset, _Chunk(chunk, cancel))
                if progress:
                    n = len(chunk)
                    # A cancelled future has no exception to ask for: exception() would raise in the callback.
                    fut.add_done_callback(lambda f, n=n: not f.cancelled() and f.exception() is None and progress(n))
                pending.add(fut)
                offset += len(chunk)
            for f in pending:
                f.result()
        except BaseException:
            cancel.set()
            for f in pending:
                f.cancel()
            raise
    return offset
