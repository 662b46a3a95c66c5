"""Workflow commands a step prints on stdout: ``::error::``, ``::warning::``, ``::notice::``, ``::group::``,
``::add-mask::``, ``::debug::``, ``::stop-commands::``, and the deprecated ``::set-output::``/``::save-state::``.

``::set-env::`` and ``::add-path::`` are disabled unless ``ACTIONS_ALLOW_UNSECURE_COMMANDS=true``, as on GitHub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMMAND_RE = re.compile(r"^::([A-Za-z][A-Za-z0-9_-]*)(?: ([^:]*))?::(.*)$", re.DOTALL)
SET_OUTPUT_DEPRECATED = (
    "The `set-output` command is deprecated and will be disabled soon. Please upgrade to using Environment "
    "Files. For more information see: "
    "https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/"
)
SAVE_STATE_DEPRECATED = SET_OUTPUT_DEPRECATED.replace("`set-output`", "`save-state`")
UNSECURE_DISABLED = (
    "The `{0}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command "
    "execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more "
    "information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"
)


def unescape_data(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def unescape_property(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


@dataclass
class Annotation:
    level: str  # error | warning | notice
    message: str
    title: str = ""
    file: str = ""
    line: str = ""

    def render(self) -> str:
        where = ""
        if self.file:
            where = f" ({self.file}{':' + self.line if self.line else ''})"
        title = f"{self.title}: " if self.title else ""
        return f"{self.level.capitalize()}{where}: {title}{self.message}"

    def as_json(self) -> dict[str, str]:
        out = {"level": self.level, "message": self.message}
        for key in ("title", "file", "line"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass
class CommandEffects:
    """What a step's stdout commands asked for."""

    annotations: list[Annotation] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    failed: bool = False


@dataclass
class Parsed:
    display: str | None  # the line to show (None: hidden)
    kind: str = "text"  # text | group | endgroup | debug | annotation


class CommandParser:
    def __init__(self, effects: CommandEffects, *, allow_unsecure: bool = False, debug: bool = False) -> None:
        self.effects = effects
        self.allow_unsecure = allow_unsecure
        self.debug = debug
        self._stop_token: str | None = None

    def feed(self, line: str) -> Parsed:
        stripped = line.lstrip()
        if not stripped.startswith("::"):
            return Parsed(line)
        m = COMMAND_RE.match(stripped)
        if not m:
            return Parsed(line)
        name, props_text, data = m.group(1), m.group(2) or "", m.group(3)
        if self._stop_token is not None:
            if name == self._stop_token:
                self._stop_token = None
                return Parsed(None)
            return Parsed(line)
        props: dict[str, str] = {}
        for part in props_text.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                props[k.strip()] = unescape_property(v)
        data = unescape_data(data)
        lname = name.lower()
        e = self.effects
        if lname in ("error", "warning", "notice"):
            e.annotations.append(
                Annotation(lname, data, props.get("title", ""), props.get("file", ""), props.get("line", ""))
            )
            return Parsed(e.annotations[-1].render(), "annotation")
        if lname == "group":
            return Parsed(data, "group")
        if lname == "endgroup":
            return Parsed(None, "endgroup")
        if lname == "debug":
            return Parsed(f"##[debug]{data}" if self.debug else None, "debug")
        if lname == "add-mask":
            if data.strip():
                e.masks.append(data.strip())
            return Parsed(None)
        if lname == "stop-commands":
            self._stop_token = data
            return Parsed(None)
        if lname == "echo":
            return Parsed(None)
        if lname in ("add-matcher", "remove-matcher"):
            return Parsed(None)
        if lname == "set-output":
            e.annotations.append(Annotation("warning", SET_OUTPUT_DEPRECATED))
            if props.get("name"):
                e.outputs[props["name"]] = data
            return Parsed(None)
        if lname == "save-state":
            e.annotations.append(Annotation("warning", SAVE_STATE_DEPRECATED))
            if props.get("name"):
                e.state[props["name"]] = data
            return Parsed(None)
        if lname in ("set-env", "add-path"):
            if not self.allow_unsecure:
                e.annotations.append(Annotation("error", UNSECURE_DISABLED.format(lname)))
                e.failed = True
                return Parsed(None)
            if lname == "set-env" and props.get("name"):
                e.env[props["name"]] = data
            elif lname == "add-path" and data:
                e.paths.append(data)
            return Parsed(None)
        return Parsed(line)


class Masker:
    """Replaces secret values (and ``::add-mask::`` values) by ``***`` in everything shown or logged."""

    def __init__(self, values: list[str] | None = None) -> None:
        self._values: list[str] = []
        for v in values or []:
            self.add(v)

    def add(self, value: str) -> None:
        for part in [value, *value.splitlines()]:
            part = part.strip()
            if len(part) >= 1 and part not in self._values:
                self._values.append(part)
        self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, "***")
        return text
