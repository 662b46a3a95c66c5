"""Which ``uses:`` a local run can run: the built-in actions, matched by repository (any ref)."""

from __future__ import annotations

from runcache.runner.actions.base import BuiltinAction

SUPPORTED = (
    "actions/checkout",
    "actions/cache",
    "actions/cache/restore",
    "actions/cache/save",
    "actions/setup-python",
    "astral-sh/setup-uv",
)


def split_uses(uses: str) -> tuple[str, str]:
    name, _, ref = uses.partition("@")
    return name.strip().rstrip("/"), ref.strip()


def resolve_action(uses: str) -> BuiltinAction | None:
    name, ref = split_uses(uses)
    key = name.lower()
    if key == "actions/checkout":
        from runcache.runner.actions.checkout import CheckoutAction

        return CheckoutAction()
    if key in ("actions/cache", "actions/cache/restore", "actions/cache/save"):
        from runcache.runner.actions.cache import CacheAction, CacheRestoreAction, CacheSaveAction

        cls = {"actions/cache": CacheAction, "actions/cache/restore": CacheRestoreAction}.get(key, CacheSaveAction)
        return cls(ref)
    if key == "actions/setup-python":
        from runcache.runner.actions.setup_python import SetupPythonAction

        return SetupPythonAction()
    if key == "astral-sh/setup-uv":
        from runcache.runner.actions.setup_uv import SetupUvAction

        return SetupUvAction()
    return None


def unsupported_message(uses: str) -> str:
    if uses.startswith("docker://"):
        what = "Docker container actions"
    elif uses.startswith("./"):
        what = "local actions"
    else:
        what = f"'{uses}'"
    return (
        f"runcache run cannot run {what}: it runs run: steps and the built-in actions "
        f"{', '.join(a + '@*' for a in SUPPORTED)}"
    )
