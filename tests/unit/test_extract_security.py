"""Hostile archives against the restore extractor: spec security-and-neighbours.md §3.5, cases C1-C14.

Every refusal test checks (a) the exception, (b) that nothing changed anywhere under tmp_path, which holds the
sentinel `outside/` directory, the fake HOME with the workspace and the destination (names, types, modes,
contents and link targets, so no new or dangling symlink either), and (c) that no staging directory is left.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from runcache.client.extract import (
    CorruptArchiveError,
    ExtractLimits,
    ExtractReport,
    UnsafeArchiveError,
    extract_tar_stream,
)

Member = tuple[tarfile.TarInfo, bytes | None]


# ----------------------------------------------------------------------------------------------- archive building


def F(name: str, data: bytes = b"data", mode: int = 0o644, mtime: float = 1_700_000_000, **kw: object) -> Member:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, mtime
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def D(name: str, mode: int = 0o755) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 1_700_000_000
    return ti, None


def L(name: str, target: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
    return ti, None


def H(name: str, target: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.LNKTYPE, target
    return ti, None


def T(name: str, typeflag: bytes, data: bytes = b"") -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size = typeflag, len(data)
    return ti, data or None


def make_tar(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def header(name: bytes, size: int = 0, typeflag: bytes = b"0", size_field: bytes | None = None) -> bytes:
    """A raw ustar header with a correct checksum, for malformed-stream tests."""
    ti = tarfile.TarInfo("x")
    ti.size = 0
    block = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    block[0:100] = name.ljust(100, b"\0")[:100]
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[156:157] = typeflag
    return fix_checksum(block)


def fix_checksum(block: bytearray | bytes) -> bytes:
    block = bytearray(block)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax_member(records: bytes, then: Member | None = None) -> bytes:
    """An 'x' header carrying `records` verbatim, then a member (default: an empty regular file)."""
    info, data = then or F("dest/after", b"")
    body = header(b"PaxHeaders/x", len(records), b"x") + records + bytes(-len(records) % 512)
    return body + make_tar((info, data), fmt=tarfile.USTAR_FORMAT)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def zstd_reader(data: bytes) -> io.RawIOBase:
    return zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(io.BytesIO(data), read_size=1 << 20)


def gnu_tar(ws: Path, *paths: str) -> bytes:
    """The stream @actions/cache writes: `tar --posix -cf - -P -C $GITHUB_WORKSPACE --files-from manifest`."""
    tar = shutil.which("gtar") or shutil.which("tar")
    if not tar or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True).stdout:
        pytest.skip("GNU tar is not available")
    return subprocess.run(
        [tar, "--posix", "-cf", "-", "-P", "-C", str(ws), *paths], check=True, capture_output=True
    ).stdout


# ----------------------------------------------------------------------------------------------- fixtures


def snapshot(top: Path, mtimes: bool = False) -> dict[str, tuple[object, ...]]:
    """names, types, modes, contents and link targets of everything under `top` (symlinks never followed)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, top)
            extra = (st.st_mtime_ns,) if mtimes and not stat.S_ISDIR(st.st_mode) else ()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), *extra)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), Path(p).read_bytes(), *extra)
            else:
                out[rel] = ("other", st.st_mode)
    return out


@dataclass
class Env:
    tmp: Path
    home: Path
    ws: Path
    dest: Path  # declared path `dest` (workspace-relative)
    pip: Path  # declared path `~/.cache/pip`
    outside: Path  # sentinel: nothing may ever change here

    @property
    def roots(self) -> list[Path]:
        return [self.dest, self.pip]

    def extract(self, data: bytes | io.RawIOBase, **kw: object) -> ExtractReport:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        kw.setdefault("allowed_roots", self.roots)
        return extract_tar_stream(stream, workspace=self.ws, **kw)  # type: ignore[arg-type]

    def refuse(self, data: bytes | io.RawIOBase, exc: type[BaseException], match: str, **kw: object) -> None:
        before = snapshot(self.tmp)
        with pytest.raises(exc, match=match):
            self.extract(data, **kw)
        after = snapshot(self.tmp)
        assert after == before, f"changed: {sorted(set(after.items()) ^ set(before.items()))}"
        assert (self.outside / "secret.txt").read_bytes() == b"secret"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    home = tmp_path / "home"
    ws = home / "work" / "repo"
    dest = ws / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_bytes(b"ssh-ed25519 AAAA owner")
    (home / ".bashrc").write_bytes(b"# bashrc")
    (dest / "sub").mkdir(parents=True)
    (dest / "keep.txt").write_bytes(b"keep")
    (dest / "sub" / "old.txt").write_bytes(b"old")
    os.symlink("keep.txt", dest / "lnk_in")
    return Env(tmp_path, home, ws, dest, home / ".cache" / "pip", outside)


