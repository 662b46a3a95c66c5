"""The per-step file commands: ``$GITHUB_OUTPUT``, ``$GITHUB_ENV``, ``$GITHUB_PATH``, ``$GITHUB_STATE`` and
``$GITHUB_STEP_SUMMARY``.

Every step gets fresh empty files; after the step (whether it succeeded or not) they are read back
with the runner's rules: ``NAME=VALUE`` lines split at the first ``=`` with nothing trimmed, the
``NAME<<DELIMITER`` form up to a line that is exactly the delimiter, ``\\n`` as the only line break
on Linux/macOS, later duplicates winning. A malformed file fails the step with
``Unable to process file command '<name>' successfully.``
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_LIMIT = 1024 * 1024

# env var -> (file name prefix, the name the runner uses in its error messages)
FILES = {
    "GITHUB_OUTPUT": ("set_output_", "output"),
    "GITHUB_ENV": ("set_env_", "env"),
    "GITHUB_PATH": ("add_path_", "path"),
    "GITHUB_STATE": ("save_state_", "state"),
    "GITHUB_STEP_SUMMARY": ("step_summary_", "step_summary"),
}
BLOCKED_ENV = frozenset({"NODE_OPTIONS"})


class FileCommandError(Exception):
    pass


def _read_line(text: str, index: int) -> tuple[str | None, int, bool]:
    """(line, next index, ended with a newline); ``None`` at the end of the text."""
    if index >= len(text):
        return None, index, False
    end = text.find("\n", index)
    if end < 0:
        return text[index:], len(text), False
    return text[index:end], end + 1, True


def parse_key_values(text: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` and ``NAME<<DELIMITER`` pairs, in file order (the caller lets later ones win)."""
    pairs: list[tuple[str, str]] = []
    line, index, _ = _read_line(text, 0)
    while line is not None:
        if line:
            equals = line.find("=")
            heredoc = line.find("<<")
            if equals >= 0 and (heredoc < 0 or equals < heredoc):
                key, value = line.split("=", 1)
                if not key:
                    raise FileCommandError(f"Invalid format '{line}'. Name must not be empty")
            elif heredoc >= 0:
                key, delimiter = line.split("<<", 1)
                if not key or not delimiter:
                    raise FileCommandError(
                        f"Invalid format '{line}'. Name must not be empty and delimiter must not be empty"
                    )
                start = end = index
                content, index, newline = _read_line(text, index)
                while content != delimiter:
                    if content is None:
                        raise FileCommandError(f"Invalid value. Matching delimiter not found '{delimiter}'")
                    if not newline:
                        raise FileCommandError("Invalid value. EOF marker missing new line.")
                    end = index - 1
                    content, index, newline = _read_line(text, index)
                value = text[start:end] if end > start else ""
            else:
                raise FileCommandError(f"Invalid format '{line}'")
            pairs.append((key, value))
        line, index, _ = _read_line(text, index)
    return pairs


def parse_path_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


@dataclass
class FileCommandResult:
    outputs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    errors: list[str] = field(default_factory=list)  # each fails the step
    warnings: list[str] = field(default_factory=list)  # error annotations that do not fail the step


class FileCommands:
    """One step's set of fresh command files under ``<runner temp>/_runner_file_commands``."""

    def __init__(self, temp: Path) -> None:
        folder = temp / "_runner_file_commands"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = str(uuid.uuid4())
        self.files: dict[str, Path] = {}
        for var, (prefix, _name) in FILES.items():
            path = folder / f"{prefix}{suffix}"
            path.write_bytes(b"")
            self.files[var] = path

    def env(self) -> dict[str, str]:
        return {var: str(path) for var, path in self.files.items()}

    def collect(self) -> FileCommandResult:
        result = FileCommandResult()
        for var, path in self.files.items():
            name = FILES[var][1]
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            text = data.decode("utf-8", errors="replace")
            try:
                if var == "GITHUB_STEP_SUMMARY":
                    if len(data) > SUMMARY_LIMIT:
                        result.warnings.append(
                            f"$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of "
                            f"{SUMMARY_LIMIT // 1024}k, got {len(data) // 1024}k."
                        )
                    elif text.strip():
                        result.summary = text
                elif var == "GITHUB_PATH":
                    result.paths = parse_path_lines(text)
                else:
                    target = {"GITHUB_OUTPUT": result.outputs, "GITHUB_ENV": result.env, "GITHUB_STATE": result.state}[
                        var
                    ]
                    for key, value in parse_key_values(text):
                        if var == "GITHUB_ENV" and key.upper() in BLOCKED_ENV:
                            result.warnings.append(f"Can't store {key} output parameter using '$GITHUB_ENV' command.")
                            continue
                        target[key] = value
            except FileCommandError as exc:
                result.errors.append(f"Unable to process file command '{name}' successfully. {exc}")
        return result
