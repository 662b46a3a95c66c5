"""`runcache pip install` starts without what only a sync needs: an exact hit runs no installer and parses no
requirement, so packaging's parsers stay unimported until a sync or a command-line specifier asks for them."""

from __future__ import annotations

import subprocess
import sys

from runcache.core.pyenv import check_spec
from runcache.core.venvs import desired_set, pins_from_compiled


def _loaded_after(imports: str, *packages: str) -> list[str]:
    """The modules of `packages` a fresh interpreter holds after `import <imports>`."""
    code = (
        f"import sys, {imports}; "
        f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {packages!r} or m in {packages!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_pip_install_command_imports_no_packaging_parser() -> None:
    assert _loaded_after("runcache.cli.python, runcache.client.pyenv", "packaging") == []


def test_the_functions_that_need_packaging_still_work() -> None:
    assert check_spec(" flask==3.1.2 ") == "flask==3.1.2"
    pins = pins_from_compiled("Flask==3.1.2\nzope.interface==7.0 # via x\n")
    assert sorted(pins) == ["flask", "zope-interface"]
    assert sorted(desired_set(pins, {"Pip": "25.0"})) == ["flask", "pip", "zope-interface"]


def test_the_probe_module_loads_without_the_cache_client() -> None:
    # `runcache pip install` starts the interpreter probe before it imports the cache client (httpx and the
    # transfer code), so the probe runs beside those imports instead of after them.
    assert _loaded_after("runcache.client.pyenv.probe", "httpx", "runcache.client.transfer") == []


def test_an_early_probe_answers_once_and_a_stuck_one_is_ended(tmp_path) -> None:
    import time

    import pytest

    from runcache.client.pyenv.probe import InstallerError, Probe

    probe = Probe(sys.executable)
    first = probe.result()
    assert first.version == sys.version_info[:3] and probe.result() is first
    probe.close()

    stuck = tmp_path / "python3"
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")
    stuck.chmod(0o755)
    slow = Probe(str(stuck), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(InstallerError, match=r"no answer within 0\.5 s"):
        slow.result()
    assert time.monotonic() - started < 10
    assert slow._proc is not None and slow._proc.poll() is not None  # killed and reaped, not left running

    ended = Probe(str(stuck))
    ended.close()
    assert ended._proc is not None and ended._proc.poll() is not None

    with pytest.raises(InstallerError, match="could not run"):
        Probe(str(tmp_path / "missing")).result()
