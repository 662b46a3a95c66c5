"""The pure rules of the Python setup actions' caches: setup-python's keys for pip/pipenv/poetry and poetry's
configuration, setup-uv's key, version matching and version files."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcache.runner.actions import setup_python, setup_uv
from runcache.runner.actions.base import ActionFailed

H = "ab" * 32


def test_setup_python_keys_per_manager() -> None:
    seg = "-24.04-Ubuntu"
    assert setup_python.cache_keys("pip", "Linux", "x64", seg, "3.12.8", H) == (
        f"setup-python-Linux-x64-24.04-Ubuntu-python-3.12.8-pip-{H}",
        ["setup-python-Linux-x64-24.04-Ubuntu-python-3.12.8-pip"],
    )
    assert setup_python.cache_keys("pipenv", "Linux", "x64", seg, "3.12.8", H) == (
        f"setup-python-Linux-x64-24.04-Ubuntu-python-3.12.8-pipenv-{H}",
        [],
    )
    assert setup_python.cache_keys("poetry", "macOS", "arm64", "", "3.11.9", H) == (
        f"setup-python-macOS-arm64-python-3.11.9-poetry-v2-{H}",
        [],
    )


@pytest.mark.parametrize(
    ("info", "segment"),
    [
        (("Ubuntu", "24.04"), "-24.04-Ubuntu"),
        (("debian", "12"), "-12-debian"),
        (("RedHatEnterpriseLinux", "9.4"), "-9-rhel"),  # lsb_release's spelling
        (("rhel", "9.4"), "-9-rhel"),  # os-release's
    ],
)
def test_linux_key_segment(monkeypatch: pytest.MonkeyPatch, info: tuple[str, str], segment: str) -> None:
    monkeypatch.setattr(setup_python.platform, "system", lambda: "Linux")
    monkeypatch.setattr(setup_python, "linux_os_info", lambda: info)
    assert setup_python.os_key_segment() == segment


def test_poetry_config_and_paths(tmp_path: Path) -> None:
    text = (
        'cache-dir = "/home/u/.cache/pypoetry"\n'
        "experimental.system-git-client = false\n"
        "installer.max-workers = null\n"
        "virtualenvs.in-project = true\n"
        'virtualenvs.path = "{cache-dir}/virtualenvs"  # /home/u/.cache/pypoetry/virtualenvs\n'
        "[repositories]\n"
    )
    config = setup_python.parse_poetry_config(text)
    assert config["cache-dir"] == "/home/u/.cache/pypoetry"
    assert config["virtualenvs.in-project"] is True and config["installer.max-workers"] is None
    assert setup_python.poetry_cache_paths(tmp_path, config) == [
        "/home/u/.cache/pypoetry/virtualenvs",
        str(tmp_path / ".venv"),
    ]
    config["virtualenvs.in-project"] = None  # poetry's default: only the shared folder
    assert setup_python.poetry_cache_paths(tmp_path, config) == ["/home/u/.cache/pypoetry/virtualenvs"]


def test_setup_uv_key() -> None:
    common = {"arch": "x86_64", "platform": "unknown-linux-gnu", "os_version": "ubuntu-24.04"}
    assert (
        setup_uv.cache_key(**common, python_version="3.12", file_hash=H)
        == f"setup-uv-2-x86_64-unknown-linux-gnu-ubuntu-24.04-3.12-{H}"
    )
    assert (
        setup_uv.cache_key(**common, python_version="", file_hash="", pruned=True, cache_python=True, suffix="a b")
        == "setup-uv-2-x86_64-unknown-linux-gnu-ubuntu-24.04-unknown-pruned-py-no-dependency-glob-a%20b"
    )
    assert setup_uv.cache_key(**common, python_version=">=3.11", file_hash=H).endswith(f"-%3E%3D3.11-{H}")
    assert setup_uv.uv_arch("x64") == "x86_64" and setup_uv.uv_arch("arm64") == "aarch64"


def test_os_name_version(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\n')
    assert setup_uv.os_name_version((str(release),)) == "ubuntu-24.04"
    release.write_text("ID=debian\nVERSION_CODENAME=trixie\n")
    assert setup_uv.os_name_version((str(release),)) == "debian-trixie"
    release.write_text("ID=void\n")
    assert setup_uv.os_name_version((str(tmp_path / "missing"), str(release))) == "void"
    with pytest.raises(ActionFailed):
        setup_uv.os_name_version((str(tmp_path / "missing"),))


@pytest.mark.parametrize(
    ("requested", "have", "ok"),
    [
        ("", "0.13.9", True),
        ("latest", "0.13.9", True),
        ("0.13.9", "0.13.9", True),
        ("v0.13.9", "0.13.9", True),
        ("0.13.8", "0.13.9", False),
        ("0.13", "0.13.9", True),
        ("0.13.x", "0.13.9", True),
        ("0.12", "0.13.9", False),
        (">=0.8,<0.14", "0.13.9", True),
        ("<0.13", "0.13.9", False),
    ],
)
def test_uv_version_wanted(requested: str, have: str, ok: bool) -> None:
    assert setup_uv.version_wanted(requested, have) is ok


def test_uv_version_files(tmp_path: Path) -> None:
    (tmp_path / "uv.toml").write_text('required-version = ">=0.5"\n')
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.uv]\nrequired-version = "0.13.9"\n')
    (tmp_path / ".tool-versions").write_text("python 3.12.1\nuv 0.6.0  # pinned\n")
    (tmp_path / "requirements.txt").write_text("flask\nuv==0.7.1\n")
    assert setup_uv.version_from_file(tmp_path / "uv.toml") == ">=0.5"
    assert setup_uv.version_from_file(tmp_path / "pyproject.toml") == "0.13.9"
    assert setup_uv.version_from_file(tmp_path / ".tool-versions") == "0.6.0"
    assert setup_uv.version_from_file(tmp_path / "requirements.txt") == "0.7.1"
    assert setup_uv.version_from_file(tmp_path / "missing.toml") == ""
