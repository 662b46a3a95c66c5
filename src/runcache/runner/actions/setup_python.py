"""``actions/setup-python`` for a local run: a matching interpreter from this machine, never a download.

The interpreter is found among pyenv, uv, asdf, tool-cache and PATH installations and matched with
setup-python's version rules. The job then gets a fresh virtual environment of it at a stable place in
the tool cache (``$RUNNER_TOOL_CACHE/Python/<version>/<arch>``), so ``python``/``pip`` install into the
job's own environment, never into your system Python, and ``env.pythonLocation`` stays the same from
run to run (workflows use it in cache paths and keys). ``cache: pip | pipenv | poetry`` work like the
real action's (src/cache-distributions), through the run's cache service: the same keys, folders,
dependency-file patterns and ``cache-hit`` output, saved by the post step unless the restore was exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from runcache.runner.actions import pythons
from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, CacheRecord, InputSpec

INPUTS = (
    InputSpec("python-version"),
    InputSpec("python-version-file"),
    InputSpec("cache"),
    InputSpec("architecture"),
    InputSpec("check-latest", default="false"),
    InputSpec("token", default="${{ github.server_url == 'https://github.com' && github.token || '' }}"),
    InputSpec("cache-dependency-path"),
    InputSpec("update-environment", default="true"),
    InputSpec("allow-prereleases", default="false"),
    InputSpec("freethreaded", default="false"),
    InputSpec("pip-version"),
    InputSpec("pip-install"),
)


# Tool-cache environments made by the running job (released with its lock at the end of the job).
_MADE_THIS_JOB: dict[str, str] = {}


def linux_os_info() -> tuple[str, str]:
    """(osName, osVersion) as setup-python's getLinuxInfo reads them (``lsb_release -i -r -s``, else os-release)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(["lsb_release", "-i", "-r", "-s"], capture_output=True, text=True, timeout=5)
        lines = proc.stdout.split()
        if proc.returncode == 0 and len(lines) >= 2:
            return lines[0], lines[1]
    info = read_os_release(Path("/etc/os-release")) or {}
    return info.get("ID") or "Linux", info.get("VERSION_ID", "")