# ----------------------------------------------------------------------------------------------- C1 .. C14


@pytest.mark.parametrize(
    "name",
    ["../../.bashrc", "../../../outside/secret.txt", "dest/../../../../outside/new.txt", "dest/../sibling.txt"],
)
def test_c1_dotdot_member_is_refused_and_nothing_is_written(env: Env, name: str) -> None:
    data = make_tar(F("dest/first.txt", b"staged first"), F("dest/keep.txt", b"replaced"), F(name, b"pwned"))
    env.refuse(data, UnsafeArchiveError, "outside the declared paths")


def test_c2_absolute_member_outside_declared_paths_is_refused(env: Env) -> None:
    for target in (env.home / ".ssh" / "authorized_keys", env.home / "work" / "_actions" / "x" / "y" / "action.yml"):
        data = make_tar(F("dest/ok.txt"), F(str(target), b"attacker"))
        env.refuse(data, UnsafeArchiveError, "outside the declared paths")


def test_c2_members_mapping_to_declared_paths_are_accepted(env: Env) -> None:
    data = make_tar(F("../../.cache/pip/http/a/b", b"wheel"), F(str(env.dest / "abs.txt"), b"abs"), F("dest/rel.txt"))
    report = env.extract(data)
    assert (env.pip / "http" / "a" / "b").read_bytes() == b"wheel"
    assert (env.dest / "abs.txt").read_bytes() == b"abs"
    assert report.files == 3


@pytest.mark.parametrize(
    "link",
    ["/outside-abs", "../../../../outside", "../..", "../../../../outside/secret.txt/.."],
)
def test_c3_write_through_symlink_member_is_refused(env: Env, link: str) -> None:
    link = str(env.outside) if link == "/outside-abs" else link
    data = make_tar(F("dest/ok.txt"), L("dest/lnk", link), F("dest/lnk/pwn.txt", b"pwned"))
    env.refuse(data, UnsafeArchiveError, "written through")


def test_c3_write_through_symlink_directory_member_is_refused(env: Env) -> None:
    data = make_tar(L("dest/lnk", str(env.outside)), D("dest/lnk/newdir/"))
    env.refuse(data, UnsafeArchiveError, "absolute symlink")


@pytest.mark.parametrize("link", ["/OUTSIDE", "..", "."])
def test_c3_symlink_member_at_the_declared_path_itself_is_not_written_through(env: Env, link: str) -> None:
    link = str(env.outside) if link == "/OUTSIDE" else link
    data = make_tar(L("newroot", link), F("newroot/secret.txt", b"pwned"))
    env.refuse(data, UnsafeArchiveError, "written through", allowed_roots=[env.ws / "newroot"])


def test_c4_preexisting_symlink_in_destination_is_not_followed(env: Env) -> None:
    os.symlink("../../../../outside", env.dest / "x")  # planted by the job
    os.symlink(str(env.outside), env.dest / "y")
    for member in ("dest/x/authorized_keys", "dest/y/authorized_keys"):
        data = make_tar(F("dest/keep.txt", b"replaced"), F("dest/new.txt"), F(member, b"attacker key"))
        env.refuse(data, UnsafeArchiveError, "existing symlink")
    env.refuse(make_tar(D("dest/x/")), UnsafeArchiveError, "existing symlink")


def test_c4_two_step_restore_cve_2025_45582(env: Env) -> None:
    # Step 1 is a legal archive: a leaf symlink may point anywhere (this is how a venv's interpreter link looks).
    env.extract(make_tar(L("dest/x", "../../../../outside")))
    assert os.readlink(env.dest / "x") == "../../../../outside"
    # Step 2 writes through it: refused before anything moves.
    data = make_tar(F("dest/keep.txt", b"replaced"), F("dest/x/authorized_keys", b"attacker key"))
    env.refuse(data, UnsafeArchiveError, "existing symlink")


