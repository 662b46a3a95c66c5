"""The runner's file-command formats: NAME=VALUE, NAME<<DELIMITER heredocs, PATH lines, summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcache.runner.commands import CommandEffects, CommandParser, Masker
from runcache.runner.filecommands import SUMMARY_LIMIT, FileCommandError, FileCommands, parse_key_values


def test_name_value_splits_at_first_equals_and_trims_nothing() -> None:
    assert parse_key_values("a=b=c\nspaced = x \nempty=\n") == [("a", "b=c"), ("spaced ", " x "), ("empty", "")]


def test_heredoc_multiline_keeps_blank_lines_and_drops_the_last_newline() -> None:
    text = "multi<<EOF\nline one\n\nline three\nEOF\nafter=1\n"
    assert parse_key_values(text) == [("multi", "line one\n\nline three"), ("after", "1")]


def test_heredoc_with_random_delimiter_and_equals_inside() -> None:
    text = 'json<<ghadelimiter_5f1c\n{"a": "x=y"}\nEOF\nghadelimiter_5f1c\n'
    assert parse_key_values(text) == [("json", '{"a": "x=y"}\nEOF')]


def test_heredoc_empty_value_and_value_of_one_empty_line() -> None:
    assert parse_key_values("e<<X\nX\n") == [("e", "")]
    assert parse_key_values("e<<X\n\nX\n") == [("e", "")]


def test_equals_before_heredoc_marker_is_name_value() -> None:
    assert parse_key_values("a=b<<c\n") == [("a", "b<<c")]
    assert parse_key_values("a<<b=c\nx\nb=c\n") == [("a", "x")]


def test_carriage_return_stays_in_value_on_linux() -> None:
    assert parse_key_values("a=b\r\n") == [("a", "b\r")]


def test_last_delimiter_line_without_newline_is_fine() -> None:
    assert parse_key_values("a<<EOF\nv\nEOF") == [("a", "v")]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a<<EOF\nvalue\n", "Matching delimiter not found 'EOF'"),
        ("a<<EOF\nvalue", "EOF marker missing new line"),
        ("just text\n", "Invalid format 'just text'"),
        ("<<EOF\nx\nEOF\n", "Name must not be empty"),
        ("a<<\nx\n\n", "delimiter must not be empty"),
        ("=value\n", "Name must not be empty"),
    ],
)
def test_malformed_files(text: str, needle: str) -> None:
    with pytest.raises(FileCommandError, match=needle.replace("'", ".")):
        parse_key_values(text)


def test_file_commands_collect_everything(tmp_path: Path) -> None:
    fc = FileCommands(tmp_path)
    env = fc.env()
    assert set(env) == {"GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE", "GITHUB_STEP_SUMMARY"}
    for path in env.values():
        assert Path(path).parent == tmp_path / "_runner_file_commands" and Path(path).read_bytes() == b""
    Path(env["GITHUB_OUTPUT"]).write_text("x=1\nx=2\nm<<E\na\nb\nE\n")
    Path(env["GITHUB_ENV"]).write_text("A=1\nNODE_OPTIONS=--inspect\n")
    Path(env["GITHUB_PATH"]).write_text("/one\n\n/two\n")
    Path(env["GITHUB_STATE"]).write_text("s=v\n")
    Path(env["GITHUB_STEP_SUMMARY"]).write_text("## Hello\n")
    result = fc.collect()
    assert result.outputs == {"x": "2", "m": "a\nb"}  # later duplicates win
    assert result.env == {"A": "1"}
    assert any("NODE_OPTIONS" in w for w in result.warnings)
    assert result.paths == ["/one", "/two"]
    assert result.state == {"s": "v"}
    assert result.summary == "## Hello\n"
    assert result.errors == []


def test_fresh_files_per_step(tmp_path: Path) -> None:
    a, b = FileCommands(tmp_path), FileCommands(tmp_path)
    assert a.env()["GITHUB_OUTPUT"] != b.env()["GITHUB_OUTPUT"]


def test_parse_errors_name_the_command_and_oversized_summary(tmp_path: Path) -> None:
    fc = FileCommands(tmp_path)
    Path(fc.env()["GITHUB_OUTPUT"]).write_text("broken\n")
    Path(fc.env()["GITHUB_STEP_SUMMARY"]).write_bytes(b"x" * (SUMMARY_LIMIT + 1))
    result = fc.collect()
    assert result.errors == ["Unable to process file command 'output' successfully. Invalid format 'broken'"]
    assert result.summary == ""
    assert "upload aborted" in result.warnings[0]


def test_stdout_commands() -> None:
    effects = CommandEffects()
    p = CommandParser(effects)
    assert p.feed("plain").display == "plain"
    shown = p.feed("::error file=app.py,line=3,title=Bad%2C bad::went%0Awrong")
    assert shown.kind == "annotation" and "app.py:3" in (shown.display or "")
    assert effects.annotations[0].message == "went\nwrong" and effects.annotations[0].title == "Bad, bad"
    assert p.feed("::group::Build").kind == "group"
    assert p.feed("::endgroup::").display is None
    assert p.feed("::debug::hidden").display is None
    assert p.feed("::add-mask::s3cret").display is None and effects.masks == ["s3cret"]
    p.feed("::set-output name=legacy::value")
    assert effects.outputs == {"legacy": "value"}
    assert "deprecated" in effects.annotations[-1].message
    p.feed("::set-env name=X::1")
    assert effects.failed and "disabled" in effects.annotations[-1].message and effects.env == {}
    p.feed("::stop-commands::tok")
    assert p.feed("::error::not a command now").display == "::error::not a command now"
    assert p.feed("::tok::").display is None
    assert p.feed("::warning::back").kind == "annotation"


def test_unsecure_commands_when_allowed() -> None:
    effects = CommandEffects()
    p = CommandParser(effects, allow_unsecure=True)
    p.feed("::set-env name=X::1")
    p.feed("::add-path::/opt/bin")
    assert effects.env == {"X": "1"} and effects.paths == ["/opt/bin"] and not effects.failed


def test_masker() -> None:
    m = Masker(["hunter2"])
    m.add("multi\nline")
    assert m("pw hunter2 and multi and line") == "pw *** and *** and ***"
