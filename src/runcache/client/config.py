"""Where the CLI finds its cache service: flags, then RUNCACHE_*, then the ACTIONS_* a GitHub job already has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(Exception):
    pass


# How much of a download may be ahead of the extraction. A restore's stages run at different speeds over the
# archive (a stretch of small files extracts at a fraction of the link's rate, a large incompressible file
# faster than it): with only a few MiB of slack the socket stops whenever the extractor is in a slow stretch,
# and a link that stood still cannot make the time up later, so the restore takes the sum of both stages'
# slow parts instead of the longer stage. 256 MiB covers seconds of a slow stretch at 100 MB/s; it is
# memory the client holds only while it is that far ahead (pieces of at most 1 MiB, freed as extracted).
DOWNLOAD_BUFFER_ENV = "RUNCACHE_DOWNLOAD_BUFFER_MIB"
DEFAULT_DOWNLOAD_BUFFER_MIB = 256
DEFAULT_DOWNLOAD_BUFFER = DEFAULT_DOWNLOAD_BUFFER_MIB << 20  # bytes
MAX_DOWNLOAD_BUFFER_MIB = 4096


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str
    protocol: str


def resolve_endpoint(
    env: Mapping[str, str], *, url: str | None = None, token: str | None = None, protocol: str | None = None
) -> Endpoint:
    protocol = protocol or env.get("RUNCACHE_PROTOCOL") or None
    if not url and env.get("RUNCACHE_URL"):
        url = env["RUNCACHE_URL"]
    if not url:
        if env.get("ACTIONS_CACHE_SERVICE_V2") and env.get("ACTIONS_RESULTS_URL"):
            url, protocol = env["ACTIONS_RESULTS_URL"], protocol or "v2"
        elif env.get("ACTIONS_CACHE_URL"):
            url, protocol = env["ACTIONS_CACHE_URL"], protocol or "v1"
        elif env.get("ACTIONS_RESULTS_URL"):
            url = env["ACTIONS_RESULTS_URL"]
    token = token or env.get("RUNCACHE_TOKEN") or env.get("ACTIONS_RUNTIME_TOKEN")
    if not url:
        raise ConfigError(
            "no cache service configured: pass --url or set RUNCACHE_URL (or ACTIONS_CACHE_URL / "
            "ACTIONS_RESULTS_URL as on a GitHub runner)"
        )
    if not token:
        raise ConfigError("no token: pass --token or set RUNCACHE_TOKEN (or ACTIONS_RUNTIME_TOKEN)")
    protocol = protocol or "v2"
    if protocol not in ("v1", "v2"):
        raise ConfigError(f"protocol must be v1 or v2, got {protocol!r}")
    return Endpoint(url, token, protocol)


def download_buffer_bytes(env: Mapping[str, str]) -> int:
    """RUNCACHE_DOWNLOAD_BUFFER_MIB in bytes (1 to 4096 MiB; default 256)."""
    raw = env.get(DOWNLOAD_BUFFER_ENV, "").strip()
    if not raw:
        return DEFAULT_DOWNLOAD_BUFFER
    try:
        mib = int(raw)
    except ValueError:
        mib = 0
    if not 1 <= mib <= MAX_DOWNLOAD_BUFFER_MIB:
        raise ConfigError(
            f"{DOWNLOAD_BUFFER_ENV} must be a whole number of MiB from 1 to {MAX_DOWNLOAD_BUFFER_MIB}, not {raw!r}"
        )
    return mib << 20
