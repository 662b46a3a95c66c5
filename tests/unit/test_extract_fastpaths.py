"""The extractor's per-member shortcuts give exactly what the plain rules give, on random and hostile inputs.

Each shortcut (Adler-32 checksum, normpath skipped for plain names, one-pass pax parsing, buffer reuse in the
reader) exists only for speed; these tests compare it with the plain rule it replaces.
"""

from __future__ import annotations

import io
import os
import random
import struct
import tarfile
from pathlib import Path

import pytest

from runcache.client import extract
from runcache.client.extract import CorruptArchiveError, extract_tar_stream

_SIGNED = struct.Struct("148b8x356b")


def _reference_checksum_ok(hdr: bytes, chksum: int) -> bool:
    return chksum == sum(hdr) - sum(hdr[148:156]) + 256 or chksum == sum(_SIGNED.unpack(hdr)) + 256


def test_the_adler_checksum_is_the_byte_sum() -> None:
    rng = random.Random(7)
    for i in range(3000):
        kind = i % 4
        if kind == 0:
            hdr = bytes([255]) * 512
        elif kind == 1:
            hdr = bytes(rng.randrange(256) for _ in range(512))
        elif kind == 2:
            hdr = bytes(rng.choice((0, 0, 48, 255, 128, 200)) for _ in range(512))
        else:
            hdr = bytes(rng.randrange(128, 256) for _ in range(512))
        unsigned = sum(hdr) - sum(hdr[148:156]) + 256
        signed = sum(_SIGNED.unpack(hdr)) + 256
        for chksum in (unsigned, signed, unsigned + 1, unsigned - 65521, unsigned + 65521, rng.randrange(-1, 1 << 18)):
            assert extract._checksum_ok(hdr, chksum) == _reference_checksum_ok(hdr, chksum), (i, chksum)


@pytest.mark.parametrize("ws", ["/", "/w", "/w/x.y"])
def test_plain_names_skip_normpath_with_the_same_result(ws: str) -> None:
    ex = extract._Extractor(Path(ws), [Path(ws)], extract.DEFAULT_LIMITS)
    parts = ["a", ".", "..", "", ".venv", "b.c", "...", "..a", ".a.", "a..", " ", "x/"]
    rng = random.Random(11)
    names = ["a", "a/", ".venv", ".venv/", "./a", "../a", "a/.", "a/..", "/a", "//a", "a//b", "/", ".", ".."]
    for _ in range(20000):
        name = "/".join(rng.choice(parts) for _ in range(rng.randrange(1, 6)))
        if rng.random() < 0.2:
            name = "/" + name
        if rng.random() < 0.2:
            name += "/"
        names.append(name)
    for name in names:
        if not name:
            continue
        assert ex._lexical(name) == os.path.normpath(os.path.join(ws, name)), name


def _reference_parse_pax(data: bytes) -> dict[bytes, bytes] | None:
    """The parser before the one-pass rewrite (None where it raised)."""
    out: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0 and data.count(0, pos) == end - pos:
            break
        sp = data.find(b" ", pos, min(end, pos + 21))
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            return None
        length = int(digits)
        if length <= sp - pos + 2 or pos + length > end or data[pos + length - 1] != 0x0A:
            return None
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq or not key:
            return None
        out[key] = value
        pos += length
    return out


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def test_pax_parsing_matches_the_reference_on_valid_and_broken_records() -> None:
    rng = random.Random(3)
    keys = [b"path", b"mtime", b"atime", b"linkpath", b"size", b"GNU.sparse.map", b"a=b", b"", b"x y"]
    values = [b"", b"1796319116.054325663", b"a\nb", b"\x00", b"=", b"x" * 300, b" 12 "]
    for i in range(4000):
        data = b"".join(_record(rng.choice(keys), rng.choice(values)) for _ in range(rng.randrange(0, 5)))
        mutation = i % 6
        if mutation == 1 and data:
            k = rng.randrange(len(data))
            data = data[:k] + bytes([rng.randrange(256)]) + data[k + 1 :]
        elif mutation == 2:
            data += bytes(rng.randrange(0, 600))
        elif mutation == 3 and data:
            data = data[: rng.randrange(len(data))]
        elif mutation == 4:
            data += b"\x00" * rng.randrange(1, 30) + b" 5 a=b\n"
        elif mutation == 5:
            data = b"0" * rng.randrange(1, 25) + b" " + data
        expected = _reference_parse_pax(data)
        if expected is None:
            with pytest.raises(CorruptArchiveError):
                extract._parse_pax(data, 0)
        else:
            assert extract._parse_pax(data, 0) == expected, data


