"""``actions/cache``, ``actions/cache/restore`` and ``actions/cache/save``, natively, with the real action's
inputs, outputs, state, post-step rules and log lines (restoreImpl.ts / saveImpl.ts, v3.5 to v5).

* ``cache-hit`` is ``'true'`` for an exact hit, ``'false'`` for a restore-key (or prefix) hit, and not set
  at all on a miss, so ``steps.x.outputs.cache-hit != 'true'`` is the test that works.
* The combined action keeps the primary key (``CACHE_KEY``) and the matched key (``CACHE_RESULT``) in state;
  its post step (``post-if: success()``) saves under that key unless the restore was an exact hit.
* Save problems are warnings, never failures; key validation and ``fail-on-cache-miss`` fail the main step.
"""

from __future__ import annotations

import re
import time

from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, CacheRecord, InputSpec

SAVE_ALWAYS_DEPRECATION = (
    "save-always does not work as intended and will be removed in a future release.\n"
    "A separate `actions/cache/restore` step should be used instead.\n"
    "See https://github.com/actions/cache/tree/main/save#always-save-cache for more details."
)
NO_SERVICE_WARNING = (
    "The cache service is disabled for this run (runcache run --no-cache); nothing is restored or saved."
)


def _major(ref: str) -> int | None:
    m = re.match(r"^v?(\d+)(?:\.|$)", ref)
    return int(m.group(1)) if m else None


def cache_inputs(kind: str, ref: str) -> tuple[InputSpec, ...]:
    common = [InputSpec("path", required=True), InputSpec("key", required=True)]
    if kind in ("cache", "restore"):
        common.append(InputSpec("restore-keys"))
    if kind in ("cache", "save"):
        common.append(InputSpec("upload-chunk-size"))
    common.append(InputSpec("enableCrossOsArchive", default="false"))
    if kind in ("cache", "restore"):
        common += [InputSpec("fail-on-cache-miss", default="false"), InputSpec("lookup-only", default="false")]
    major = _major(ref)
    if kind == "cache" and (major is None or major >= 4):
        common.append(InputSpec("save-always", default="false", deprecation=SAVE_ALWAYS_DEPRECATION))
    return tuple(common)


def _mb(n: int) -> str:
    return f"~{round(n / (1024 * 1024))} MB ({n} B)"


def _exact(a: str, b: str) -> bool:
    from runcache.core.keys import fold

    return bool(a) and bool(b) and fold(a) == fold(b)


class _Meter:
    """Byte counter feeding the live status line."""

    def __init__(self, ctx: ActionContext, verb: str) -> None:
        self.ctx, self.verb, self.done, self.started = ctx, verb, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.ctx.progress:
            self.ctx.progress(f"{self.verb} {self.done / 1e6:.1f} MB")

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6) / (1024 * 1024)


def _service_available(ctx: ActionContext) -> bool:
    if ctx.cache is None:
        ctx.warning(NO_SERVICE_WARNING)
        return False
    return True


def _valid_event(ctx: ActionContext) -> bool:
    if ctx.env.get("GITHUB_REF"):
        return True
    ctx.warning(
        f"Event Validation Error: The event type {ctx.env.get('GITHUB_EVENT_NAME', '')} is not supported "
        "because it's not tied to a branch or tag ref."
    )
    return False


def restore_main(ctx: ActionContext, *, combined: bool) -> None:
    from runcache.client.operations import restore
    from runcache.core.errors import InvalidRequest

    if not _service_available(ctx):
        ctx.set_output("cache-hit", "false")
        return
    if not _valid_event(ctx):
        return
    primary = ctx.get_input("key", required=True)
    if combined:
        ctx.save_state("CACHE_KEY", primary)
    else:
        ctx.set_output("cache-primary-key", primary)
    restore_keys = ctx.get_multiline("restore-keys")
    paths = ctx.get_multiline("path", required=True)
    cross_os = ctx.get_bool("enableCrossOsArchive")
    fail_on_miss = ctx.get_bool("fail-on-cache-miss")
    lookup_only = ctx.get_bool("lookup-only")
    record = CacheRecord(
        ctx.step_name, "lookup" if lookup_only else "restore", primary, "miss", restore_keys=restore_keys, paths=paths
    )
    ctx.record(record)
    meter = _Meter(ctx, "downloading")
    try:
        # The action runs with the workspace as its working directory; relative paths resolve there.
        with ctx.cache.client() as client:
            result = restore(
                client,
                paths=paths,
                key=primary,
                restore_keys=restore_keys,
                workspace=ctx.workspace,
                lookup_only=lookup_only,
                cross_os=cross_os,
                progress=meter,
                cwd=ctx.workspace,
            )
    except InvalidRequest as exc:
        record.result, record.message = "failed", str(exc)
        raise ActionFailed(str(exc)) from None
    record.seconds = result.seconds
    record.bytes = result.bytes
    if result.warning:
        ctx.warning(result.warning)
        record.message = result.warning
    matched = result.matched_key
    if not matched:
        record.result = "failed" if result.warning else "miss"
        if fail_on_miss:
            raise ActionFailed(
                f"Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: {primary}"
            )
        ctx.info(f"Cache not found for input keys: {', '.join([primary, *restore_keys])}")
        return
    exact = _exact(primary, matched)
    record.matched_key = matched
    record.result = "hit" if exact else "restore-key"
    ctx.info(f"Cache hit for: {matched}" if exact else f"Cache hit for restore-key: {matched}")
    if lookup_only:
        ctx.info("Lookup only - skipping download")
    else:
        ctx.info(f"Received {result.bytes} of {result.bytes} (100.0%), {meter.rate():.1f} MBs/sec")
        ctx.info(f"Cache Size: {_mb(result.bytes)}")
        ctx.info("Cache restored successfully")
    if combined:
        ctx.save_state("CACHE_RESULT", matched)
    else:
        ctx.set_output("cache-matched-key", matched)
    ctx.set_output("cache-hit", "true" if exact else "false")
    if lookup_only:
        ctx.info(f"Cache found and can be restored from key: {matched}")
    else:
        ctx.info(f"Cache restored from key: {matched}")


