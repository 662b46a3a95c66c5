"""A tiny offline package index: hand-built pure-Python wheels served as a PEP 503 "simple" index on loopback.

``runcache demo`` (and the tests) use it so the example workflow's ``pip install`` works without the
network and still behaves like PyPI where it matters for caching: pip downloads over HTTP and keeps
the responses in its HTTP cache under ``~/.cache/pip``, which is the folder the workflow caches.
A ``file://`` index or ``--find-links`` folder would leave that cache empty.

Like PyPI it also serves each wheel's core metadata beside it (PEP 658/714: ``<file>.metadata``, announced
by ``data-core-metadata`` with its hash) and ``data-requires-python``: resolvers (pip, uv) read those
instead of downloading whole wheels (or streaming them and hanging up) just to learn their dependencies, so
a resolution against this index costs what it costs against PyPI.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Stand-ins for what the tutorial installs: names, versions and dependencies shaped like the real ones.
STAND_INS: dict[str, tuple[str, list[str]]] = {
    "requests": ("2.32.3", ["charset-normalizer", "idna", "urllib3", "certifi"]),
    "charset-normalizer": ("3.4.0", []),
    "idna": ("3.10", []),
    "urllib3": ("2.2.3", []),
    "certifi": ("2024.8.30", []),
    "flask": ("3.0.3", ["werkzeug", "jinja2", "itsdangerous", "click", "blinker"]),
    "werkzeug": ("3.0.4", ["markupsafe"]),
    "jinja2": ("3.1.4", ["markupsafe"]),
    "markupsafe": ("3.0.1", []),
    "itsdangerous": ("2.2.0", []),
    "click": ("8.1.7", []),
    "blinker": ("1.8.2", []),
    "django": ("5.1.2", ["asgiref", "sqlparse"]),
    "asgiref": ("3.8.1", []),
    "sqlparse": ("0.5.1", []),
}


IMMUTABLE = "max-age=365000000, immutable, public"  # what PyPI sends with its files


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    folder: Path, name: str, version: str, requires: list[str] | None = None, *, padding: int = 20_000
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl``: one module that says what it is, valid metadata and RECORD."""
    dist = re.sub(r"[-_.]+", "_", name)
    module = dist.lower()
    info = f"{dist}-{version}.dist-info"
    filler = hashlib.sha256(name.encode()).hexdigest() * (padding // 64)  # some bytes, so sizes are not all tiny
    files: dict[str, bytes] = {
        f"{module}/__init__.py": (
            f'"""Offline stand-in for {name} {version}, built by runcache for its demo and tests."""\n'
            f'__version__ = "{version}"\n_FILLER = "{filler}"\n'
        ).encode(),
        f"{info}/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {name}\nVersion: {version}\n"
            f"Summary: offline stand-in for {name}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires or [])
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: runcache\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": f"{module}\n".encode(),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_in_zip, data in files.items():
            zf.writestr(name_in_zip, data)
        zf.writestr(f"{info}/RECORD", record)
    return path


def build_stand_ins(folder: Path, names: list[str] | None = None) -> list[Path]:
    wanted = set(STAND_INS if names is None else names)
    return [make_wheel(folder, n, v, deps) for n, (v, deps) in STAND_INS.items() if n in wanted]


class _IndexServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5. uv opens dozens of connections at once: the ones beyond the
    # backlog have their SYN dropped and retry after a second, a stall PyPI never causes.
    request_queue_size = 256


@dataclass(frozen=True)
class WheelFacts:
    """What the index says about one wheel file, read once per file version."""

    sha256: str
    metadata: bytes  # the wheel's .dist-info/METADATA ("core metadata"), b"" when it has none
    requires_python: str


def wheel_facts(path: Path) -> WheelFacts:
    data = path.read_bytes()
    metadata = b""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) == 1:
                metadata = zf.read(names[0])
    except (zipfile.BadZipFile, OSError):
        metadata = b""
    requires = ""
    if metadata:
        from email.parser import BytesHeaderParser

        requires = str(BytesHeaderParser().parsebytes(metadata).get("Requires-Python") or "").strip()
    return WheelFacts(hashlib.sha256(data).hexdigest(), metadata, requires)


@dataclass
class LocalIndex:
    """Serves the wheels in ``folder`` at ``<url>/simple/``; ``with LocalIndex(folder) as index: index.url``."""

    folder: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _facts: dict[tuple[str, int, int], WheelFacts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def facts(self, path: Path) -> WheelFacts:
        """A wheel's hash and metadata, computed once per (name, size, mtime): a page lists every version."""
        st = path.stat()
        key = (path.name, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._facts.get(key)
        if known is None:
            known = wheel_facts(path)
            with self._lock:
                self._facts[key] = known
        return known

    def _anchor(self, wheel: Path) -> str:
        facts = self.facts(wheel)
        attrs = ""
        if facts.requires_python:
            attrs += f' data-requires-python="{html.escape(facts.requires_python)}"'
        if facts.metadata:
            digest = hashlib.sha256(facts.metadata).hexdigest()
            # PEP 714 renamed PEP 658's attribute; PyPI sends both, for resolvers of either age.
            attrs += f' data-dist-info-metadata="sha256={digest}" data-core-metadata="sha256={digest}"'
        name = html.escape(wheel.name)
        return f'<a href="/files/{name}#sha256={facts.sha256}"{attrs}>{name}</a>\n'

    def __enter__(self) -> LocalIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalIndex:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                index.requests.append(self.path)

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, *, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                wheels = sorted(index.folder.glob("*.whl"))
                if path in ("/simple", "/simple/"):
                    names = sorted({normalize(w.name.split("-", 1)[0]) for w in wheels})
                    links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names)
                    return self._send(
                        200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html", body
                    )
                m = re.fullmatch(r"/simple/([^/]+)/?", path)
                if m:
                    project = normalize(m.group(1))
                    files = [w for w in wheels if normalize(w.name.split("-", 1)[0]) == project]
                    if not files:
                        return self._send(404, b"not found\n", "text/plain", body)
                    links = "".join(index._anchor(w) for w in files)
                    page = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
                    return self._send(200, page, "text/html", body, cache="max-age=600, public")
                m = re.fullmatch(r"/files/([^/]+\.whl)\.metadata", path)
                if m and (index.folder / m.group(1)).is_file():
                    metadata = index.facts(index.folder / m.group(1)).metadata
                    if metadata:
                        return self._send(200, metadata, "application/octet-stream", body, cache=IMMUTABLE)
                    return self._send(404, b"not found\n", "text/plain", body)
                m = re.fullmatch(r"/files/([^/]+\.whl)", path)
                if m and (index.folder / m.group(1)).is_file():
                    data = (index.folder / m.group(1)).read_bytes()
                    return self._send(200, data, "application/octet-stream", body, cache=IMMUTABLE)
                return self._send(404, b"not found\n", "text/plain", body)

            def _send(self, status: int, data: bytes, ctype: str, body: bool, cache: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if cache:
                    self.send_header("Cache-Control", cache)
                    self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
                self.end_headers()
                if body:
                    # A client that hung up (a resolver that had read enough) is nothing to report.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(data)

        self._server = _IndexServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="runcache-local-index", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def pip_env(self) -> dict[str, str]:
        """Environment that makes pip use only this index (and no user or site pip configuration)."""
        import os

        return {
            "PIP_INDEX_URL": f"{self.url}/simple/",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_TRUSTED_HOST": "127.0.0.1",
        }


def strip_pip_env(env: dict[str, str]) -> dict[str, str]:
    """Drop the caller's ``PIP_*`` settings (find-links, extra indexes, constraints) before adding ours."""
    return {k: v for k, v in env.items() if not k.startswith("PIP_")}
