"""Talking to a cache service over GitHub's protocols (v1 REST or v2 twirp + blob URLs), streaming both ways."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
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

from runcache.client.archive import READ_SIZE, rechunk
from runcache.client.config import DEFAULT_DOWNLOAD_BUFFER
from runcache.client.interrupt import Interrupted, signals_held
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
# Upload threads stop within one slice once the save is given up; the bound is for a send the kernel never
# returns from (a peer that stopped reading): the command ends anyway and the thread dies with it.
UPLOAD_JOIN_SECONDS = 30.0
HTTPCORE_READ = 64 * 1024  # httpcore's own socket read size (HTTP11Connection.READ_NUM_BYTES)
SOCKET_READ = READ_SIZE  # what a download asks the socket for at once instead
DOWNLOAD_PIECE = READ_SIZE  # the most the download thread hands over at once
STREAM_DEPTH = 8  # archive pieces (about 1 MiB each) handed to a streamed Put Blob and not yet sent
T = TypeVar("T")


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


class _Hashed:
    """The socket's reads joined into pieces of up to DOWNLOAD_PIECE bytes, hashed as they pass.

    Iterated on the download thread: SHA-256 (hashlib releases the GIL) then runs beside decompression
    instead of before it on the decompress thread. httpx's own `iter_raw(chunk_size)` would copy every
    byte three times (into a BytesIO, out of it, into slices); one join here is all it takes. Pieces stay
    within the decompressor's read size (archive.READ_SIZE), so its reads take each one whole, uncopied."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = pieces
        self.digest = hashlib.sha256()
        self.hashed = 0

    def __iter__(self) -> Iterator[bytes]:
        parts: list[bytes] = []
        have = 0
        for piece in self._pieces:
            if parts and have + len(piece) > DOWNLOAD_PIECE:
                yield self._hash(parts[0] if len(parts) == 1 else b"".join(parts))
                parts, have = [], 0
            parts.append(piece)
            have += len(piece)
        if parts:
            yield self._hash(parts[0] if len(parts) == 1 else b"".join(parts))

    def _hash(self, chunk: bytes) -> bytes:
        self.digest.update(chunk)
        self.hashed += len(chunk)
        return chunk


@dataclass
class Download:
    """An open archive download: iterate it, then `sha256`/`received` describe what arrived."""

    size: int | None
    expected_sha256: str | None
    chunks: Iterator[bytes]
    hashed: _Hashed
    received: int = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.received += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self.hashed.digest.hexdigest()

    def verify(self) -> None:
        """The archive must be whole and, when the server recorded one, match its SHA-256."""
        if self.size is not None and self.received != self.size:
            raise CacheServiceError(
                f"Incomplete download. Expected file size: {self.size}, actual file size: {self.received}"
            )
        if self.hashed.hashed != self.received:
            # The download thread hashes ahead of what was taken: a digest of bytes the archive reader
            # never saw proves nothing about what it extracted.
            raise CacheServiceError(f"Incomplete download: {self.received} bytes read of {self.hashed.hashed} received")
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


def _read_sockets_in_larger_pieces() -> None:
    """httpcore reads a plain socket 64 KiB at a time, and every read is an h11 event parsed in Python while
    holding the GIL: for a 90 MB archive about 1400 of them, which took the download thread 0.28 s of CPU
    against 0.16 s with 1 MiB reads (the extraction waits on that thread's GIL time). httpcore has no option
    for it, so its class constant is raised, only while it still has the value this was measured against
    (TLS sockets return one 16 KiB record per read either way). Reads return what has arrived, so a small
    response is not delayed."""
    from httpcore._sync import http11

    if getattr(http11.HTTP11Connection, "READ_NUM_BYTES", None) == HTTPCORE_READ:
        http11.HTTP11Connection.READ_NUM_BYTES = SOCKET_READ


class CacheClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        protocol: str = "v2",
        *,
        timeout: float = 60.0,
        download_buffer: int = DEFAULT_DOWNLOAD_BUFFER,
    ) -> None:
        """`download_buffer`: bytes a download may read ahead of the extraction (runcache.client.config)."""
        if protocol not in ("v1", "v2"):
            raise ValueError(f"protocol must be v1 or v2, got {protocol!r}")
        if download_buffer < DOWNLOAD_PIECE:
            raise ValueError(f"download_buffer must be at least {DOWNLOAD_PIECE} bytes, got {download_buffer}")
        self._download_depth = download_buffer // DOWNLOAD_PIECE
        _read_sockets_in_larger_pieces()
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
        hashed = _Hashed(response.iter_raw())
        # The socket is read on its own thread so the network keeps flowing while the consumer extracts, up
        # to the download buffer ahead of it (pieces are at most DOWNLOAD_PIECE bytes).
        chunks = background(hashed, depth=self._download_depth, name="download", on_exit=response.close)
        return Download(
            int(length) if length and length.isdigit() else None, _recorded_sha256(response.headers), chunks, hashed
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
        def release(calls: list[_Call[Any]]) -> httpx.Response | None:
            r = _answer(calls)
            cache_id = r.json().get("cacheId") if r is not None and r.status_code < 300 else None
            if not cache_id:
                return None
            return self._v1("DELETE", f"caches/{cache_id}", timeout=ABANDON_TIMEOUT)

        with self._abandon_on_failure(key, release) as calls:
            r = _Call(lambda: self._v1("POST", "caches", json={"key": key, "version": version}), calls).result()
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

            size = _parallel_upload(rechunk(stream, CHUNK_SIZE), put, progress)
            r = _Call(lambda: self._v1("POST", f"caches/{cache_id}", json={"size": size}), calls).result()
            if r.status_code >= 300:
                raise CacheServiceError(f"commit failed: {r.status_code} {self._v1_message(r)}")
        return size

    def _save_v2(self, key: str, version: str, stream: Iterable[bytes], progress: Callable[[int], None] | None) -> int:
        def release(calls: list[_Call[Any]]) -> httpx.Response | None:
            data = _answer(calls)
            url = data.get("signed_upload_url") or data.get("signedUploadUrl") if data and data.get("ok") else None
            # Azure's Delete Blob on the signed URL: the signature proves it is our upload.
            return self._blob.delete(url, timeout=ABANDON_TIMEOUT) if url else None

        with self._abandon_on_failure(key, release) as calls:
            reserve = {"key": key, "version": version}
            data = _Call(lambda: self._twirp("CreateCacheEntry", reserve), calls).result()
            if not data.get("ok"):
                msg = data.get("message", "")
                if msg.startswith(WRITE_DENIED):
                    raise WriteDeniedError(f"Unable to reserve cache with key {key}. More details: {msg}")
                raise ReserveConflictError(
                    f"Unable to reserve cache with key {key}, another job may be creating this cache. {msg}".rstrip()
                )
            url = data.get("signed_upload_url") or data.get("signedUploadUrl")
            if not _is_azure(url):
                # A runcache blob URL takes one streamed Put Blob: the server writes and hashes it as it
                # arrives, where staged blocks would cost it a second copy and a second read at commit.
                # Real Azure Storage needs a Content-Length on Put Blob, so it gets blocks below.
                headers = {"x-ms-blob-type": "BlockBlob"}
                size = _streamed_upload(stream, lambda body: self._blob_put(url, body, headers), progress, calls)
            else:
                size = self._put_blocks(url, rechunk(stream, CHUNK_SIZE), progress, calls)
            done = {"key": key, "version": version, "size_bytes": str(size)}
            fin = _Call(lambda: self._twirp("FinalizeCacheEntryUpload", done), calls).result()
            if not fin.get("ok"):
                raise CacheServiceError(f"Unable to finalize cache with key {key}: {fin.get('message', '')}")
        return size

    @contextlib.contextmanager
    def _abandon_on_failure(
        self, key: str, release: Callable[[list[_Call[Any]]], httpx.Response | None]
    ) -> Iterator[list[_Call[Any]]]:
        """Until the commit succeeds, a failure or an interruption gives the reservation back at once;
        otherwise the key stays blocked until the server expires it ("another job may be creating this
        cache"). The server never lets this remove a committed entry.

        Every request of the save runs on a thread of its own (`_Call`, listed in the list yielded, the
        reservation first), so that `release` can still learn the reservation's answer when the interrupt
        came while it was on its way, and so that the main thread never holds httpcore's pool locks: an
        interrupt inside one of their Python-level __enter__ would keep it taken, and the release, every
        upload thread and the client's close() would then wait for it forever."""
        calls: list[_Call[Any]] = []
        try:
            yield calls
        except BaseException as exc:
            outcome = _abandon(lambda: release(calls), calls)  # a second Ctrl-C in here ends the wait
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
                raise Interrupted(f"the upload of key {key} {outcome}") from exc
            raise
        finally:
            for call in calls:
                call.join(ABANDON_TIMEOUT)

    def _put_blocks(
        self, url: str, chunks: Iterator[bytes], progress: Callable[[int], None] | None, calls: list[_Call[Any]]
    ) -> int:
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
            headers = {"x-ms-blob-type": "BlockBlob", "x-ms-meta-sha256": whole.hexdigest()}
            _Call(lambda: self._blob_put(url, first, headers), calls).result()
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
        _Call(lambda: self._blob_put(f"{url}&comp=blocklist", xml.encode(), headers), calls).result()
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


def _answer(calls: list[_Call[Any]]) -> Any:
    """The reservation's answer (the first request of a save), waiting a moment if it is still on its way;
    None when there was none or it failed (then there is nothing to give back)."""
    if not calls:
        return None
    try:
        return calls[0].result(ABANDON_TIMEOUT)
    except queue.Empty:
        raise CacheServiceError("the reservation was not answered in time") from None
    except Exception:
        return None


def _abandon(release: Callable[[], httpx.Response | None], calls: list[_Call[Any]]) -> str:
    """Cancel a reservation, best effort and bounded; what became of it, in words."""
    try:
        # At most two requests: the reservation's answer and the cancel, each bounded by ABANDON_TIMEOUT.
        r = _Call(release, calls).result(2 * ABANDON_TIMEOUT + 1)
    except queue.Empty:
        return "could not be cancelled in time; the server frees the key once the upload expires"
    except Exception as exc:  # best effort: whatever went wrong, the interrupted command still ends
        return f"could not be cancelled ({exc}); the server frees the key once the upload expires"
    if r is None:
        return "was not reserved"
    if r.is_success:
        return "was cancelled"
    if r.status_code == 404:
        return "was already finished or removed on the server"
    if r.status_code == 409:
        return "was not cancelled: the server is already committing it"
    return f"could not be cancelled (HTTP {r.status_code}); the server frees the key once the upload expires"


class _Stop:
    """Set once by the main thread (or by the first upload thread that fails) with one attribute store:
    threading.Event.set would take a Condition's lock on the main thread (see _Uploads)."""

    def __init__(self) -> None:
        self.stopped = False


class _Call(Generic[T]):
    """`fn()` on a thread of its own; the main thread waits for its outcome on a SimpleQueue.

    The thread is started with signals held (Thread.start() waits on a Condition) and added to `calls` in
    the same breath, so whoever cleans up knows every thread there is. The outcome is stored before the
    wake-up is queued: an interrupt just after the main thread took the wake-up loses nothing."""

    def __init__(self, fn: Callable[[], T], calls: list[_Call[Any]], name: str = "runcache-request") -> None:
        self._woken: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._outcome: tuple[bool, Any] | None = None

        def run() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # raised on the waiting thread
                outcome = (False, exc)
            self._outcome = outcome
            self._woken.put(None)

        with signals_held():
            self._thread = threading.Thread(target=run, name=name, daemon=True)
            self._thread.start()
            calls.append(self)

    def done(self) -> bool:
        return self._outcome is not None

    def result(self, timeout: float | None = None) -> T:
        """`fn`'s value, or its exception raised here; queue.Empty when `timeout` passes first."""
        if self._outcome is None:
            self._woken.get(timeout=timeout)
        assert self._outcome is not None
        ok, value = self._outcome
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class _Chunk:
    """One chunk as a request body that stops mid-way once the save is given up, so an upload thread
    ends within one slice instead of sending the rest of a 32 MiB chunk after Ctrl-C."""

    def __init__(self, data: bytes, stop: _Stop) -> None:
        self.data = data
        self._stop = stop

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), SEND_SLICE):
            if self._stop.stopped:
                raise _Abandoned("the save was given up")
            yield self.data[start : start + SEND_SLICE]


