"""Azure Blob block rules (Put Block / Put Block List), the same for every upload store."""

from __future__ import annotations

import base64

from runcache.core.errors import InvalidRequest
from runcache.core.limits import check_block_count

MAX_BLOCK_ID_BYTES = 64  # Azure's limit on a decoded block id


def block_name(block_id: str) -> str:
    """A block id as a name safe for a file or an object key: the hex of its decoded bytes."""
    try:
        raw = base64.b64decode(block_id, validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"block id {block_id[:100]!r} is not valid base64") from exc
    if not raw or len(raw) > MAX_BLOCK_ID_BYTES:
        raise InvalidRequest(f"block id must decode to 1..{MAX_BLOCK_ID_BYTES} bytes")
    return raw.hex()


def block_list_names(block_ids: list[str], staged: set[str], *, max_blocks: int) -> list[str]:
    """Put Block List: the staged block names in list order. Every listed block must have been staged, and
    a block may appear once (twice would need a copy; no client does it, so refuse rather than duplicate)."""
    check_block_count(len(block_ids), max_blocks)
    names = [block_name(bid) for bid in block_ids]
    if len(set(names)) != len(names):
        raise InvalidRequest("a block may appear only once in the block list")
    for bid, name in zip(block_ids, names, strict=True):
        if name not in staged:
            raise InvalidRequest(f"block {bid[:100]} was never uploaded")
    return names
