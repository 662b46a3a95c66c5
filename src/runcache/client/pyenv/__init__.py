"""`runcache pip install`: a cached virtualenv restored whole, or brought to the requested set and saved.

1. The key (runcache.core.pyenv) is computed from a probe of the interpreter, the installer's version and the
   requirement inputs.
2. An environment already at `--venv` that was synced to this key and is valid here is used as it is.
3. Otherwise the key is restored through the cache client (runcache.client.operations, the same path as
   `runcache restore`): an exact hit that is valid here (runcache.client.pyenv.venv.accept) is done, with no
   installer process; a prefix hit (the newest environment of the same interpreter and installer) is the
   starting point of a sync; an environment that is not valid here is removed and reported as refused.
4. Without a usable environment a new one is made, and the installer's cache is restored by its own prefix.
5. The environment is synced (runcache.client.pyenv.sync), checked to be exactly the resolution, and saved
   under the key; when it was built without a restored environment, the pruned installer cache is saved too.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runcache.client.pyenv import venv as venvs
from runcache.client.pyenv.inputs import collect_inputs
from runcache.client.pyenv.probe import Installer, Probe, find_installer, find_python, probe_interpreter
from runcache.client.pyenv.sync import (
    Runner,
    cache_dir,
    cache_paths,
    has_files,
    prune_cache,
    seed_packages,
    sync,
    write_inputs,
)
from runcache.core.pyenv import EnvKeys, Interpreter, check_spec, env_keys, requirements_digest
from runcache.core.venvs import changes

if TYPE_CHECKING:
    from runcache.client.transfer import CacheClient

# The cache client (runcache.client.operations, and httpx with it) is imported by `install`, not here: the
# probe module must be importable without it, so the CLI can start the interpreter probe before that import.

ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int], None]]]


@dataclass
class PipInstallOptions:
    venv: Path
    requirements: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)
    installer_args: list[str] = field(default_factory=list)
    python: str | None = None
    installer: str = "auto"
    workspace: Path = field(default_factory=Path.cwd)
    save: bool = True
    installer_cache: bool = True
    probe: Probe | None = None  # the probe of `python` already started (runcache.client.pyenv.probe.Probe)


@dataclass
class Plan:
    """Everything the key is made of, computed before anything is changed (`runcache pip key` prints it)."""

    interpreter: Interpreter
    installer: Installer
    keys: EnvKeys
    venv: Path  # absolute, symlinks resolved: the path the environment's scripts name
    venv_path: str  # the cache `path` line: relative to the workspace inside it (so checkouts elsewhere match)
    inputs: list[str]  # the files hashed, as labels
    hashed: bool  # the requirement inputs carry --hash options (complete locks, checked on install)


@dataclass
class PipInstallResult:
    key: str
    restore_keys: list[str]
    venv: str
    python: str
    installer: str
    installer_version: str
    outcome: str = ""  # hit | local | restored (a prefix hit, synced) | miss (built from nothing)
    matched_key: str = ""
    relocated_from: str = ""
    refused: str = ""  # why a restored environment was not used
    installer_runs: list[list[str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    saved: bool = False
    cache_key: str = ""
    cache_matched_key: str = ""
    cache_saved: bool = False
    warnings: list[str] = field(default_factory=list)
    unwritable: bool = False
    seconds: float = 0.0

    @property
    def cache_hit(self) -> str:
        """actions/cache's `cache-hit` output: true for an exact hit, false for a prefix hit, empty otherwise."""
        return {"hit": "true", "local": "true", "restored": "false"}.get(self.outcome, "")

    def outputs(self) -> dict[str, str]:
        out = {"cache-hit": self.cache_hit, "cache-primary-key": self.key}
        if self.matched_key:
            out["cache-matched-key"] = self.matched_key
        out["python-path"] = self.python
        return out

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "cache_hit": self.cache_hit, "outputs": self.outputs()}


def _cache_line(path: Path, workspace: Path) -> str:
    """A cache `path` line for `path`: workspace-relative inside it, `~/...` under the home folder, else absolute."""
    if path == workspace or workspace in path.parents:
        return os.path.relpath(path, workspace).replace(os.sep, "/")
    home = Path(os.path.expanduser("~"))
    if home != Path("/") and home in path.parents:
        return "~/" + path.relative_to(home).as_posix()
    return str(path)


def plan(options: PipInstallOptions) -> Plan:
    specs = [check_spec(s) for s in options.specs]
    if not (options.requirements or specs):
        raise ValueError("nothing to install: give -r REQUIREMENTS_FILE or requirement specifiers")
    probe = options.probe
    interp = probe.result() if probe is not None else probe_interpreter(find_python(options.python))
    installer = find_installer(options.installer, interp)
    workspace = options.workspace.resolve()
    inputs = collect_inputs(options.requirements, options.constraints, Path.cwd(), os.environ)
    digest = requirements_digest(installer.name, installer.version, inputs, specs, options.installer_args)
    venv = Path(os.path.realpath(options.venv))
    return Plan(
        interp,
        installer,
        env_keys(interp, installer.name, digest),
        venv,
        _cache_line(venv, workspace),
        [i.label for i in inputs],
        any(b"--hash" in i.content for i in inputs if i.role in ("requirements", "constraints")),
    )