class _Dribble(io.RawIOBase):
    """A stream whose reads return a random number of bytes (as decompressors and sockets do)."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data, self._pos, self._rng = data, 0, rng

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        k = min(n if n >= 0 else len(self._data), self._rng.choice((1, 511, 512, 513, 4096, 1 << 20, n)))
        out = self._data[self._pos : self._pos + k]
        self._pos += len(out)
        return out


def _archive(rng: random.Random) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("t", "t/sub", "t/sub/deep"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for i in range(60):
            size = rng.choice((0, 1, 511, 512, 513, 70_000, extract._HANDOFF_MAX, extract._HANDOFF_MAX + 1))
            info = tarfile.TarInfo(rng.choice(("t", "t/sub", "t/sub/deep")) + f"/f{i}-" + "n" * rng.randrange(120))
            info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000.5
            tar.addfile(info, io.BytesIO(bytes(rng.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)))
    return buf.getvalue()


def _tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return out


@pytest.mark.parametrize("writers", [0, 4])
def test_uneven_reads_restore_the_same_tree(tmp_path: Path, writers: int) -> None:
    rng = random.Random(writers)
    for n in range(4):
        data = _archive(rng)
        whole, dribbled = tmp_path / f"whole{n}", tmp_path / f"dribbled{n}"
        whole.mkdir()
        dribbled.mkdir()
        extract_tar_stream(io.BytesIO(data), workspace=whole, allowed_roots=[whole / "t"], writers=writers)
        extract_tar_stream(_Dribble(data, rng), workspace=dribbled, allowed_roots=[dribbled / "t"], writers=writers)  # type: ignore[arg-type]
        assert _tree(whole) == _tree(dribbled)
        assert len(_tree(whole)) == 63
        with pytest.raises(CorruptArchiveError):
            cut = tmp_path / f"cut{n}"
            cut.mkdir()
            extract_tar_stream(
                _Dribble(data[: rng.randrange(512, len(data) - 1024)], rng),  # type: ignore[arg-type]
                workspace=cut,
                allowed_roots=[cut / "t"],
                writers=writers,
            )
        assert not any(cut.iterdir())


@pytest.mark.parametrize("writers", [0, 4])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o777])
def test_files_get_their_archive_mode_whatever_the_umask(tmp_path: Path, writers: int, umask: int) -> None:
    """Files are created with their final mode and chmod-ed only when the umask took bits: same result."""
    buf = io.BytesIO()
    modes = {"t/exec": 0o755, "t/plain": 0o644, "t/private": 0o600, "t/odd": 0o4775, "t/readonly": 0o444}
    big = extract._HANDOFF_MAX + 10  # past the hand-over size: written on the calling thread
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in modes.items():
            for suffix, size in (("", 3), ("-big", big)):
                info = tarfile.TarInfo(name + suffix)
                info.size, info.mode = size, mode
                tar.addfile(info, io.BytesIO(b"x" * size))
    old = os.umask(umask)
    try:
        assert extract._read_umask() == umask
        data = io.BytesIO(buf.getvalue())
        extract_tar_stream(data, workspace=tmp_path, allowed_roots=[tmp_path / "t"], writers=writers)
    finally:
        os.umask(old)
    for name, mode in modes.items():
        for suffix in ("", "-big"):
            assert (tmp_path / (name + suffix)).stat().st_mode & 0o7777 == (mode & 0o755) | 0o600, name + suffix


def test_an_unreadable_umask_means_every_file_is_chmod_ed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("no /proc here")

    monkeypatch.setattr("builtins.open", refuse)
    assert extract._read_umask() == 0o7777
