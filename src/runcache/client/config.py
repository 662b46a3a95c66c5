"""Where the CLI finds its cache service: flags, then RUNCACHE_*, then the ACTIONS_* a GitHub job already has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(Exception):
    pass


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