def read_os_release(path: Path) -> dict[str, str] | None:
    """os-release's ``KEY=value`` lines, quotes removed; None when the file cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return None
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            info[key.strip()] = value.strip().strip("\"'")
    return info


def _versions_from_file(ctx: ActionContext, name: str) -> list[str]:
    path = ctx.workspace / name
    if not path.is_file():
        raise ActionFailed(f"The specified python version file at: {path} doesn't exist.")
    text = path.read_text(encoding="utf-8", errors="replace")
    base = path.name
    if base == ".tool-versions":
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if fields and fields[0] == "python":
                return fields[1:]
        return []
    if base.endswith(".toml"):
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ActionFailed(f"{path}: {exc}") from None
        req = data.get("project", {}).get("requires-python") or (
            data.get("tool", {}).get("poetry", {}).get("dependencies", {}).get("python")
        )
        return [pythons.pep440_to_spec(req)] if req else []
    if base == "Pipfile":
        for line in text.splitlines():
            if line.strip().startswith(("python_version", "python_full_version")):
                return [line.split("=", 1)[1].strip().strip("\"'")]
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _host_arch() -> str:
    from runcache.runner.contexts import node_arch

    return node_arch()


class SetupPythonAction(BuiltinAction):
    repository = "actions/setup-python"
    inputs = INPUTS
    outputs = ("python-version", "python-path", "cache-hit")
    has_post = True
    post_if = "success()"

    def main(self, ctx: ActionContext) -> None:
        versions = ctx.get_multiline("python-version")
        version_file = ctx.get_input("python-version-file")
        if versions and version_file:
            ctx.warning(
                "Both python-version and python-version-file inputs are specified, only python-version will be used."
            )
        if not versions and version_file:
            versions = _versions_from_file(ctx, version_file)
            if not versions:
                raise ActionFailed(f"No Python version found in {version_file}")
        if not versions:
            ctx.warning(
                "Neither 'python-version' nor 'python-version-file' inputs were supplied. "
                "Attempting to find '.python-version' file."
            )
            if (ctx.workspace / ".python-version").is_file():
                versions = _versions_from_file(ctx, ".python-version")
            else:
                ctx.warning(
                    ".python-version doesn't exist. The `python-version` input is not set. "
                    "The version of Python currently in `PATH` will be used."
                )
        arch = ctx.get_input("architecture") or _host_arch()
        if arch not in ("x64", "x86", "arm64", "arm"):
            raise ActionFailed(f"Invalid architecture '{arch}': use x64, x86 or arm64")
        if arch != _host_arch():
            raise ActionFailed(
                f"architecture: {arch} is not available locally: this machine runs {_host_arch()} interpreters"
            )
        if ctx.get_bool("check-latest"):
            ctx.info("check-latest is ignored: runcache run uses the interpreters installed on this machine")
        allow_pre = ctx.get_yaml_bool("allow-prereleases")
        freethreaded = ctx.get_yaml_bool("freethreaded")
        update_env = ctx.get_yaml_bool("update-environment", default=True)
        chosen: pythons.Interpreter | None = None
        python_path = ""
        if versions:
            found = pythons.discover()
            for version in versions:
                try:
                    spec = pythons.parse_spec(version, allow_prereleases=allow_pre, freethreaded=freethreaded)
                except pythons.SpecError as exc:
                    raise ActionFailed(f"Invalid python-version '{version}': {exc}") from None
                matching = [i for i in found if pythons.matches(spec, i) and i.arch == arch]
                if not matching:
                    raise ActionFailed(_not_found(version, arch, found))
                chosen = matching[0]
                python_path = self._environment(ctx, chosen, arch, update_env)
                label = "PyPy" if chosen.impl == "PyPy" else chosen.impl
                ctx.info(f"Successfully set up {label} ({chosen.version_string}) from {chosen.executable}")
            assert chosen is not None
            ctx.set_output("python-version", _output_version(chosen))
            ctx.set_output("python-path", python_path)
        pip_version = ctx.get_input("pip-version")
        pip_install = ctx.get_input("pip-install")
        python = python_path or shutil.which("python3", path=ctx.env.get("PATH")) or sys.executable
        if pip_version:
            ctx.info(f"Installing pip {pip_version}")
            ctx.run([python, "-m", "pip", "install", f"pip=={pip_version}"])
        if pip_install:
            ctx.info(f"Installing {pip_install}")
            ctx.run([python, "-m", "pip", "install", *pip_install.split()])
        cache = ctx.get_input("cache")
        if cache:
            self._restore_cache(ctx, cache, python, chosen)

    # --- environment ---------------------------------------------------------------------------
    def _environment(self, ctx: ActionContext, interp: pythons.Interpreter, arch: str, update_env: bool) -> str:
        tool = "PyPy" if interp.impl == "PyPy" else "Python"
        root = (ctx.tool_cache or ctx.temp / "_tool") / tool / interp.version_string / arch
        root.parent.mkdir(parents=True, exist_ok=True)
        # A second setup-python of the same version in one job (another cache, say) uses the environment the
        # first one made, as the real action reuses its tool-cache install; taking the lock again would wait
        # for ourselves.
        if str(root) not in _MADE_THIS_JOB:
            self._lock(ctx, root)
            _MADE_THIS_JOB[str(root)] = ""
        made = _MADE_THIS_JOB[str(root)]
        if made and Path(made).exists():
            python = made
        else:
            if root.exists():
                shutil.rmtree(root)
            python = self._make_venv(ctx, interp, root)
            _MADE_THIS_JOB[str(root)] = python
        if update_env:
            ctx.export_variable("pythonLocation", str(root))
            ctx.export_variable("PKG_CONFIG_PATH", str(root / "lib" / "pkgconfig"))
            for var in ("Python_ROOT_DIR", "Python2_ROOT_DIR", "Python3_ROOT_DIR"):
                ctx.export_variable(var, str(root))
            ctx.add_path(str(root))
            ctx.add_path(str(root / "bin"))
        return python

    @staticmethod
    def _lock(ctx: ActionContext, root: Path) -> None:
        fd = os.open(str(root) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ctx.info(f"Waiting for another run that uses {root} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)

        def release() -> None:
            _MADE_THIS_JOB.pop(str(root), None)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

        ctx.cleanups.append(release)

    @staticmethod
    def _make_venv(ctx: ActionContext, interp: pythons.Interpreter, root: Path) -> str:
        bin_dir = root / "bin"
        python = bin_dir / "python"
        if interp.version >= (3, 3, 0):
            attempts = [
                [interp.executable, "-m", "venv", str(root)],
                [interp.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(root)],
            ]
            for n, argv in enumerate(attempts):
                proc = subprocess.run(argv, capture_output=True, text=True, env=ctx.env, stdin=subprocess.DEVNULL)
                if proc.returncode == 0 and python.exists():
                    if n == 1:
                        ctx.warning(
                            f"{interp.executable} cannot create a virtual environment with pip (ensurepip is "
                            "missing); the job's environment uses the interpreter's own pip"
                        )
                        _write_pip_wrappers(bin_dir, python)
                    _ensure_names(bin_dir, python, interp)
                    return str(python)
                shutil.rmtree(root, ignore_errors=True)
        ctx.warning(
            f"Could not create a virtual environment of {interp.executable}; the job uses it directly, "
            "so packages it installs go into that interpreter's environment"
        )
        bin_dir.mkdir(parents=True, exist_ok=True)
        _ensure_names(bin_dir, Path(interp.executable), interp, link=True)
        return str(bin_dir / "python")

    # --- cache: pip | pipenv | poetry ------------------------------------------------------------
    def _restore_cache(self, ctx: ActionContext, cache: str, python: str, interp: pythons.Interpreter | None) -> None:
        if cache not in CACHE_MANAGERS:
            raise ActionFailed(f"Caching for '{cache}' is not supported")
        ctx.info(f"Cache: {cache}")
        dependency = ctx.get_input("cache-dependency-path")
        patterns = (dependency or DEPENDENCY_DEFAULTS[cache]).split("\n")
        assert ctx.hash_files is not None
        file_hash = ctx.hash_files(patterns)
        if not file_hash and cache == "pip":
            file_hash = ctx.hash_files([PIP_BACKUP_PATTERN])
        if not file_hash:
            shown = ",".join(patterns) + (f" or {PIP_BACKUP_PATTERN}" if cache == "pip" else "")
            raise ActionFailed(
                f"No file in {ctx.workspace} matched to [{shown}], make sure you have checked out the target repository"
            )
        version = _cache_version(interp) if interp else _python_version(python)
        primary, restore_keys = cache_keys(
            cache, str(ctx.runner.get("os", "Linux")), _host_arch(), os_key_segment(), version, file_hash
        )
        projects: list[Path] = []
        if cache == "pip":
            paths = [_pip_cache_dir(ctx, python)]
        elif cache == "pipenv":
            paths = [str(Path(ctx.env.get("HOME") or Path.home()) / ".local" / "share" / "virtualenvs")]
        else:
            paths, projects = _poetry_paths(ctx, patterns)
        ctx.save_state("cache-paths", json.dumps(paths))
        matched = restore_tool_cache(ctx, paths=paths, primary=primary, restore_keys=restore_keys)
        if matched is None:  # the service failed or is off: the real action logs it and sets cache-hit false
            ctx.set_output("cache-hit", "false")
            return
        ctx.save_state("cache-primary-key", primary)
        if cache == "poetry":
            _poetry_use_python(ctx, projects)
        if matched:
            ctx.save_state("cache-matched-key", matched)
            ctx.info(f"Cache restored from key: {matched}")
        else:
            ctx.info(f"{cache} cache is not found")
        ctx.set_output("cache-hit", "true" if matched == primary else "false")

    def post(self, ctx: ActionContext) -> None:
        cache = ctx.get_input("cache")
        if not cache or ctx.cache is None:
            return
        state = ctx.get_state("cache-paths")
        if not state:
            ctx.warning(
                "Cache paths are empty. Please check the previous logs and make sure that the python version is "
                "specified"
            )
            return
        paths: list[str] = json.loads(state)
        if not any(Path(p).exists() for p in paths):
            ctx.warning(
                f"Cache folder path is retrieved for {cache} but doesn't exist on disk: {', '.join(paths)}. This "
                "likely indicates that there are no dependencies to cache. "
                "Consider removing the cache step if it is not needed."
            )
            return
        primary = ctx.get_state("cache-primary-key")
        if not primary:
            ctx.warning("Error retrieving key from state.")
            return
        if ctx.get_state("cache-matched-key") == primary:
            ctx.info(f"Cache hit occurred on the primary key {primary}, not saving cache.")
            ctx.record(CacheRecord(ctx.step_name, "save", primary, "skipped", message="exact hit: not saving"))
            return
        if save_tool_cache(ctx, paths=paths, primary=primary):
            ctx.info(f"Cache saved with the key: {primary}")


# --- the cache rules shared with astral-sh/setup-uv --------------------------------------------------

CACHE_MANAGERS = ("pip", "pipenv", "poetry")
DEPENDENCY_DEFAULTS = {"pip": "**/requirements.txt", "pipenv": "**/Pipfile.lock", "poetry": "**/poetry.lock"}
# pip alone falls back to this when the dependency patterns match nothing.
PIP_BACKUP_PATTERN = "**/pyproject.toml"


def cache_keys(
    manager: str, runner_os: str, arch: str, os_segment: str, version: str, file_hash: str
) -> tuple[str, list[str]]:
    """setup-python's primary key and restore keys: only pip's entries are taken over by prefix, because a
    pip cache of other requirements still saves downloads while another project's virtualenvs are only bytes.
    Poetry's ``v2`` retires the entries its earlier, broken releases made."""
    base = f"setup-python-{runner_os}-{arch}{os_segment}-python-{version}-{manager}"
    if manager == "pip":
        return f"{base}-{file_hash}", [base]
    if manager == "poetry":
        return f"{base}-v2-{file_hash}", []
    return f"{base}-{file_hash}", []


