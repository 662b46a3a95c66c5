"""`runcache pip install` starts without what only a sync needs: an exact hit runs no installer and parses no
requirement, so packaging's parsers stay unimported until a sync or a command-line specifier asks for them."""

from __future__ import annotations

import subprocess
import sys

from runcache.core.pyenv import check_spec
from runcache.core.venvs import desired_set, pins_from_compiled


def test_the_pip_install_command_imports_no_packaging_parser() -> None:
    code = (
        "import sys, runcache.cli.python, runcache.client.pyenv; "
        "print(sorted(m for m in sys.modules if m == 'packaging' or m.startswith('packaging.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_functions_that_need_packaging_still_work() -> None:
    assert check_spec(" flask==3.1.2 ") == "flask==3.1.2"
    pins = pins_from_compiled("Flask==3.1.2\nzope.interface==7.0 # via x\n")
    assert sorted(pins) == ["flask", "zope-interface"]
    assert sorted(desired_set(pins, {"Pip": "25.0"})) == ["flask", "pip", "zope-interface"]