def test_c4_declared_root_that_is_a_symlink_is_not_followed(env: Env) -> None:
    os.symlink(str(env.outside), env.ws / "linkroot")
    data = make_tar(F("linkroot/authorized_keys", b"attacker key"))
    env.refuse(data, UnsafeArchiveError, "existing symlink", allowed_roots=[env.ws / "linkroot"])


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([L("dest/sub/up", ".."), L("dest/escape", "sub/up/.."), F("dest/escape/pwned")], "leaves"),
        ([L("dest/a", "b"), L("dest/b", "a"), F("dest/a/x")], "max_link_depth"),
        ([L("dest/self", "self"), F("dest/self/x")], "max_link_depth"),
        ([*(L(f"dest/l{i}", f"l{i + 1}") for i in range(100)), D("dest/l100/"), F("dest/l0/x")], "max_link_depth"),
        ([L("dest/long", "a/" * 2100)], "max_path_length"),
        ([L("dest/empty", "")], "empty symlink target"),
        ([L("", "dest")], "empty name"),
        ([L("dest/e", ""), F("dest/e/x")], "empty symlink target"),
    ],
    ids=["up-dotdot-chain", "cycle", "self-loop", "chain-100", "target>PATH_MAX", "empty-target", "empty-name", "e/x"],
)
def test_c5_chained_and_pathological_symlinks_are_refused_quickly(env: Env, members: list[Member], match: str) -> None:
    started = time.monotonic()
    env.refuse(make_tar(F("dest/ok.txt"), *members), UnsafeArchiveError, match)
    assert time.monotonic() - started < 5


def test_c5_relative_symlink_inside_the_root_is_resolved_not_refused(env: Env) -> None:
    data = make_tar(
        D("dest/lib/"), L("dest/lib64", "lib"), F("dest/lib64/x.py", b"x"), L("dest/py", "/usr/bin/python3")
    )
    env.extract(data)
    assert os.readlink(env.dest / "lib64") == "lib"
    assert (env.dest / "lib" / "x.py").read_bytes() == b"x"
    assert os.readlink(env.dest / "py") == "/usr/bin/python3"


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("/etc/passwd", "outside the declared paths"),
        ("../secret", "outside the declared paths"),
        ("OUTSIDE", "outside the declared paths"),
        ("dest/missing.txt", "not a regular file extracted"),
        ("dest/keep.txt", "not a regular file extracted"),  # exists in the destination, not in the archive
        ("dest/adir", "not a regular file extracted"),
        ("dest", "not a regular file extracted"),
    ],
)
def test_c6_hardlinks_outside_or_to_non_members_are_refused(env: Env, target: str, match: str) -> None:
    target = str(env.outside / "secret.txt") if target == "OUTSIDE" else target
    data = make_tar(F("dest/ok.txt"), D("dest/adir/"), H("dest/hl", target))
    env.refuse(data, UnsafeArchiveError, match)


def test_c6_writing_over_a_hardlink_replaces_it(env: Env) -> None:
    data = make_tar(F("dest/inside.txt", b"inside"), H("dest/hl", "dest/inside.txt"), F("dest/hl", b"new content"))
    env.extract(data)
    assert (env.dest / "inside.txt").read_bytes() == b"inside"
    assert (env.dest / "hl").read_bytes() == b"new content"
    assert os.stat(env.dest / "inside.txt").st_ino != os.stat(env.dest / "hl").st_ino


def test_c6_destination_hardlink_and_symlink_are_replaced_not_written_through(env: Env) -> None:
    os.link(env.outside / "secret.txt", env.dest / "hard.txt")
    os.symlink(str(env.outside / "secret.txt"), env.dest / "soft.txt")
    env.extract(make_tar(F("dest/hard.txt", b"new hard"), F("dest/soft.txt", b"new soft")))
    assert (env.outside / "secret.txt").read_bytes() == b"secret"
    assert (env.dest / "hard.txt").read_bytes() == b"new hard"
    assert not (env.dest / "soft.txt").is_symlink()
    assert (env.dest / "soft.txt").read_bytes() == b"new soft"


@pytest.mark.parametrize(
    ("typeflag", "data", "match"),
    [
        (tarfile.FIFOTYPE, b"", "FIFO"),
        (tarfile.CHRTYPE, b"", "character device"),
        (tarfile.BLKTYPE, b"", "block device"),
        (tarfile.CONTTYPE, b"", "contiguous file"),
        (tarfile.CONTTYPE, b"contiguous data", "contiguous file"),
        (tarfile.GNUTYPE_SPARSE, b"", "sparse"),
        (b"Z", b"", "tar type"),
        (b"Z", b"payload", "tar type"),
        (b"V", b"", "volume label"),
    ],
)
def test_c7_special_files_are_refused_without_blocking(env: Env, typeflag: bytes, data: bytes, match: str) -> None:
    started = time.monotonic()
    env.refuse(make_tar(F("dest/ok.txt"), T("dest/special", typeflag, data)), UnsafeArchiveError, match)
    assert time.monotonic() - started < 5


