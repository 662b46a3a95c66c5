"""``astral-sh/setup-uv`` for a local run: the uv already on this machine, and its cache through the run's service.

The real action downloads uv; a local run never does. It takes the first uv it finds (the job's PATH, then
the one beside runcache's own interpreter, then runcache's PATH), checks it against ``version`` /
``version-file``, and puts it on PATH through a folder of its own in the tool cache (the folder uv sits
in may hold another Python that must not shadow the job's). A version this machine does not have fails
the step with a message that says how to get it.

Caching follows the real action (src/cache/restore-cache.ts, src/save-cache.ts): ``enable-cache: auto``
is on only for GitHub-hosted runners (a local run is self-hosted, so it is off unless set to ``true``),
the key is ``setup-uv-2-<arch>-<platform>-<os>-<python>[-pruned][-py]-<hash of cache-dependency-glob>
[-<cache-suffix>]`` with no restore keys, ``UV_CACHE_DIR`` points at the cached folder, ``cache-hit`` is
``true`` for a restored entry, and the post step prunes (``prune-cache``) and saves unless the restore hit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import quote

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, InputSpec
from runcache.runner.actions.setup_python import read_os_release, restore_tool_cache, save_tool_cache
from runcache.runner.contexts import node_arch

CACHE_VERSION = "2"
DEFAULT_DEPENDENCY_GLOB = (
    "**/*requirements*.txt\n**/*requirements*.in\n**/*constraints*.txt\n**/*constraints*.in\n"
    "**/pyproject.toml\n**/uv.lock\n**/*.py.lock"
)
# `uv cache prune --force` (do not wait for a running uv's lock) exists from this version on.
PRUNE_FORCE_SINCE = Version("0.8.24")

INPUTS = (
    InputSpec("version", default=""),
    InputSpec("version-file", default=""),
    InputSpec("python-version"),
    InputSpec("activate-environment", default="false"),
    InputSpec("venv-path", default=""),
    InputSpec("no-project", default="false"),
    InputSpec("working-directory", default="${{ github.workspace }}"),
    InputSpec("checksum"),
    InputSpec("github-token", default="${{ github.token }}"),
    InputSpec("enable-cache", default="auto"),
    InputSpec("cache-dependency-glob", default=DEFAULT_DEPENDENCY_GLOB),
    InputSpec("restore-cache", default="true"),
    InputSpec("save-cache", default="true"),
    InputSpec("cache-suffix"),
    InputSpec("cache-local-path", default=""),
    InputSpec("prune-cache", default="false"),
    InputSpec("cache-python", default="false"),
    InputSpec("ignore-nothing-to-cache", default="false"),
    InputSpec("ignore-empty-workdir", default="false"),
    InputSpec("tool-dir"),
    InputSpec("tool-bin-dir"),
    InputSpec("manifest-file"),
    InputSpec("download-from-astral-mirror", default="true"),
    InputSpec("add-problem-matchers", default="true"),
    InputSpec("quiet", default="false"),
    InputSpec("resolution-strategy", default="highest"),
)


def uv_arch(node_arch: str) -> str:
    """The real action's name for ``process.arch`` (uv's release target names)."""
    return {"arm64": "aarch64", "ia32": "i686", "ppc64": "powerpc64le", "riscv64": "riscv64gc"}.get(
        node_arch, {"x64": "x86_64"}.get(node_arch, node_arch)
    )


def uv_platform() -> str:
    if sys.platform == "darwin":
        return "apple-darwin"
    if sys.platform == "win32":
        return "pc-windows-msvc"
    import platform

    libc, _ = platform.libc_ver()
    return "unknown-linux-gnu" if libc == "glibc" else "unknown-linux-musl"


def os_name_version(os_release_files: tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release")) -> str:
    """``<ID>-<VERSION_ID>`` from os-release (codename or build id for rolling releases), as the key has it."""
    if sys.platform == "darwin":
        import platform

        return f"macos-{int(platform.release().split('.')[0]) - 9}"
    id_only = ""
    for name in os_release_files:
        values = read_os_release(Path(name))
        os_id = (values or {}).get("ID", "")
        for field in ("VERSION_ID", "VERSION_CODENAME", "BUILD_ID"):
            if os_id and values and values.get(field):
                return f"{os_id}-{values[field]}"
        id_only = id_only or os_id
    if id_only:
        return id_only
    raise ActionFailed("Failed to determine Linux distribution. Could not read /etc/os-release or /usr/lib/os-release")


def cache_key(
    *,
    arch: str,
    platform: str,
    os_version: str,
    python_version: str,
    file_hash: str,
    pruned: bool = False,
    cache_python: bool = False,
    suffix: str = "",
) -> str:
    """The real action's key: an empty ``file_hash`` (no glob, or nothing matched) is ``no-dependency-glob``."""
    return (
        f"setup-uv-{CACHE_VERSION}-{arch}-{platform}-{os_version}-{quote(python_version or 'unknown', safe='')}"
        f"{'-pruned' if pruned else ''}{'-py' if cache_python else ''}"
        f"-{file_hash or 'no-dependency-glob'}{'-' + quote(suffix, safe='') if suffix else ''}"
    )


