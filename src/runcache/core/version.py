"""The cache version, computed exactly as @actions/cache computes it (cacheUtils.getCacheVersion)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

VERSION_SALT = "1.0"
ZSTD = "zstd-without-long"
GZIP = "gzip"


def cache_version(paths: Sequence[str], compression: str, *, windows: bool = False, cross_os: bool = False) -> str:
    components = [*paths, compression]
    if windows and not cross_os:
        components.append("windows-only")
    components.append(VERSION_SALT)
    return hashlib.sha256("|".join(components).encode()).hexdigest()