def test_c8_metadata_is_sanitised(env: Env) -> None:
    data = make_tar(
        F("dest/suid", mode=0o4777, uid=0, gid=0, uname="root", gname="root"),
        F("dest/sgid", mode=0o2775, uid=1234, gid=1234, uname="evil", gname="evil"),
        F("dest/readonly", mode=0o400),
        F("dest/exec", mode=0o700),
        D("dest/sticky/", mode=0o1777),
        D("dest/locked/", mode=0o000),
        F("dest/epoch", mtime=0),
        F("dest/y2100", mtime=4_102_444_800),
        F("dest/far", mtime=2**40),
        F("dest/negative", mtime=-5),
        F("dest/frac", mtime=1_700_000_000.5),
        L("dest/link", "suid"),
    )
    env.extract(data)

    def mode(name: str) -> int:
        return stat.S_IMODE(os.lstat(env.dest / name).st_mode)

    assert mode("suid") == 0o755
    assert mode("sgid") == 0o755
    assert mode("readonly") == 0o600
    assert mode("exec") == 0o700
    assert mode("sticky") == 0o755
    assert mode("locked") == 0o700
    for name in ("suid", "sgid", "sticky", "link"):
        st = os.lstat(env.dest / name)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    mtime = {n: os.lstat(env.dest / n).st_mtime_ns for n in ("epoch", "y2100", "far", "negative", "frac", "link")}
    assert mtime["epoch"] == 0
    assert mtime["y2100"] == 4_102_444_800 * 10**9
    assert mtime["far"] == 2**33 * 10**9 - 1
    assert mtime["negative"] == 0
    assert mtime["frac"] == 1_700_000_000_500_000_000
    assert (env.outside / "secret.txt").read_bytes() == b"secret"


class Counting:
    """How many decompressed bytes the extractor actually pulled."""

    def __init__(self, inner: io.RawIOBase) -> None:
        self.inner, self.count = inner, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data


