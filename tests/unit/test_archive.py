"""Archive stream helpers."""

from __future__ import annotations

import random

from runcache.client.archive import IterReader, rechunk


def test_rechunk_yields_fixed_size_chunks_with_a_short_last_one() -> None:
    rng = random.Random(7)
    data = rng.randbytes(10_000)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(0, 700)
        pieces.append(data[i : i + n])
        i += n
    chunks = list(rechunk(pieces, 1024))
    assert b"".join(chunks) == data
    assert all(len(c) == 1024 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 1024
    assert list(rechunk([], 1024)) == []
    assert list(rechunk([b"x" * 2048], 1024)) == [b"x" * 1024, b"x" * 1024]


def test_iter_reader_reads_across_pieces_and_peeks() -> None:
    r = IterReader([b"ab", b"", b"cde", b"f"])
    assert r.peek(4) == b"abcd"
    assert r.read(3) == b"abc"
    assert r.read(-1) == b"def"
    assert r.read(1) == b""