def version_wanted(requested: str, have: str) -> bool:
    """Whether uv ``have`` satisfies ``version`` as the action reads it: empty/latest take any, ``0.5`` or
    ``0.5.x`` a prefix, anything else a PEP 440 specifier or an exact version."""
    req = requested.strip().lstrip("v")
    if req in ("", "latest", "latest-known"):
        return True
    try:
        have_v = Version(have)
    except InvalidVersion:
        return False
    if re.fullmatch(r"\d+(\.\d+)*(\.[x*])?", req):
        parts = [p for p in req.split(".") if p not in ("x", "*")]
        return have_v.release[: len(parts)] == tuple(int(p) for p in parts) and (
            len(parts) < 3 or req.endswith((".x", ".*")) or have_v == Version(req)
        )
    try:
        return SpecifierSet(req).contains(have_v, prereleases=True)
    except InvalidSpecifier:
        raise ActionFailed(f"Invalid uv version '{requested}'") from None


def version_from_file(path: Path) -> str:
    """``required-version`` from uv.toml / pyproject.toml ``[tool.uv]``, a ``.tool-versions`` uv line, or a
    ``uv==`` pin in a requirements file."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.name == ".tool-versions":
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if fields[:1] == ["uv"] and len(fields) > 1:
                return fields[1]
        return ""
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ActionFailed(f"{path}: {exc}") from None
        table = data if path.name == "uv.toml" else data.get("tool", {}).get("uv", {})
        return str(table.get("required-version") or "")
    m = re.search(r"^\s*uv\s*(==|>=|~=|<=|>|<)\s*([^\s;#]+)", text, re.M)
    return (m.group(1).replace("==", "") + m.group(2)) if m else ""


class SetupUvAction(BuiltinAction):
    repository = "astral-sh/setup-uv"
    inputs = INPUTS
    outputs = ("uv-version", "uv-path", "uvx-path", "cache-hit", "cache-key", "venv", "python-version")
    has_post = True
    post_if = "success()"

    def main(self, ctx: ActionContext) -> None:
        workdir = Path(ctx.get_input("working-directory") or ctx.workspace)
        if not workdir.is_dir():
            raise ActionFailed(f"working-directory {workdir} does not exist")
        if not any(workdir.iterdir()) and not ctx.get_bool("ignore-empty-workdir"):
            ctx.warning(
                "Empty workdir detected. This may cause unexpected behavior. "
                "You can enable ignore-empty-workdir to mute this warning."
            )
        for ignored in ("checksum", "manifest-file"):
            if ctx.get_input(ignored):
                ctx.info(f"{ignored} is ignored: runcache run uses the uv installed on this machine")
        uv, version = self._find_uv(ctx, workdir)
        uv_dir = self._uv_folder(ctx, uv, version)
        ctx.set_output("uv-path", str(uv_dir / "uv"))
        ctx.set_output("uvx-path", str(uv_dir / "uvx"))
        ctx.save_state("uv-path", str(uv_dir / "uv"))
        ctx.save_state("uv-version", version)
        modify_path = "UV_NO_MODIFY_PATH" not in ctx.env
        home = Path(ctx.env.get("HOME") or Path.home())
        tool_bin = ctx.get_input("tool-bin-dir")
        if tool_bin:
            ctx.export_variable("UV_TOOL_BIN_DIR", str(_resolve(workdir, tool_bin, home)))
        if modify_path:
            ctx.add_path(str(_resolve(workdir, tool_bin, home)) if tool_bin else str(home / ".local" / "bin"))
            ctx.add_path(str(uv_dir))
            ctx.info(f"Added {uv_dir} to the path")
        if ctx.get_input("tool-dir"):
            ctx.export_variable("UV_TOOL_DIR", str(_resolve(workdir, ctx.get_input("tool-dir"), home)))
        python_dir = ctx.env.get("UV_PYTHON_INSTALL_DIR") or str(home / ".local" / "share" / "uv" / "python")
        ctx.export_variable("UV_PYTHON_INSTALL_DIR", python_dir)
        if modify_path:
            ctx.add_path(python_dir)
        python_version = ctx.get_input("python-version")
        if python_version:
            ctx.export_variable("UV_PYTHON", python_version)
        if ctx.get_yaml_bool("activate-environment"):
            self._activate(ctx, uv_dir / "uv", workdir, home, modify_path)
        enable_cache = self._enable_cache(ctx)
        cache_dir, from_config = self._cache_local_path(ctx, workdir, home, enable_cache)
        if cache_dir and not from_config:
            ctx.export_variable("UV_CACHE_DIR", cache_dir)
        ctx.save_state("cache-local-path", cache_dir)
        ctx.set_output("uv-version", version)
        ctx.info(f"Successfully installed uv version {version}")
        detected = python_version or self._detect_python(ctx, uv_dir / "uv", workdir)
        ctx.set_output("python-version", detected)
        ctx.save_state("enable-cache", "true" if enable_cache else "false")
        if enable_cache:
            self._restore(ctx, workdir, home, detected, cache_dir, python_dir)

    # --- uv itself ------------------------------------------------------------------------------
    def _find_uv(self, ctx: ActionContext, workdir: Path) -> tuple[str, str]:
        from runcache.client.pyenv.probe import InstallerError, uv_version

        requested = ctx.get_input("version")
        version_file = ctx.get_input("version-file")
        if not requested and version_file:
            requested = version_from_file(_resolve(workdir, version_file, Path.home()))
        if not requested:
            for name in ("uv.toml", "pyproject.toml"):
                requested = version_from_file(workdir / name)
                if requested:
                    break
        candidates = []
        for where in (ctx.env.get("PATH"), str(Path(sys.executable).parent), os.environ.get("PATH")):
            found = shutil.which("uv", path=where) if where else None
            if found and os.path.realpath(found) not in [os.path.realpath(c) for c in candidates]:
                candidates.append(found)
        seen = []
        for uv in candidates:
            try:
                version = uv_version(uv)
            except InstallerError as exc:
                ctx.warning(str(exc))
                continue
            if version_wanted(requested, version):
                ctx.info(f"Found uv {version} at {uv}")
                return uv, version
            seen.append(f"uv {version} at {uv}")
        wanted = f"uv {requested}" if requested else "uv"
        have = "; found " + ", ".join(seen) if seen else "; no uv was found on PATH or beside runcache"
        raise ActionFailed(
            f"{wanted} is not available on this machine{have}. runcache run downloads no tools: install it "
            f"(for example `pip install 'uv{_pip_spec(requested)}'`) or change the version input"
        )

    @staticmethod
    def _uv_folder(ctx: ActionContext, uv: str, version: str) -> Path:
        """A folder with only uv and uvx in it: the binary's own folder may hold a python that would shadow
        the job's."""
        folder = (ctx.tool_cache or ctx.temp / "_tool") / "uv" / version / uv_arch(node_arch())
        folder.mkdir(parents=True, exist_ok=True)
        real = Path(os.path.realpath(uv))
        for name in ("uv", "uvx"):
            source = real.with_name(name)
            link = folder / name
            if not source.exists():
                continue
            if link.is_symlink() or link.exists():
                if os.path.realpath(link) == str(source):
                    continue
                link.unlink()
            link.symlink_to(source)
        return folder

    @staticmethod
    def _activate(ctx: ActionContext, uv: Path, workdir: Path, home: Path, modify_path: bool) -> None:
        if not modify_path:
            raise ActionFailed("UV_NO_MODIFY_PATH and activate-environment cannot be used together.")
        venv = Path(os.path.normpath(_resolve(workdir, ctx.get_input("venv-path") or ".venv", home)))
        ctx.info(f"Creating and activating python venv at {venv}...")
        argv = [str(uv), "venv", str(venv), "--directory", str(workdir), "--clear"]
        if ctx.get_yaml_bool("no-project"):
            argv.append("--no-project")
        ctx.run(argv)
        ctx.add_path(str(venv / "bin"))
        ctx.export_variable("VIRTUAL_ENV", str(venv))
        ctx.set_output("venv", str(venv))

    @staticmethod
    def _detect_python(ctx: ActionContext, uv: Path, workdir: Path) -> str:
        try:
            found = subprocess.run(
                [str(uv), "python", "find", "--directory", str(workdir)],
                capture_output=True, text=True, env=ctx.env, timeout=60,
            )  # fmt: skip
            python = found.stdout.strip()
            if found.returncode or not python:
                return "unknown"
            out = subprocess.run([python, "--version"], capture_output=True, text=True, timeout=60)
            return out.stdout.split()[1] if len(out.stdout.split()) > 1 else "unknown"
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    # --- the cache ------------------------------------------------------------------------------
    @staticmethod
    def _enable_cache(ctx: ActionContext) -> bool:
        value = ctx.get_input("enable-cache")
        if value != "auto":
            return value == "true"
        if ctx.env.get("RUNNER_ENVIRONMENT") != "github-hosted":
            ctx.info("enable-cache: auto caches on GitHub-hosted runners only; this run is self-hosted (set true)")
            return False
        event, ref = ctx.env.get("GITHUB_EVENT_NAME", ""), ctx.env.get("GITHUB_REF", "")
        if event == "push" and ref.startswith("refs/tags/"):
            ctx.info("Caching is disabled for tag pushes")
            return False
        if event in ("pull_request_target", "workflow_run", "release"):
            ctx.info(f"Caching is disabled for the {event} event")
            return False
        return True

    @staticmethod
    def _cache_local_path(ctx: ActionContext, workdir: Path, home: Path, enabled: bool) -> tuple[str, bool]:
        """(folder, whether a uv config file chose it) in the real action's order of precedence."""
        given = ctx.get_input("cache-local-path")
        if given:
            return str(_resolve(workdir, given, home)), False
        for name in (ctx.get_input("version-file"), "uv.toml", "pyproject.toml"):
            path = _resolve(workdir, name, home) if name else None
            if path is None or not path.is_file() or path.suffix != ".toml":
                continue
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8", errors="replace"))
            except tomllib.TOMLDecodeError as exc:
                ctx.warning(f"Error while parsing {name}: {exc}")
                break
            table = data if path.name == "uv.toml" else data.get("tool", {}).get("uv", {})
            if table.get("cache-dir"):
                ctx.info(f"Found cache-dir in {path}: {table['cache-dir']}")
                return str(table["cache-dir"]), True
        if ctx.env.get("UV_CACHE_DIR"):
            ctx.info(f"UV_CACHE_DIR is already set to {ctx.env['UV_CACHE_DIR']}")
            return ctx.env["UV_CACHE_DIR"], False
        if not enabled:
            return "", False
        if ctx.env.get("RUNNER_ENVIRONMENT") == "github-hosted" and ctx.env.get("RUNNER_TEMP"):
            return str(Path(ctx.env["RUNNER_TEMP"]) / "setup-uv-cache"), False
        return str(home / ".cache" / "uv"), False

    def _restore(
        self, ctx: ActionContext, workdir: Path, home: Path, python_version: str, cache_dir: str, python_dir: str
    ) -> None:
        globs = [g.strip() for g in ctx.get_input("cache-dependency-glob").split("\n") if g.strip()]
        file_hash = ""
        if globs:
            ctx.info(f"Searching files using cache dependency glob: {','.join(globs)}")
            file_hash = _hash_globs(ctx, workdir, home, globs)
            if not file_hash:
                ctx.warning(
                    f"No file matched to [{','.join(globs)}]. The cache will never get invalidated. Make sure you "
                    "have checked out the target repository and configured the cache-dependency-glob input correctly."
                )
        key = cache_key(
            arch=uv_arch(node_arch()),
            platform=uv_platform(),
            os_version=os_name_version(),
            python_version=python_version,
            file_hash=file_hash,
            pruned=ctx.get_input("prune-cache") == "true",
            cache_python=ctx.get_input("cache-python") == "true",
            suffix=ctx.get_input("cache-suffix"),
        )
        ctx.save_state("cache-key", key)
        ctx.set_output("cache-key", key)
        if ctx.get_input("restore-cache") != "true":
            ctx.info("restore-cache is false. Skipping restore cache step.")
            return
        self._restore_one(ctx, key, cache_dir, "cache-matched-key", "cache-hit")
        if ctx.get_input("cache-python") == "true":
            self._restore_one(ctx, f"{key}-python", python_dir, "python-cache-matched-key", "python-cache-hit")

    @staticmethod
    def _restore_one(ctx: ActionContext, key: str, path: str, state: str, output: str) -> None:
        ctx.info(f"Trying to restore cache from GitHub Actions cache with key: {key}")
        matched = restore_tool_cache(ctx, paths=[path], primary=key, restore_keys=[])
        if not matched:
            if matched == "":
                ctx.info(f"No GitHub Actions cache found for key: {key}")
            ctx.set_output(output, "false")
            return
        ctx.save_state(state, matched)
        ctx.info(f"cache restored from GitHub Actions cache with key: {matched}")
        ctx.set_output(output, "true")

    def post(self, ctx: ActionContext) -> None:
        if ctx.get_state("enable-cache") != "true":
            return
        if ctx.get_input("save-cache") != "true":
            ctx.info("save-cache is false. Skipping save cache step.")
            return
        key = ctx.get_state("cache-key")
        if not key:
            ctx.warning("Error retrieving cache key from state.")
            return
        if ctx.get_state("cache-matched-key") == key:
            ctx.info(f"Cache hit occurred on key {key}, not saving cache.")
        else:
            if ctx.get_input("prune-cache") == "true":
                self._prune(ctx)
            path = self._cache_path(ctx)
            if not Path(path).exists():
                if ctx.get_input("ignore-nothing-to-cache") != "true":
                    raise ActionFailed(
                        f"Cache path {path} does not exist on disk. This likely indicates that there are no "
                        "dependencies to cache. Consider disabling the cache input if it is not needed."
                    )
                ctx.info("No cacheable uv cache paths were found. Ignoring because ignore-nothing-to-cache is enabled.")
            else:
                ctx.info(f"Including uv cache path: {path}")
                if save_tool_cache(ctx, paths=[path], primary=key):
                    ctx.info(f"uv cache saved with key: {key}")
        if ctx.get_input("cache-python") == "true":
            python_dir = ctx.env.get("UV_PYTHON_INSTALL_DIR", "")
            if not python_dir or not Path(python_dir).exists():
                ctx.warning(
                    f"Python cache path {python_dir} does not exist on disk. Skipping Python cache save because no "
                    "managed Python installation was found."
                )
                return
            py_key = f"{key}-python"
            if ctx.get_state("python-cache-matched-key") == py_key:
                ctx.info(f"Python cache hit occurred on key {py_key}, not saving cache.")
                return
            if save_tool_cache(ctx, paths=[python_dir], primary=py_key):
                ctx.info(f"Python cache saved with key: {py_key}")

    @staticmethod
    def _prune(ctx: ActionContext) -> None:
        argv = [ctx.get_state("uv-path") or "uv", "cache", "prune", "--ci"]
        try:
            if Version(ctx.get_state("uv-version")) >= PRUNE_FORCE_SINCE:
                argv.append("--force")
        except InvalidVersion:
            pass
        ctx.info("Pruning cache...")
        ctx.run(argv)

    @staticmethod
    def _cache_path(ctx: ActionContext) -> str:
        path = ctx.get_state("cache-local-path")
        if not path:
            raise ActionFailed("cache-local-path is not set. Cannot save cache without a valid cache path.")
        env_dir = ctx.env.get("UV_CACHE_DIR")
        if env_dir and env_dir != path:
            ctx.warning(
                f'The environment variable UV_CACHE_DIR has been changed to "{env_dir}", by an action or step '
                "running after astral-sh/setup-uv. This can lead to unexpected behavior. If you expected this to "
                f'happen set the cache-local-path input to "{env_dir}" instead of "{path}".'
            )
            return env_dir
        return path


def _hash_globs(ctx: ActionContext, workdir: Path, home: Path, globs: list[str]) -> str:
    """hashFiles over the globs, resolved against the working directory as the action resolves them (its
    hash is the runner's: sha256 over each matched file's sha256)."""
    from runcache.client.hashfiles import hash_files

    patterns = []
    for glob in globs:
        negate = glob.startswith("!")
        body = glob[1:] if negate else glob
        resolved = str(_resolve(workdir, body, home))
        patterns.append(("!" if negate else "") + resolved)
    return hash_files(patterns, workdir)


def _resolve(workdir: Path, value: str, home: Path) -> Path:
    if value.startswith("~"):
        value = str(home) + value[1:]
    return workdir / value if not os.path.isabs(value) else Path(value)


def _pip_spec(requested: str) -> str:
    req = requested.strip().lstrip("v")
    if not req or req.startswith("latest"):
        return ""
    return f"=={req}" if re.fullmatch(r"\d+(\.\d+)*", req) else req.replace(".x", ".*")