def save_impl(ctx: ActionContext, *, combined: bool) -> bool | None:
    """saveImpl: ``True`` saved, ``False`` tried and failed, ``None`` returned early. Never raises."""
    from runcache.client.operations import save
    from runcache.core.errors import InvalidRequest

    if ctx.cache is None:
        ctx.warning(NO_SERVICE_WARNING)
        return None
    if not _valid_event(ctx):
        return None
    primary = (ctx.get_state("CACHE_KEY") if combined else "") or ctx.get_input("key")
    if not primary:
        ctx.warning("Key is not specified.")
        return None
    if combined:
        restored = ctx.get_state("CACHE_RESULT")
        if _exact(primary, restored):
            ctx.info(f"Cache hit occurred on the primary key {primary}, not saving cache.")
            ctx.record(CacheRecord(ctx.step_name, "save", primary, "skipped", message="exact hit: not saving"))
            return None
    record = CacheRecord(ctx.step_name, "save", primary, "not-saved")
    ctx.record(record)
    try:
        paths = ctx.get_multiline("path", required=True)
        record.paths = paths
        meter = _Meter(ctx, "uploading")
        with ctx.cache.client() as client:
            result = save(
                client,
                paths=paths,
                key=primary,
                workspace=ctx.workspace,
                cross_os=ctx.get_bool("enableCrossOsArchive"),
                progress=meter,
                cwd=ctx.workspace,
            )
    except (InvalidRequest, ActionFailed) as exc:
        ctx.warning(str(exc))
        record.message = str(exc)
        return False
    record.seconds, record.bytes = result.seconds, result.bytes
    if not result.saved:
        record.message = result.warning
        if "another job may be creating this cache" in result.warning:
            ctx.info(result.warning)  # the library logs a reservation conflict at info level
        else:
            ctx.warning(result.warning)
        return False
    record.result = "saved"
    ctx.info(f"Sent {result.bytes} of {result.bytes} (100.0%), {meter.rate():.1f} MBs/sec")
    ctx.info(f"Cache Size: {_mb(result.bytes)}")
    ctx.info("Cache saved successfully")
    ctx.info(f"Cache saved with key: {primary}")
    return True


class CacheAction(BuiltinAction):
    repository = "actions/cache"
    outputs = ("cache-hit",)
    has_post = True
    post_if = "success()"

    def __init__(self, ref: str = "v4") -> None:
        self.inputs = cache_inputs("cache", ref)

    def main(self, ctx: ActionContext) -> None:
        restore_main(ctx, combined=True)

    def post(self, ctx: ActionContext) -> None:
        save_impl(ctx, combined=True)


class CacheRestoreAction(BuiltinAction):
    repository = "actions/cache/restore"
    outputs = ("cache-hit", "cache-primary-key", "cache-matched-key")

    def __init__(self, ref: str = "v4") -> None:
        self.inputs = cache_inputs("restore", ref)

    def main(self, ctx: ActionContext) -> None:
        restore_main(ctx, combined=False)


class CacheSaveAction(BuiltinAction):
    repository = "actions/cache/save"
    outputs = ()

    def __init__(self, ref: str = "v4") -> None:
        self.inputs = cache_inputs("save", ref)

    def main(self, ctx: ActionContext) -> None:
        if save_impl(ctx, combined=False) is False:
            ctx.warning("Cache save failed.")