def os_key_segment() -> str:
    """``-<version>-<distribution>`` on Linux (binary wheels differ between distributions), else nothing."""
    if platform.system() != "Linux":
        return ""
    name, version = linux_os_info()
    if name.lower() == "rhel" or "redhat" in name.lower():
        # lsb_release and os-release spell RHEL differently, and one major release keeps one ABI.
        return f"-{version.split('.')[0]}-rhel"
    return f"-{version}-{name}"


def restore_tool_cache(ctx: ActionContext, *, paths: list[str], primary: str, restore_keys: list[str]) -> str | None:
    """Restore a setup action's cache through the run's service: the matched key, ``''`` on a miss, ``None``
    when nothing could be asked (no service, or it failed; a warning says which)."""
    from runcache.client.operations import restore
    from runcache.runner.actions.cache import NO_SERVICE_WARNING, _Meter

    if ctx.cache is None:
        ctx.warning(NO_SERVICE_WARNING)
        return None
    record = CacheRecord(ctx.step_name, "restore", primary, "miss", restore_keys=list(restore_keys), paths=paths)
    ctx.record(record)
    try:
        with ctx.cache.client() as client:
            result = restore(
                client,
                paths=paths,
                key=primary,
                restore_keys=list(restore_keys),
                workspace=ctx.workspace,
                progress=_Meter(ctx, "downloading"),
                cwd=ctx.workspace,
            )
    except Exception as exc:  # the actions log a failed restore and go on without a cache, never fail the job
        record.result, record.message = "failed", str(exc)
        ctx.warning(str(exc))
        return None
    record.bytes, record.seconds = result.bytes, result.seconds
    if result.warning:
        ctx.warning(result.warning)
        record.message = result.warning
    if not result.matched_key:
        if result.warning:
            record.result = "failed"
            return None
        return ""
    record.matched_key = result.matched_key
    record.result = "hit" if result.matched_key == primary else "restore-key"
    return result.matched_key


