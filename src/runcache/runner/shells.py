"""``run:`` steps: which shell, how it is called, and the script file it reads (the runner's rules)."""

from __future__ import annotations

import shlex
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

# shell name -> (argument template, script file extension)
KNOWN = {
    "bash": ("--noprofile --norc -eo pipefail {0}", ".sh"),
    "sh": ("-e {0}", ".sh"),
    "python": ("{0}", ".py"),
    "pwsh": ("-command \". '{0}'\"", ".ps1"),
    "powershell": ("-command \". '{0}'\"", ".ps1"),
    "cmd": ('/D /E:ON /V:OFF /S /C "CALL "{0}""', ".cmd"),
}


class ShellError(Exception):
    pass


@dataclass(frozen=True)
class Shell:
    command: str  # resolved executable
    args_template: str  # with {0} for the script path
    extension: str
    display: str  # what the log shows: `shell: /usr/bin/bash -e {0}`

    def argv(self, script: Path) -> list[str]:
        args = shlex.split(self.args_template.replace("{0}", "\0"))
        return [self.command, *(a.replace("\0", str(script)) for a in args)]

    def write_script(self, temp: Path, body: str) -> Path:
        path = temp / f"{uuid.uuid4()}{self.extension}"
        if self.extension == ".cmd":
            body = "@echo off\n" + body
        path.write_text(body, encoding="utf-8")
        return path


def resolve_shell(shell: str | None, path_env: str) -> Shell:
    """The shell for a ``run:`` step; ``None`` means the default (``bash -e {0}``, else ``sh -e {0}``)."""
    if shell is None or not shell.strip():
        if sys.platform == "win32":  # pragma: no cover - the runner's Windows default
            return resolve_shell("pwsh", path_env)
        bash = shutil.which("bash", path=path_env)
        if bash:
            return Shell(bash, "-e {0}", ".sh", f"{bash} -e {{0}}")
        sh = _which("sh", path_env)
        return Shell(sh, "-e {0}", ".sh", f"{sh} -e {{0}}")
    shell = shell.strip()
    if shell in KNOWN:
        template, ext = KNOWN[shell]
        command = _which(shell, path_env)
        return Shell(command, template, ext, f"{command} {template}")
    if "{0}" not in shell:
        raise ShellError(
            f"Invalid shell option '{shell}': a custom shell must contain '{{0}}' for the script path "
            f"(for example `perl {{0}}`); built in: {', '.join(KNOWN)}"
        )
    command, _, args = shell.partition(" ")
    resolved = _which(command, path_env)
    return Shell(resolved, args, "", f"{resolved} {args}")


def _which(command: str, path_env: str) -> str:
    if "/" in command:
        if Path(command).is_file():
            return command
        raise ShellError(f"File not found: '{command}'")
    found = shutil.which(command, path=path_env)
    if not found:
        raise ShellError(f"{command}: command not found (the shell must be on PATH)")
    return found