def install(
    client: CacheClient, options: PipInstallOptions, progress: ProgressFactory | None = None
) -> PipInstallResult:
    started = time.monotonic()
    p = plan(options)
    workspace = options.workspace.resolve()
    venv, keys, installer = p.venv, p.keys, p.installer
    result = PipInstallResult(
        key=keys.key,
        restore_keys=keys.restore_keys,
        venv=str(venv),
        python=str(venvs.venv_python(venv)),
        installer=installer.name,
        installer_version=installer.version,
    )
    run = Runner(result.installer_runs)
    try:
        _install(client, options, p, workspace, result, run, progress)
    finally:
        result.seconds = time.monotonic() - started
    return result


def _transfer(progress: ProgressFactory | None, label: str):
    if progress is None:
        from contextlib import nullcontext

        return nullcontext(None)
    return progress(label)


def _install(
    client: CacheClient,
    options: PipInstallOptions,
    p: Plan,
    workspace: Path,
    result: PipInstallResult,
    run: Runner,
    progress: ProgressFactory | None,
) -> None:
    from runcache.client.operations import restore, save

    venv, keys, installer, interp = p.venv, p.keys, p.installer, p.interpreter
    # An environment already here, synced to this very key: nothing to fetch, nothing to run.
    if venvs.read_marker(venv) is not None:
        try:
            result.relocated_from = venvs.accept(venv, interp, installer.name, key=keys.key)
            result.outcome, result.matched_key = "local", keys.key
            return
        except venvs.EnvironmentRefused:
            pass
    venvs.prepare_destination(venv)
    with _transfer(progress, "restore") as bar:
        got = restore(
            client,
            paths=[p.venv_path],
            key=keys.key,
            restore_keys=keys.restore_keys,
            workspace=workspace,
            cwd=workspace,
            progress=bar,
        )
    if got.warning:
        result.warnings.append(got.warning)
    if got.unwritable:
        result.unwritable = True
        return
    exact = got.cache_hit == "true"
    base = False
    if got.restored:
        try:
            result.relocated_from = venvs.accept(venv, interp, installer.name)
            base = True
            result.matched_key = got.matched_key
        except venvs.EnvironmentRefused as exc:
            result.refused = f"the environment cached as {got.matched_key} was not used: {exc}"
            venvs.remove(venv)
    if base and exact:
        result.outcome = "hit"
        return
    result.outcome = "restored" if base else "miss"

    uv = installer.command[0] if installer.command else ""
    cache_folder: Path | None = None
    if base:
        seed = dict((venvs.read_marker(venv) or {}).get("seed") or {})
        # Until the sync has finished the environment is no set's: a failed sync must not leave it looking
        # like the restored key's (the next run would take it as that key's local environment).
        venvs.clear_marker(venv)
    else:
        venvs.create(venv, interp, installer.name, run, uv)
        seed = seed_packages(venv)
        if options.installer_cache:
            cache_folder = cache_dir(installer, venv, run)
        if cache_folder is not None:
            with _transfer(progress, "restore installer cache") as bar:
                cached = restore(
                    client,
                    paths=[_cache_line(cache_paths(installer, cache_folder), workspace)],
                    key=keys.cache_key,
                    restore_keys=keys.cache_restore_keys,
                    workspace=workspace,
                    cwd=workspace,
                    progress=bar,
                )
            result.cache_matched_key = cached.matched_key
            if cached.warning:
                result.warnings.append(cached.warning)

    with tempfile.TemporaryDirectory(prefix="runcache-pyenv-") as tmp:
        inputs = write_inputs(Path(tmp), options.requirements, options.constraints, options.specs)
        synced = sync(installer, venv, inputs, options.installer_args, seed, run, hashed=p.hashed)
    after = {name: version for name, (version, _direct) in synced.after.items()}
    delta = changes(synced.before, after)
    result.added, result.removed, result.changed = delta["added"], delta["removed"], delta["changed"]
    venvs.write_marker(
        venv,
        {
            "key": keys.key,
            "venv": str(venv),
            "installer": installer.name,
            "installer_version": installer.version,
            "interpreter": interp.real_executable,
            "python_version": interp.version_string,
            "seed": seed,
            "packages": after,
        },
    )
    if not options.save:
        return
    local = venvs.local_installs(synced.after)
    if local:
        result.warnings.append(
            "not saved: installed from local paths the key cannot see: " + ", ".join(local)
            + "; install local projects after `runcache pip install`"
        )  # fmt: skip
        return
    if exact:
        result.warnings.append(f"not saved: the entry {keys.key} exists (entries are immutable) but was not usable")
    else:
        with _transfer(progress, "save") as bar:
            saved = save(client, paths=[p.venv_path], key=keys.key, workspace=workspace, cwd=workspace, progress=bar)
        result.saved = saved.saved
        if saved.warning:
            result.warnings.append(saved.warning)
    if cache_folder is not None and result.cache_matched_key != keys.cache_key:
        _save_installer_cache(client, installer, cache_folder, keys, workspace, result, run, progress)


def _save_installer_cache(
    client: CacheClient,
    installer: Installer,
    folder: Path,
    keys: EnvKeys,
    workspace: Path,
    result: PipInstallResult,
    run: Runner,
    progress: ProgressFactory | None,
) -> None:
    from runcache.client.operations import save

    prune_cache(installer, run)
    target = cache_paths(installer, folder)
    if not has_files(target):
        return  # nothing worth a download later (pip built no wheel): no entry at all
    with _transfer(progress, "save installer cache") as bar:
        saved = save(
            client,
            paths=[_cache_line(target, workspace)],
            key=keys.cache_key,
            workspace=workspace,
            cwd=workspace,
            progress=bar,
        )
    result.cache_key = keys.cache_key
    result.cache_saved = saved.saved
    if saved.warning:
        result.warnings.append(saved.warning)