def save_tool_cache(ctx: ActionContext, *, paths: list[str], primary: str) -> bool:
    """Save a setup action's cache in its post step; problems are warnings (the job has passed already)."""
    from runcache.client.operations import save
    from runcache.runner.actions.cache import NO_SERVICE_WARNING, _Meter

    if ctx.cache is None:
        ctx.warning(NO_SERVICE_WARNING)
        return False
    record = CacheRecord(ctx.step_name, "save", primary, "not-saved", paths=paths)
    ctx.record(record)
    try:
        with ctx.cache.client() as client:
            result = save(
                client,
                paths=paths,
                key=primary,
                workspace=ctx.workspace,
                progress=_Meter(ctx, "uploading"),
                cwd=ctx.workspace,
            )
    except Exception as exc:
        record.message = str(exc)
        ctx.warning(str(exc))
        return False
    record.bytes, record.seconds = result.bytes, result.seconds
    if not result.saved:
        record.message = result.warning
        ctx.warning(result.warning)
        return False
    record.result = "saved"
    return True


def _pip_cache_dir(ctx: ActionContext, python: str) -> str:
    # The real action asks the `pip` first on PATH, which after this action is the job environment's.
    pip = shutil.which("pip", path=ctx.env.get("PATH"))
    argv = [pip, "cache", "dir"] if pip else [python, "-m", "pip", "cache", "dir"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ctx.env, cwd=ctx.workspace)
    cache_dir = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
    if not cache_dir:
        raise ActionFailed("Could not get cache folder path for pip package manager")
    if cache_dir.startswith("~"):
        cache_dir = str(Path(ctx.env.get("HOME") or Path.home())) + cache_dir[1:]
    return cache_dir