def write_bomb(sink: Callable[[bytes], object], files: int, size: int) -> None:
    zero = memoryview(bytes(1 << 20))
    for i in range(files):
        ti = tarfile.TarInfo(f"dest/bomb{i}")
        ti.size = size
        sink(ti.tobuf(tarfile.PAX_FORMAT))
        left = size
        while left:
            n = min(left, len(zero))
            sink(zero[:n])
            left -= n
        sink(bytes(-size % 512))
    sink(bytes(1024))


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    """1 GiB of zeros as 1024 members of 1 MiB, about 40 kB compressed."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as w:
        write_bomb(w.write, 1024, 1 << 20)
    return out.getvalue()


def test_c9_zstd_bomb_stops_at_max_total_bytes_with_bounded_memory(env: Env, zstd_bomb: bytes) -> None:
    assert len(zstd_bomb) < 1 << 20
    limit = 16 << 20
    stream = Counting(zstd_reader(zstd_bomb))
    tracemalloc.start()
    try:
        env.refuse(stream, UnsafeArchiveError, "max_total_bytes", limits=ExtractLimits(max_total_bytes=limit))  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream.count <= limit + (2 << 20)  # read from the stream, stopped right at the cap
    assert peak < 32 << 20


def test_c9_single_huge_member_is_refused_before_its_body_is_read(env: Env) -> None:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as w:
        write_bomb(w.write, 1, 256 << 20)
    stream = Counting(zstd_reader(out.getvalue()))
    env.refuse(stream, UnsafeArchiveError, "max_total_bytes", limits=ExtractLimits(max_total_bytes=1 << 20))  # type: ignore[arg-type]
    assert stream.count < 4 << 20


def test_c9_member_count_bomb_stops_at_max_members(env: Env) -> None:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as w:
        write_bomb(w.write, 20_000, 0)
    env.refuse(
        Counting(zstd_reader(out.getvalue())),  # type: ignore[arg-type]
        UnsafeArchiveError,
        "max_members",
        limits=ExtractLimits(max_members=1000),
    )


def test_c10_zstd_frame_demanding_a_2gib_window_is_refused(env: Env) -> None:
    frame = bytearray(zstandard.ZstdCompressor(write_content_size=False).compress(make_tar(F("dest/x"))))
    assert frame[4] & 0x20 == 0  # no single-segment flag: byte 5 is the window descriptor
    frame[5] = (31 - 10) << 3  # windowLog 31
    env.refuse(zstd_reader(bytes(frame)), CorruptArchiveError, "too much memory")


def test_c10_concatenated_frames_past_the_end_of_the_archive_are_refused(env: Env) -> None:
    data = zstd(make_tar(F("dest/new.txt"))) + zstd(b"junk after the archive" * 100)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    env.refuse(reader, CorruptArchiveError, "after the end-of-archive marker")


def test_c10_skippable_frame_flood_is_skipped_in_bounded_time(env: Env) -> None:
    skippable = struct.pack("<II", 0x184D2A50, 4) + b"junk"
    data = skippable * 200_000 + zstd(make_tar(F("dest/new.txt", b"ok")))
    started = time.monotonic()
    env.extract(zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(io.BytesIO(data)))
    assert time.monotonic() - started < 5
    assert (env.dest / "new.txt").read_bytes() == b"ok"


def test_c10_gzip_fallback_bomb_stops_at_max_total_bytes(env: Env) -> None:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        write_bomb(gz.write, 64, 1 << 20)
    stream = Counting(gzip.GzipFile(fileobj=io.BytesIO(raw.getvalue()), mode="rb"))  # type: ignore[arg-type]
    env.refuse(stream, UnsafeArchiveError, "max_total_bytes", limits=ExtractLimits(max_total_bytes=8 << 20))  # type: ignore[arg-type]
    assert stream.count <= 10 << 20


def test_c10_corrupt_gzip_is_a_corrupt_archive(env: Env) -> None:
    raw = bytearray(gzip.compress(make_tar(F("dest/x", b"y" * 5000))))
    raw[20:40] = b"\xff" * 20
    env.refuse(gzip.GzipFile(fileobj=io.BytesIO(bytes(raw))), CorruptArchiveError, "decompression failed")  # type: ignore[arg-type]


def with_magic(data: bytes, magic: bytes) -> bytes:
    return fix_checksum(data[:257] + magic + data[265:512]) + data[512:]


GOOD = make_tar(F("dest/a.txt", b"a" * 1000), F("dest/b.txt", b"b"))
BASE256_NEGATIVE = b"\xff" * 11 + b"\x00"


@pytest.mark.parametrize(
    ("data", "exc", "match"),
    [
        (bytes([GOOD[0] ^ 1]) + GOOD[1:], CorruptArchiveError, "checksum"),
        (GOOD[: 1024 + 100], CorruptArchiveError, "truncated"),
        (GOOD[: len(GOOD) - 10240 + 1536 + 200], CorruptArchiveError, "truncated"),  # cut in the final header
        (make_tar(F("dest/x"))[:1024], CorruptArchiveError, "end-of-archive"),  # no end marker
        (pax_member(b"0 path=x\n"), CorruptArchiveError, "pax record"),  # CVE-2019-20907 shape
        (pax_member(b"9" * 30 + b" path=x\n"), CorruptArchiveError, "pax record"),
        (pax_member(b"1 " * 50_000), CorruptArchiveError, "pax record"),  # CVE-2024-6232 shape, linear here
        (pax_member(b"99 path=x\n"), CorruptArchiveError, "pax record"),  # length past the header
        (pax_member(b"12 path=x\x00y\n"), UnsafeArchiveError, "NUL"),
        (pax_member(b"27 GNU.sparse.map=0,999999\n"), UnsafeArchiveError, "sparse"),
        (header(b"PaxHeaders/x", 1 << 30, b"x"), UnsafeArchiveError, "pax header of"),  # giant, nothing follows
        (header(b"././@LongLink", 70_000, b"L"), UnsafeArchiveError, "GNU long name"),
        (header(b"dest/neg", size_field=BASE256_NEGATIVE), CorruptArchiveError, "negative size"),  # CVE-2025-8194
        (header(b"dest/bad", size_field=b"12x4567\0\0\0\0\0"), CorruptArchiveError, "invalid size"),
        (header(b"dest/lnk", 10, b"2") + bytes(512 + 1024), CorruptArchiveError, "non-zero size"),
        (GOOD + b"\x01" + bytes(511), CorruptArchiveError, "after the end-of-archive"),
        (make_tar(F("a" * 5000)), UnsafeArchiveError, "max_path_length"),
        (make_tar(F("dest/" + "c" * 300)), UnsafeArchiveError, "component"),
        (with_magic(make_tar(F("dest/x")), b"xxxxxxxx"), CorruptArchiveError, "magic"),
    ],
    ids=[
        "checksum",
        "cut-mid-body",
        "cut-mid-header",
        "no-end-marker",
        "pax-zero-length",
        "pax-huge-length",
        "pax-redos-shape",
        "pax-length-past-end",
        "pax-nul-in-path",
        "pax-sparse-map",
        "giant-pax-header",
        "gnu-longname-70k",
        "negative-size",
        "non-octal-size",
        "symlink-with-data",
        "trailing-garbage",
        "name>max_path_length",
        "component>255",
        "unknown-magic",
    ],
)
def test_c11_malformed_tar_fails_closed_quickly(env: Env, data: bytes, exc: type[Exception], match: str) -> None:
    started = time.monotonic()
    env.refuse(data, exc, match)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("link", ["/OUTSIDE", "../../../../outside"])
def test_c12_directory_then_symlink_then_write_is_refused(env: Env, link: str) -> None:
    link = str(env.outside) if link == "/OUTSIDE" else link
    data = make_tar(D("dest/dir/"), F("dest/dir/a"), L("dest/dir", link), F("dest/dir/x", b"pwned"))
    env.refuse(data, UnsafeArchiveError, "written through|leaves")


def test_c12_last_member_wins(env: Env) -> None:
    data = make_tar(
        F("dest/f", b"file first"),
        D("dest/f/"),
        F("dest/f/x", b"inside"),  # file -> directory
        D("dest/d/"),
        F("dest/d/inner"),
        L("dest/d/lnk", "/etc"),
        F("dest/d", b"file last"),  # directory (and the symlink staged in it) -> file
        L("dest/s", str(Path("/nonexistent") / "secret")),
        F("dest/s", b"regular"),  # symlink -> file: created, never written through
        F("dest/s2", b"x"),
        L("dest/s2", "f"),  # file -> symlink
        D("dest/m/", mode=0o700),
        F("dest/m/one"),
        D("dest/m/", mode=0o755),  # directory twice: merged, later mode wins
    )
    env.extract(data)
    assert (env.dest / "f" / "x").read_bytes() == b"inside"
    assert (env.dest / "d").read_bytes() == b"file last"
    assert not (env.dest / "s").is_symlink() and (env.dest / "s").read_bytes() == b"regular"
    assert os.readlink(env.dest / "s2") == "f"
    assert (env.dest / "m" / "one").exists() and stat.S_IMODE(os.stat(env.dest / "m").st_mode) == 0o755
    assert not [p for p in env.tmp.rglob("*") if p.is_symlink() and p.name not in ("lnk_in", "s2")]


def test_c12_member_below_a_file_is_refused(env: Env) -> None:
    env.refuse(make_tar(F("dest/p", b"x"), F("dest/p/c")), UnsafeArchiveError, "not a directory")


def test_c12_destination_directory_is_not_replaced_by_a_file(env: Env) -> None:
    env.refuse(make_tar(F("dest/new.txt"), F("dest/sub", b"x")), UnsafeArchiveError, "existing directory")


def test_c13_truncated_download_is_never_a_partial_restore(env: Env) -> None:
    data = make_tar(F("dest/keep.txt", b"new keep"), F("dest/big.bin", os.urandom(300_000)), F("dest/z.txt"))
    env.refuse(data[:150_000], CorruptArchiveError, "truncated")
    compressed = zstd(data)
    env.refuse(zstd_reader(compressed[: len(compressed) // 2]), CorruptArchiveError, "truncated|decompression")


def test_c13_failed_digest_check_leaves_destination_unchanged(env: Env) -> None:
    data = make_tar(F("dest/keep.txt", b"new keep"), F("dest/new.txt"), F("../../.cache/pip/x"))
    stream = io.BytesIO(data)
    seen_at: list[int] = []

    def verify() -> None:
        seen_at.append(stream.tell())
        raise ValueError("sha256 mismatch")

    env.refuse(stream, ValueError, "sha256 mismatch", before_commit=verify)  # type: ignore[arg-type]
    assert seen_at == [len(data)]  # called once, after the whole stream was read


def test_c13_rename_failure_during_commit_is_rolled_back(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    (env.home / ".cache").mkdir()
    data = make_tar(
        F("dest/keep.txt", b"new keep"),
        F("dest/new.txt"),
        F("dest/sub/old.txt", b"new old"),
        F("dest/sub/added.txt"),
        D("dest/fresh/"),
        F("dest/fresh/f"),
        F("../../.cache/pip/x"),
    )
    real_rename = os.rename
    calls = []

    def flaky_rename(*args: object, **kw: object) -> None:
        calls.append(args)
        if len(calls) == 4:
            raise OSError(5, "simulated I/O error")
        real_rename(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", flaky_rename)
    env.refuse(data, OSError, "simulated I/O error")
    assert len(calls) > 4  # the undo renames ran


def test_c14_crafted_archive_from_a_server_gets_no_trust(env: Env) -> None:
    """Same rules whatever the source: a well-formed, correctly compressed archive with one hostile member."""
    members = [F(f"dest/pkg/mod{i}.py", b"print(%d)\n" % i) for i in range(200)]
    data = zstd(make_tar(*members, L("dest/bin/python", "/usr/bin/python3"), F("../../.ssh/authorized_keys", b"k")))
    env.refuse(zstd_reader(data), UnsafeArchiveError, "outside the declared paths")


# ----------------------------------------------------------------------------------------------- positive controls


def add_files(top: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)


def test_real_virtualenv_archived_by_gnu_tar_restores_intact(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(ws / ".venv")], check=True)
    site = next((ws / ".venv" / "lib").glob("python3*/site-packages"))
    add_files(site, {f"pkg{i}/mod{j}.py": b"x = %d\n" % j for i in range(20) for j in range(20)})
    script = ws / ".venv" / "bin" / "tool"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.link(site / "pkg0" / "mod0.py", site / "pkg1" / "hardlinked.py")  # uv links from its cache
    links = {p.name: os.readlink(p) for p in (ws / ".venv" / "bin").iterdir() if p.is_symlink()}
    assert any(t.startswith("/") for t in links.values()), links  # the absolute interpreter link

    data = gnu_tar(ws, ".venv")
    ws2 = tmp_path / "restored" / "repo"
    ws2.mkdir(parents=True)
    report = extract_tar_stream(zstd_reader(zstd(data)), workspace=ws2, allowed_roots=[ws2 / ".venv"])  # type: ignore[arg-type]

    assert snapshot(ws2 / ".venv", mtimes=True) == snapshot(ws / ".venv", mtimes=True)
    assert report.hardlinks == 1 and report.symlinks >= 3
    restored = site.relative_to(ws)
    assert (
        os.stat(ws2 / restored / "pkg0" / "mod0.py").st_ino == os.stat(ws2 / restored / "pkg1" / "hardlinked.py").st_ino
    )
    out = subprocess.run(
        [str(ws2 / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == str(ws2 / ".venv")
    assert not list((tmp_path / "restored").rglob(".runcache-restore-*"))

    # Restoring again merges into the existing venv: identical result.
    extract_tar_stream(io.BytesIO(data), workspace=ws2, allowed_roots=[ws2 / ".venv"])
    assert snapshot(ws2 / ".venv", mtimes=True) == snapshot(ws / ".venv", mtimes=True)


def test_pip_cache_outside_the_workspace_restores_via_dotdot_members(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ws = home / "work" / "repo"
    ws.mkdir(parents=True)
    add_files(home / ".cache" / "pip", {"http/v2/a/b/c": b"wheel", "selfcheck/x.json": b"{}"})
    data = gnu_tar(ws, "../../.cache/pip")
    assert b"../../.cache/pip/http/v2/a/b/c" in data

    home2 = tmp_path / "home2"
    ws2 = home2 / "work" / "repo"
    ws2.mkdir(parents=True)
    extract_tar_stream(io.BytesIO(data), workspace=ws2, allowed_roots=[home2 / ".cache" / "pip", ws2])
    assert snapshot(home2 / ".cache" / "pip") == snapshot(home / ".cache" / "pip")
    assert sorted(p.name for p in home2.iterdir()) == [".cache", "work"]


def test_ancestor_directory_entries_of_a_root_are_skipped(env: Env) -> None:
    (env.home / ".cache").mkdir(mode=0o755)
    os.chmod(env.home / ".cache", 0o755)
    data = make_tar(
        D("../../.cache/", mode=0o700), D("../../", mode=0o700), D("./", mode=0o700), F("../../.cache/pip/x")
    )
    env.extract(data)
    assert stat.S_IMODE(os.stat(env.home / ".cache").st_mode) == 0o755
    assert (env.pip / "x").exists()


def test_hardlinks_inside_the_archive_restore_as_hardlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    add_files(src / "cache", {"objects/a": b"A" * 10_000, "objects/b": b"B"})
    for i in range(5):
        (src / "env" / f"site{i}").mkdir(parents=True)
        os.link(src / "cache" / "objects" / "a", src / "env" / f"site{i}" / "a")
    data = gnu_tar(src, "cache", "env")
    dst = tmp_path / "dst"
    dst.mkdir()
    report = extract_tar_stream(io.BytesIO(data), workspace=dst, allowed_roots=[dst / "cache", dst / "env"])
    assert report.hardlinks == 5
    inodes = {os.stat(dst / "env" / f"site{i}" / "a").st_ino for i in range(5)}
    assert inodes == {os.stat(dst / "cache" / "objects" / "a").st_ino}
    assert os.stat(dst / "cache" / "objects" / "a").st_nlink == 6


def test_merge_into_existing_destination_replaces_files_and_keeps_others(env: Env) -> None:
    os.link(env.dest / "sub" / "old.txt", env.outside / "old-hardlink.txt")
    data = make_tar(F("dest/sub/old.txt", b"new old"), F("dest/new.txt", b"new"), F("dest/sub/deeper/x", b"x"))
    env.extract(data)
    assert (env.dest / "keep.txt").read_bytes() == b"keep"
    assert os.readlink(env.dest / "lnk_in") == "keep.txt"
    assert (env.dest / "sub" / "old.txt").read_bytes() == b"new old"
    assert (env.outside / "old-hardlink.txt").read_bytes() == b"old"  # replaced by rename, not written through
    assert (env.dest / "new.txt").read_bytes() == b"new"
    assert (env.dest / "sub" / "deeper" / "x").read_bytes() == b"x"
    assert not list(env.tmp.rglob(".runcache-restore-*"))


def test_workspace_itself_as_root(env: Env) -> None:
    data = make_tar(D("./"), F("top.txt", b"top"), F("dest/keep.txt", b"k2"))
    report = env.extract(data, allowed_roots=[env.ws])
    assert (env.ws / "top.txt").read_bytes() == b"top"
    assert (env.dest / "keep.txt").read_bytes() == b"k2"
    assert report.files == 2
    assert not list(env.tmp.rglob(".runcache-restore-*"))


def test_declared_path_that_is_a_file_is_replaced_not_written_through(env: Env) -> None:
    os.symlink(str(env.outside / "secret.txt"), env.ws / "config.json")
    env.extract(
        make_tar(F("config.json", b"{}"), F("notes.txt", b"n")),
        allowed_roots=[env.ws / "config.json", env.ws / "notes.txt"],
    )
    assert not (env.ws / "config.json").is_symlink()
    assert (env.ws / "config.json").read_bytes() == b"{}"
    assert (env.ws / "notes.txt").read_bytes() == b"n"
    assert (env.outside / "secret.txt").read_bytes() == b"secret"


def test_leaf_symlink_pointing_outside_is_kept_and_not_followed(env: Env) -> None:
    env.extract(make_tar(L("dest/py", str(env.outside / "secret.txt")), L("dest/rel", "../../../../outside")))
    assert os.readlink(env.dest / "py") == str(env.outside / "secret.txt")
    assert (env.outside / "secret.txt").read_bytes() == b"secret"


def test_report_counts_and_digest_check_runs_before_commit(env: Env) -> None:
    data = make_tar(D("dest/pkg/"), F("dest/pkg/a", b"12345"), L("dest/pkg/l", "a"), H("dest/pkg/h", "dest/pkg/a"))
    seen: list[bool] = []
    report = env.extract(data, before_commit=lambda: seen.append((env.dest / "pkg").exists()))
    assert seen == [False]
    assert report == ExtractReport(files=1, dirs=1, symlinks=1, hardlinks=1, bytes=5)
    assert hashlib.sha256((env.dest / "pkg" / "h").read_bytes()).hexdigest() == hashlib.sha256(b"12345").hexdigest()


class Dribble:
    """A stream that returns at most 7 bytes per read, like a slow decompressor."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        k = min(7, n) if n >= 0 else 7
        self.pos += k
        return self.data[self.pos - k : self.pos]


def test_short_reads_are_handled(env: Env) -> None:
    data = make_tar(F("dest/a", b"x" * 3000), D("dest/d/"), F("dest/d/b", b"y" * 10))
    env.extract(Dribble(data))  # type: ignore[arg-type]
    assert (env.dest / "a").read_bytes() == b"x" * 3000
    assert (env.dest / "d" / "b").read_bytes() == b"y" * 10
