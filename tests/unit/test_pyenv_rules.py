"""The pure rules behind `runcache pip install`: key layout and what changes it, requirement includes, the
dependency view of pyproject.toml, launcher and activation-script relocation, resolved sets and sync plans."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runcache.client.pyenv.inputs import collect_inputs
from runcache.core.pyenv import (
    Interpreter,
    RequirementInput,
    RequirementsError,
    arch_label,
    check_spec,
    env_keys,
    interpreter_digest,
    project_dependency_view,
    python_tag,
    requirement_includes,
    requirements_digest,
)
from runcache.core.venvs import (
    Pin,
    desired_set,
    differences,
    launcher_header,
    parse_pyvenv_cfg,
    pins_from_compiled,
    pins_from_pip_report,
    plan_script_relocation,
    plan_sync,
    relocate_launcher,
    relocate_pyvenv_cfg,
)

INTERP = Interpreter(
    implementation="cpython",
    version=(3, 11, 7),
    build="3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
    cache_tag="cpython-311",
    soabi="cpython-311-x86_64-linux-gnu",
    abiflags="",
    freethreaded=False,
    system="Linux",
    machine="x86_64",
    bits=64,
    platform="linux-x86_64",
    libc="glibc 2.36",
    executable="/usr/local/bin/python3",
    base_executable="/opt/py/3.11.7/bin/python3.11",
    real_executable="/opt/py/3.11.7/bin/python3.11",
    ensurepip="23.2.1",
)


# --- keys ---------------------------------------------------------------------------------------------
def test_key_layout_has_a_readable_prefix_that_restore_keys_cut_at() -> None:
    digest = requirements_digest("pip", "23.2.1", [RequirementInput("requirements", "r.txt", b"flask\n")])
    keys = env_keys(INTERP, "pip", digest)
    prefix = f"pyenv-Linux-x64-cp311-{interpreter_digest(INTERP)}-pip-"
    assert keys.key == prefix + digest and keys.restore_keys == [prefix]
    assert keys.cache_key == f"pyenv-cache-Linux-x64-pip-{digest}" and keys.cache_restore_keys == [
        "pyenv-cache-Linux-x64-pip-"
    ]
    assert len(interpreter_digest(INTERP)) == 16 and len(digest) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"real_executable": "/opt/other/bin/python3.11"},
        {"version": (3, 11, 8)},
        {"build": "3.11.7 (main, Jun  1 2026) [Clang 17]"},
        {"soabi": "cpython-311d-x86_64-linux-gnu", "abiflags": "d"},
        {"libc": "glibc 2.31"},
        {"platform": "linux-aarch64"},
    ],
)
def test_every_part_of_the_interpreters_identity_changes_its_digest(change: dict) -> None:
    assert interpreter_digest(dataclasses.replace(INTERP, **change)) != interpreter_digest(INTERP)


def test_the_path_an_interpreter_is_called_by_is_not_its_identity() -> None:
    shim = dataclasses.replace(INTERP, executable="/root/.pyenv/shims/python3", base_executable="/opt/py/bin/python3")
    assert interpreter_digest(shim) == interpreter_digest(INTERP)


def test_requirements_digest_sees_content_installer_version_specs_and_args_but_not_file_names() -> None:
    inputs = [RequirementInput("requirements", "r.txt", b"flask==3.1.2\n")]
    base = requirements_digest("uv", "0.9.1", inputs)
    assert (
        requirements_digest("uv", "0.9.1", [RequirementInput("requirements", "elsewhere/r.txt", b"flask==3.1.2\n")])
        == base
    )
    assert requirements_digest("uv", "0.9.2", inputs) != base
    assert requirements_digest("uv", "0.9.1", [RequirementInput("constraints", "r.txt", b"flask==3.1.2\n")]) != base
    assert requirements_digest("uv", "0.9.1", inputs, ["six"]) != base
    assert requirements_digest("uv", "0.9.1", inputs, installer_args=["--no-binary", ":all:"]) != base


def test_tags_and_labels() -> None:
    assert python_tag(INTERP) == "cp311"
    assert python_tag(dataclasses.replace(INTERP, version=(3, 13, 1), freethreaded=True)) == "cp313t"
    assert python_tag(dataclasses.replace(INTERP, implementation="pypy", version=(3, 10, 14))) == "pp310"
    assert arch_label("aarch64", 64) == "arm64" and arch_label("AMD64", 64) == "x64" and arch_label("i686", 32) == "x86"
    with pytest.raises(ValueError):
        env_keys(INTERP, "poetry", "0" * 64)


# --- requirement inputs -----------------------------------------------------------------------------------
def test_includes_in_every_spelling_pip_accepts() -> None:
    text = (
        "# a comment -r not-this.txt\n"
        "-r base.txt\n"
        "--requirement=dev.txt  # trailing comment\n"
        "-rshort.txt\n"
        "--constraint ${PINS}/c.txt\n"
        "-c \\\n  split.txt\n"
        "flask==3.1.2 --hash=sha256:abc\n"
        "--index-url https://example.invalid/simple\n"
    )
    assert requirement_includes(text, {"PINS": "pins"}) == [
        ("requirements", "base.txt"),
        ("requirements", "dev.txt"),
        ("requirements", "short.txt"),
        ("constraints", "pins/c.txt"),
        ("constraints", "split.txt"),
    ]


def test_remote_requirement_files_and_local_paths_cannot_be_keyed() -> None:
    with pytest.raises(RequirementsError, match="remote"):
        requirement_includes("-r https://example.invalid/reqs.txt\n", {})
    with pytest.raises(RequirementsError, match="local projects"):
        check_spec("./src/mypkg")
    assert check_spec("flask[async]>=3 ; python_version >= '3.9'")
    assert check_spec("pkg @ https://example.invalid/pkg-1.0-py3-none-any.whl")


def test_includes_are_followed_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "main.txt").write_text("-r common.txt\n-c ../pins.txt\nflask\n")
    (tmp_path / "reqs" / "common.txt").write_text("requests\n-r main.txt\n")  # a cycle: read once
    (tmp_path / "pins.txt").write_text("-r more-pins.txt\n")
    (tmp_path / "more-pins.txt").write_text("urllib3==2.5.0\n")
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "pylock.dev.toml").write_text("lock-version = '1.0'\n")
    found = collect_inputs([str(tmp_path / "reqs" / "main.txt")], [], tmp_path, {})
    assert [(i.role, Path(i.label).name) for i in found] == [
        ("requirements", "main.txt"),
        ("requirements", "common.txt"),
        ("constraints", "pins.txt"),
        ("constraints", "more-pins.txt"),  # what a constraints file pulls in constrains too
        ("lock", "uv.lock"),
        ("lock", "pylock.dev.toml"),
    ]
    with pytest.raises(RequirementsError, match="no such requirements file"):
        collect_inputs([str(tmp_path / "missing.txt")], [], tmp_path, {})


def test_pyproject_counts_only_what_decides_the_environment() -> None:
    doc = {
        "project": {"name": "app", "version": "1.0", "description": "x", "dependencies": ["flask"]},
        "tool": {"ruff": {"line-length": 99}, "uv": {"constraint-dependencies": ["urllib3<3"]}},
        "dependency-groups": {"dev": ["pytest"]},
    }
    view = project_dependency_view(doc)
    assert view == {
        "project": {"name": "app", "dependencies": ["flask"]},
        "tool": {"uv": {"constraint-dependencies": ["urllib3<3"]}},
        "dependency-groups": {"dev": ["pytest"]},
    }
    edited = {
        **doc,
        "tool": {**doc["tool"], "ruff": {"line-length": 120}},
        "project": {**doc["project"], "version": "2"},
    }
    assert project_dependency_view(edited) == view


# --- relocation ---------------------------------------------------------------------------------------------
OLD, NEW = "/work/a/.venv", "/builds/b/.venv"
SCRIPT_BODY = b"# -*- coding: utf-8 -*-\nimport sys\nfrom flask.cli import main\nsys.exit(main())\n"


def test_plain_shebang_is_moved_and_a_long_or_spaced_path_gets_the_sh_trampoline() -> None:
    script = b"#!" + OLD.encode() + b"/bin/python3.11\n" + SCRIPT_BODY
    assert relocate_launcher(script, OLD, NEW) == b"#!" + NEW.encode() + b"/bin/python3.11\n" + SCRIPT_BODY
    long = "/builds/" + "x" * 130 + "/.venv"
    moved = relocate_launcher(script, OLD, long)
    assert moved == launcher_header(long + "/bin/python3.11") + SCRIPT_BODY
    assert moved.startswith(b"#!/bin/sh\n'''exec' \"" + long.encode() + b'/bin/python3.11" "$0" "$@"\n')
    # and back: the trampoline (pip's double quotes, uv's single quotes) is read as a launcher too
    assert relocate_launcher(moved, long, OLD) == script
    uv_style = b"#!/bin/sh\n'''exec' '" + OLD.encode() + b"/bin/python' \"$0\" \"$@\"\n' '''\n" + SCRIPT_BODY
    assert relocate_launcher(uv_style, OLD, NEW) == b"#!" + NEW.encode() + b"/bin/python\n" + SCRIPT_BODY


def test_launchers_of_other_interpreters_and_longer_names_are_left_alone() -> None:
    assert relocate_launcher(b"#!/usr/bin/env python3\nprint()\n", OLD, NEW) is None
    assert relocate_launcher(b"#!/work/a/.venv2/bin/python\n", OLD, NEW) is None
    assert relocate_launcher(b"\x7fELF\x02\x01", OLD, NEW) is None


def test_activation_scripts_are_rewritten_and_anything_else_naming_the_path_refuses_the_move() -> None:
    scripts = {
        "bin/activate": f'VIRTUAL_ENV="{OLD}"\nexport VIRTUAL_ENV\n'.encode(),
        "bin/activate.fish": f"set -gx VIRTUAL_ENV '{OLD}'\n".encode(),
        "bin/flask": b"#!" + OLD.encode() + b"/bin/python\n" + SCRIPT_BODY,
        "bin/ruff": b"\x7fELF binary without the path",
    }
    plan = plan_script_relocation(scripts, OLD, NEW)
    assert not plan.refused and sorted(plan.rewrites) == ["bin/activate", "bin/activate.fish", "bin/flask"]
    assert plan.rewrites["bin/activate"] == f'VIRTUAL_ENV="{NEW}"\nexport VIRTUAL_ENV\n'.encode()

    odd = {**scripts, "bin/tool.sh": f"#!/bin/sh\nexec {OLD}/bin/python -m tool\n".encode()}
    assert "bin/tool.sh" in plan_script_relocation(odd, OLD, NEW).refused
    assert "cannot quote" in plan_script_relocation(scripts, OLD, "/builds/$x/.venv").refused
    assert "cannot quote" in plan_script_relocation(scripts, OLD, '/builds/"b"/.venv').refused


def test_pyvenv_cfg_moves_its_command_but_never_home() -> None:
    text = f"home = /opt/py/bin\nversion = 3.11.7\ncommand = /opt/py/bin/python3 -m venv {OLD}\n"
    moved = relocate_pyvenv_cfg(text, OLD, NEW)
    assert moved == f"home = /opt/py/bin\nversion = 3.11.7\ncommand = /opt/py/bin/python3 -m venv {NEW}\n"
    assert parse_pyvenv_cfg("Home = /x\nno separator\nversion_info = 3.12.1\n") == {
        "home": "/x",
        "version_info": "3.12.1",
    }


# --- resolved sets and sync plans -----------------------------------------------------------------------
def test_resolutions_from_pip_reports_and_uv_compile_output() -> None:
    report = {
        "install": [
            {"metadata": {"name": "Flask", "version": "3.1.2"}, "is_direct": False, "download_info": {"url": "u"}},
            {
                "metadata": {"name": "My_Pkg", "version": "1.0"},
                "is_direct": True,
                "download_info": {"url": "https://example.invalid/my_pkg-1.0-py3-none-any.whl"},
            },
        ]
    }
    pins = pins_from_pip_report(report)
    assert pins["flask"] == Pin("flask", "3.1.2") and pins["my-pkg"].version is None
    compiled = "flask==3.1.2\n    # via -r requirements.in\nMarkupSafe==3.0.2\nmy-pkg @ https://example.invalid/x.whl\n"
    assert pins_from_compiled(compiled) == {
        "flask": Pin("flask", "3.1.2"),
        "markupsafe": Pin("markupsafe", "3.0.2"),
        "my-pkg": Pin("my-pkg", None, "https://example.invalid/x.whl"),
    }


def test_sync_plan_removes_what_nothing_asks_for_and_puts_changed_seed_packages_back() -> None:
    pins = {"flask": Pin("flask", "3.1.2")}
    desired = desired_set(pins, {"pip": "23.2.1", "setuptools": "65.5.0"})
    installed = {"flask": "3.1.2", "pip": "25.0", "setuptools": "65.5.0", "requests": "2.32.5"}
    plan = plan_sync(installed, desired)
    assert plan.remove == ["requests"] and plan.reinstall == {"pip": "23.2.1"}
    assert differences(installed, desired) == ["pip is 25.0, not 23.2.1", "requests 2.32.5 is not asked for"]
    assert differences({"flask": "3.1.2.0", "pip": "23.2.1", "setuptools": "65.5.0"}, desired) == []
