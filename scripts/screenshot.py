#!/usr/bin/env python3
"""Regenerate the README's screenshot of the Caches page (docs/caches-page.png) from realistic data.

    .venv/bin/python scripts/screenshot.py                # writes docs/caches-page.png
    .venv/bin/python scripts/screenshot.py --out /tmp/x.png --scale 0.001

It starts a runcache server on a temporary data directory, saves the caches a week of CI on two
repositories would leave (pip, npm, Gradle, setup-python, Playwright keys on a few branches and a
pull request) through the real v2 cache protocol, signs in through the login form with a
management token and takes the picture at a desktop width with Debian's Chromium, as the browser
tests do. Sizes on the page are the stored bytes, so the entries really hold that many (zeros):
about 1.4 GB is written to the temporary directory and removed afterwards. `--scale` shrinks them
for a quick check.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The test harness already knows how to start a server and save an entry as a job would.
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Server  # noqa: E402
from mgmt_helpers import save, version_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
OWNER = "acme"
SHOWN = f"{OWNER}/storefront"  # the repository whose page is photographed
MB = 1_000_000


def fake_hash(seed: str) -> str:
    """A stable stand-in for `hashFiles(...)`, so the picture only changes when the page does."""
    return hashlib.sha256(seed.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    branch: str  # a branch name, or a full ref such as a pull request's merge ref
    key: str
    paths: str  # what the job cached: the entry's version is derived from it, as the client does
    megabytes: float  # decimal MB, so the page shows uneven MiB as real caches do
    created: timedelta  # how long ago
    used: timedelta
    repo: str = SHOWN

    @property
    def ref(self) -> str:
        return self.branch if self.branch.startswith("refs/") else f"refs/heads/{self.branch}"


MIN, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
NPM, PIP, GRADLE = "~/.npm", "~/.cache/pip", "~/.gradle/caches ~/.gradle/wrapper"
PR = "refs/pull/418/merge"
ENTRIES = [
    Entry("main", f"node-cache-Linux-x64-npm-{fake_hash('lock main')}", NPM, 187.4, 2 * D, 40 * MIN),
    Entry("feature/checkout-v2", f"node-cache-Linux-x64-npm-{fake_hash('lock checkout')}", NPM, 188.1, 9 * H, 3 * H),
    Entry(PR, f"node-cache-Linux-x64-npm-{fake_hash('lock pr')}", NPM, 188.3, 5 * H, 5 * H),
    Entry("main", "Linux-playwright-1.49.1", "~/.cache/ms-playwright", 262.7, 4 * D, 2 * H),
    Entry("main", f"setup-python-Linux-x64-24.04-Ubuntu-python-3.12.8-pip-{fake_hash('req')}", PIP, 96.3, 3 * D, 2 * H),
    Entry("main", f"Linux-pip-{fake_hash('req-dev')}", PIP, 41.8, 6 * D, 20 * H),
    Entry("main", f"Linux-nextjs-{fake_hash('next main')}", ".next/cache", 58.2, 1 * D, 1 * D),
    Entry("feature/checkout-v2", f"Linux-eslint-{fake_hash('eslint')}", ".eslintcache", 3.15, 9 * H, 9 * H),
    Entry("main", f"Linux-mypy-{fake_hash('mypy')}", ".mypy_cache", 0.812, 5 * D, 4 * D),
    Entry("main", f"pre-commit-3|{fake_hash('pre-commit')}", "~/.cache/pre-commit", 23.6, 6 * D, 6 * D),
    # A second repository, so the index page lists two (Gradle caches are the big ones).
    Entry("main", f"Linux-gradle-{fake_hash('gradle main')}", GRADLE, 412.5, 2 * D, 1 * H, f"{OWNER}/payments-api"),
]


def backdate(server: Server, ages: dict[int, tuple[timedelta, timedelta]]) -> None:
    """Entries saved a moment ago would all read "less than a minute ago"; give them a week's spread."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with sqlite3.connect(server.data_dir / "metadata.db") as db:
        for entry_id, (created, used) in ages.items():
            db.execute(
                "UPDATE cache_entries SET created_at = ?, last_accessed_at = ? WHERE id = ?",
                ((now - created).isoformat(" "), (now - used).isoformat(" "), entry_id),
            )


def seed(server: Server, scale: float) -> None:
    ages = {}
    for e in ENTRIES:
        data = bytes(max(1, int(e.megabytes * MB * scale)))
        ages[save(server, e.key, data, repo=e.repo, ref=e.ref, version=version_for(e.paths))] = (e.created, e.used)
        del data  # the largest is 400 MB: hold one at a time
    backdate(server, ages)


def shoot(server: Server, out: Path, width: int, height: int) -> None:
    from playwright.sync_api import sync_playwright

    target = f"{server.url}/{SHOWN}/actions/caches"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, color_scheme="light")
            page.goto(target)  # not signed in: the login form, which sends us back here
            page.get_by_label("Management token").fill(server.admin_token(org=OWNER))
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(target)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "caches-page.png", help="where to write the PNG")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default 1280)")
    parser.add_argument("--height", type=int, default=800, help="viewport height; the shot is the full page")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every entry's size (0.001 for a quick run)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no browser at {CHROMIUM}: run scripts/setup --dev", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="runcache-screenshot-") as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            seed(server, args.scale)
            shoot(server, args.out, args.width, args.height)
        finally:
            server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