class _Uploads:
    """Chunks sent by up to UPLOAD_CONCURRENCY threads, at most that many handed over and not yet sent.

    Why not concurrent.futures: the main thread, where SIGINT/SIGTERM raise KeyboardInterrupt between any
    two bytecodes, would take Future and Semaphore Conditions (submit, wait, result, cancel) and start
    threads unprotected. An interrupt inside Condition.__enter__ right after it took its lock keeps that
    lock taken; an upload thread finishing its Future then blocks on it, and the pool's shutdown joins
    that thread forever (a test injecting an interrupt at every bytecode hung so). Here both directions
    are SimpleQueues, whose put/get happen whole or not at all, the in-flight count belongs to the main
    thread alone, threads start with signals held, and joins are bounded."""

    def __init__(self, put: Callable[[int, _Chunk], None], progress: Callable[[int], None] | None) -> None:
        self._put = put
        self._progress = progress
        self._work: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._failures: list[BaseException] = []  # appended by upload threads; the first is raised
        self._stop = _Stop()
        self._threads: list[threading.Thread] = []
        self._inflight = 0  # main thread only

    def add(self, offset: int, chunk: bytes) -> None:
        while self._inflight >= UPLOAD_CONCURRENCY:
            self._done.get()
            self._inflight -= 1
        self._raise()
        if len(self._threads) < min(UPLOAD_CONCURRENCY, self._inflight + 1):
            with signals_held():
                t = threading.Thread(target=self._run, name=f"upload-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)
        self._inflight += 1
        self._work.put((offset, chunk))

    def settle(self) -> None:
        """Return once every chunk handed over is sent; raise the first failure."""
        while self._inflight:
            self._done.get()
            self._inflight -= 1
        self._raise()

    def _raise(self) -> None:
        if self._failures:
            raise self._failures[0]

    def close(self) -> None:
        """Stop: chunks not yet sent are dropped, those being sent stop at their next slice. Idempotent."""
        with signals_held():
            self._stop.stopped = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._work.put(None)
        for t in threads:
            t.join(UPLOAD_JOIN_SECONDS)

    def _run(self) -> None:
        while (job := self._work.get()) is not None:
            offset, data = job
            try:
                if not self._stop.stopped:
                    self._put(offset, _Chunk(data, self._stop))
                    if self._progress:
                        self._progress(len(data))
            except BaseException as exc:  # raised on the main thread at its next hand-over
                self._failures.append(exc)
                self._stop.stopped = True  # the other threads stop too
            finally:
                self._done.put(None)


def _parallel_upload(
    chunks: Iterable[bytes],
    put: Callable[[int, _Chunk], None],
    progress: Callable[[int], None] | None,
    expect_full_chunks: bool = False,
) -> int:
    """Upload chunks at their offsets with a bounded number in flight, while the producer keeps producing.

    On any failure (or Ctrl-C) the chunks still being sent stop at their next slice."""
    uploads = _Uploads(put, progress)
    try:
        try:
            offset = 0
            for chunk in chunks:
                if expect_full_chunks and offset % CHUNK_SIZE:
                    raise CacheServiceError("internal error: a short chunk was not the last one")
                uploads.add(offset, chunk)
                offset += len(chunk)
            uploads.settle()
            return offset
        finally:
            uploads.close()
    finally:
        # Again: an interrupt can land in the first close() before it holds signals, and the upload
        # threads would then wait for work forever. A second close() has nothing left to do.
        uploads.close()


def _streamed_upload(
    pieces: Iterable[bytes],
    send: Callable[[Iterator[bytes]], None],
    progress: Callable[[int], None] | None,
    calls: list[_Call[Any]],
) -> int:
    """One request whose body is `pieces`: sent by a thread of its own (see `_abandon_on_failure` for why
    not this one), read from the archive here. Returns the bytes sent.

    The pieces go over in a SimpleQueue, `slots` holding one token per free place (as in
    pipeline.background). Once stopped, the body raises at its next piece, so the request ends."""
    stop = _Stop()
    items: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    slots: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(STREAM_DEPTH):
        slots.put(None)

    def body() -> Iterator[bytes]:
        while not stop.stopped:
            try:
                piece = items.get(timeout=0.2)
            except queue.Empty:
                continue
            if piece is None:
                return
            if not piece:  # the wake-up sent on stopping (empty pieces are not handed over)
                continue
            slots.put(None)
            yield piece
            if progress:
                progress(len(piece))
        raise _Abandoned("the save was given up")

    try:
        try:
            sender = _Call(lambda: send(body()), calls, name="runcache-upload")
            sent = 0
            for piece in pieces:
                if not piece:
                    continue
                while True:
                    try:
                        slots.get(timeout=0.2)
                        break
                    except queue.Empty:
                        if sender.done():  # the request ended early: its error, else a short body
                            sender.result()
                            raise CacheServiceError("blob upload ended before the archive did") from None
                items.put(piece)
                sent += len(piece)
            items.put(None)
            sender.result()
            return sent
        finally:
            _stop_sending(stop, items)  # after a complete upload the sender has already returned
    finally:
        _stop_sending(stop, items)  # again: an interrupt may have landed in the first


def _stop_sending(stop: _Stop, items: queue.SimpleQueue[bytes | None]) -> None:
    stop.stopped = True
    items.put(b"")  # the sender sees `stopped` now, not at its next timeout