def parse_poetry_config(text: str) -> dict[str, object]:
    """``poetry config --list``: ``name = <JSON value>  # resolved value`` per line."""
    config: dict[str, object] = {}
    for line in text.splitlines():
        line = re.sub(r"#.*$", "", line)
        name, sep, value = line.partition("=")
        if not sep:
            continue
        with contextlib.suppress(ValueError):
            config[name.strip()] = json.loads(value.strip())
    return config


def poetry_cache_paths(project: Path, config: dict[str, object]) -> list[str]:
    """One project's folders to cache: poetry's virtualenvs folder, and ``.venv`` for in-project ones."""
    cache_dir = str(config.get("cache-dir") or "")
    venvs = str(config.get("virtualenvs.path") or "").replace("{cache-dir}", cache_dir)
    paths = [venvs] if venvs else []
    if config.get("virtualenvs.in-project"):
        paths.append(str(project / ".venv"))
    return paths


def _poetry_paths(ctx: ActionContext, patterns: list[str]) -> tuple[list[str], list[Path]]:
    from runcache.client.hashfiles import list_hashed_files

    poetry = shutil.which("poetry", path=ctx.env.get("PATH"))
    paths: list[str] = []
    projects: list[Path] = []
    for rel in list_hashed_files(patterns, ctx.workspace):
        project = (ctx.workspace / rel).parent
        if project in projects:
            continue
        projects.append(project)
        if not poetry:
            raise ActionFailed(
                "Unable to locate executable file: poetry. Install poetry before this step (pipx install poetry, "
                "or pip-install: poetry); runcache run installs no tools itself"
            )
        proc = subprocess.run([poetry, "config", "--list"], capture_output=True, text=True, env=ctx.env, cwd=project)
        if proc.returncode and proc.stderr:
            raise ActionFailed("Could not get cache folder path for poetry package manager")
        for path in poetry_cache_paths(project, parse_poetry_config(proc.stdout)):
            if path not in paths:
                paths.append(path)
    return paths, projects


def _poetry_use_python(ctx: ActionContext, projects: list[Path]) -> None:
    """Point each project's (restored) virtualenv at this job's interpreter, as the real action does."""
    python = shutil.which("python", path=ctx.env.get("PATH"))
    if not python:
        ctx.warning("python binaries were not found in PATH")
        return
    poetry = shutil.which("poetry", path=ctx.env.get("PATH")) or "poetry"
    for project in projects:
        proc = subprocess.run([poetry, "env", "use", python], capture_output=True, text=True, env=ctx.env, cwd=project)
        if proc.returncode:
            ctx.warning(proc.stderr.strip() or f"poetry env use {python} failed in {project}")


def _cache_version(interp: pythons.Interpreter) -> str:
    """The interpreter's version as setup-python puts it in keys (PyPy: ``<PyPy version>-<Python version>``)."""
    if interp.impl == "PyPy" and interp.impl_version:
        return f"{'.'.join(map(str, interp.impl_version))}-{interp.version_string}"
    return interp.version_string


def _output_version(interp: pythons.Interpreter) -> str:
    if interp.impl == "PyPy" and interp.impl_version:
        return f"pypy{interp.version[0]}.{interp.version[1]}-v{'.'.join(map(str, interp.impl_version))}"
    return interp.version_string


def _python_version(python: str) -> str:
    proc = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def _not_found(version: str, arch: str, found: list[pythons.Interpreter]) -> str:
    lines = [
        f"The version '{version}' with architecture '{arch}' was not found on this machine "
        f"({platform.system()} {platform.machine()}); runcache run uses installed interpreters and downloads none."
    ]
    if found:
        lines.append("Interpreters found:")
        for interp in found[:20]:
            lines.append(f"  {interp.impl} {interp.version_string} ({interp.arch})  {interp.executable}")
    else:
        lines.append("No Python interpreter was found on PATH or in pyenv/uv/asdf.")
    lines.append(
        f"Install one (for example `pyenv install {version}` or `uv python install {version}`) "
        "or change python-version."
    )
    return "\n".join(lines)


def _ensure_names(bin_dir: Path, python: Path, interp: pythons.Interpreter, *, link: bool = False) -> None:
    major, minor = interp.version[0], interp.version[1]
    names = ["python", f"python{major}", f"python{major}.{minor}"]
    if interp.impl == "PyPy":
        names += ["pypy", f"pypy{major}"]
    for name in names:
        target = bin_dir / name
        if target.exists() or target.is_symlink():
            if not link:
                continue
            target.unlink()
        target.symlink_to(python)


def _write_pip_wrappers(bin_dir: Path, python: Path) -> None:
    for name in ("pip", "pip3"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
        path.chmod(0o755)
