"""The loopback package index behaves like PyPI where resolvers look: core metadata beside each wheel (PEP 658/714)
and data-requires-python, so pip and uv resolve from metadata files instead of downloading whole wheels."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from runcache.runner.wheelhouse import LocalIndex, build_stand_ins


def _wheel_with_requires_python(folder: Path) -> Path:
    path = folder / "strict_py-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("strict_py/__init__.py", "")
        zf.writestr(
            "strict_py-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: strict-py\nVersion: 1.0\nRequires-Python: >=3.9,<4\n",
        )
        zf.writestr("strict_py-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("strict_py-1.0.dist-info/RECORD", "")
    return path


def test_pages_announce_core_metadata_with_its_hash_and_serve_it(tmp_path: Path) -> None:
    build_stand_ins(tmp_path, ["flask", "werkzeug", "markupsafe"])
    strict = _wheel_with_requires_python(tmp_path)
    with LocalIndex(tmp_path) as index:
        page = httpx.get(f"{index.url}/simple/flask/").text
        anchor = re.search(r'<a href="/files/(flask-[^"#]+)#sha256=([0-9a-f]{64})"([^>]*)>', page)
        assert anchor, page
        wheel, digest, attrs = anchor.groups()
        assert digest == hashlib.sha256((tmp_path / wheel).read_bytes()).hexdigest()
        meta = re.search(r'data-core-metadata="sha256=([0-9a-f]{64})"', attrs)
        assert meta and f'data-dist-info-metadata="sha256={meta.group(1)}"' in attrs
        served = httpx.get(f"{index.url}/files/{wheel}.metadata")
        assert served.status_code == 200
        assert hashlib.sha256(served.content).hexdigest() == meta.group(1)
        with zipfile.ZipFile(tmp_path / wheel) as zf:
            assert served.content == zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
        assert 'data-requires-python="&gt;=3.9,&lt;4"' in httpx.get(f"{index.url}/simple/strict-py/").text
        assert httpx.get(f"{index.url}/files/{strict.name}.metadata").text.endswith("Requires-Python: >=3.9,<4\n")
        assert httpx.get(f"{index.url}/files/nothing-1.0-py3-none-any.whl.metadata").status_code == 404
        assert httpx.get(f"{index.url}/files/{wheel}").content == (tmp_path / wheel).read_bytes()


def test_resolvers_read_metadata_files_not_wheels(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_stand_ins(wheels)
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    assert uv, "uv is a dev dependency (scripts/setup --dev)"
    with LocalIndex(wheels) as index:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))},
            **index.pip_env(),
            "UV_INDEX_URL": f"{index.url}/simple/",
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
            "UV_NO_CONFIG": "1",
            "PIP_NO_CACHE_DIR": "1",
        }
        (tmp_path / "req.in").write_text("flask\nrequests\n")
        subprocess.run(
            [uv, "pip", "compile", str(tmp_path / "req.in"), "--python", sys.executable, "--quiet"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
             str(tmp_path / "report.json"), "-r", str(tmp_path / "req.in")],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        fetched = [p for p in index.requests if "/files/" in p]
    assert any(p.endswith(".whl.metadata") for p in fetched), fetched
    assert not [p for p in fetched if p.endswith(".whl")], fetched


def test_the_index_listens_with_a_backlog_for_a_resolvers_burst_of_connections(tmp_path: Path) -> None:
    # uv opens dozens of connections at once; socketserver's default backlog of 5 dropped the rest's SYNs,
    # and each of those waited a second for its retry (a cold `uv pip compile` took 1.2 s instead of 0.2 s).
    build_stand_ins(tmp_path, ["flask"])
    with LocalIndex(tmp_path) as index:
        port = index.url.rsplit(":", 1)[1]
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.split()
    assert out and out[0] == "LISTEN", out
    assert int(out[2]) >= 128, f"listen backlog {out[2]}"
