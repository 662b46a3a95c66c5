"""The web Caches page in a real browser: Debian's Chromium driven by Playwright (headless, no network)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from helpers import ROOT, Server
from mgmt_helpers import bearer, save

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    # A missing browser fails the suite (scripts/test installs it); a skip would hide the page going untested.
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run scripts/setup --dev"


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
XSS_KEY = "deps-<script>window.__pwned=1</script>-<img src=x onerror=window.__pwned=2>"


@pytest.fixture(scope="module")
def browser_context() -> Iterator:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="runcache-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context) -> Iterator:
    browser_context.clear_cookies()
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    pg.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data").start()
    yield server
    server.stop()


def api_caches(srv: Server, **params) -> list[dict]:
    r = httpx.get(
        srv.url + "/repos/octo/app/actions/caches",
        params={"per_page": 100, **params},
        headers=bearer(srv.admin_token("octo/app")),
    )
    return r.json()["actions_caches"]


def backdate(srv: Server, ages: dict[int, tuple[timedelta, timedelta]]) -> None:
    """Give entries realistic created / last-used times (what a week of CI would leave behind)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with sqlite3.connect(srv.data_dir / "metadata.db") as db:
        for entry_id, (created, used) in ages.items():
            db.execute(
                "UPDATE cache_entries SET created_at = ?, last_accessed_at = ? WHERE id = ?",
                ((now - created).isoformat(" "), (now - used).isoformat(" "), entry_id),
            )


def seed(srv: Server) -> dict[str, int]:
    h, d = timedelta(hours=1), timedelta(days=1)
    entries = {
        "node-modules-Linux-3f2a9c": ("refs/heads/main", 2_400_000, (3 * d, 2 * h)),
        "node-modules-Linux-81bd07": ("refs/heads/feature/login", 2_350_000, (5 * h, 5 * h)),
        "pip-Linux-py3.12-9ac1e4": ("refs/heads/main", 940_000, (2 * d, 30 * h)),
        "pip-Linux-py3.11-77c0aa": ("refs/heads/main", 910_000, (6 * d, 6 * d)),
        "cargo-registry-Linux-e11f": ("refs/pull/42/merge", 3_900_000, (2 * h, 1 * h)),
        "gradle-Linux-5d6e01": ("refs/heads/feature/login", 1_200_000, (4 * d, 3 * d)),
        XSS_KEY: ("refs/heads/main", 4_096, (1 * d, 1 * d)),
    }
    ids = {}
    for key, (ref, size, _) in entries.items():
        ids[key] = save(srv, key, b"\0" * size, ref=ref)
    backdate(srv, {ids[k]: v[2] for k, v in entries.items()})
    return ids


def login(page, srv: Server, token: str, target: str = "/octo/app/actions/caches") -> None:
    page.goto(srv.url + target)
    assert "/-/login" in page.url  # not signed in: sent to the sign-in page, then back
    page.get_by_label("Management token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(srv.url + target)


def row_keys(page) -> list[str]:
    return page.locator("table.caches tbody code.key").all_inner_texts()


def test_login_filter_sort_delete_and_escaping(srv: Server, page) -> None:
    ids = seed(srv)

    page.goto(srv.url + "/-/login")
    page.get_by_label("Management token").fill(srv.token("octo/app"))  # a job token is refused
    page.get_by_role("button", name="Sign in").click()
    assert "management token" in page.get_by_role("alert").inner_text()

    login(page, srv, srv.admin_token("octo/app"))
    assert page.title().startswith("Caches")
    assert len(row_keys(page)) == 7
    assert page.get_by_label("Using").count() == 1  # the usage bar is labelled
    assert "Using 11.16 MiB of 10 GiB (0.1%)" in page.locator("#usage").inner_text()  # one unit family

    # A key with markup is shown as text: no script ran, no element was created from it.
    assert XSS_KEY in row_keys(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("table.caches script, table.caches img").count() == 0

    # Sort by size with the sort menu (it submits itself).
    page.get_by_label("Sort").select_option(label="Largest size")
    page.wait_for_url("**sort=size_in_bytes-desc**")
    assert row_keys(page)[:2] == ["cargo-registry-Linux-e11f", "node-modules-Linux-3f2a9c"]
    page.get_by_label("Sort").select_option(label="Smallest size")
    page.wait_for_url("**sort=size_in_bytes-asc**")
    assert row_keys(page)[0] == XSS_KEY

    # Branch filter.
    page.get_by_label("Branch").select_option(label="feature/login")
    page.wait_for_url("**ref=refs%2Fheads%2Ffeature%2Flogin**")
    assert sorted(row_keys(page)) == ["gradle-Linux-5d6e01", "node-modules-Linux-81bd07"]

    # `key:` filter, from the keyboard, across all branches.
    page.get_by_label("Branch").select_option(label="All branches")
    page.wait_for_load_state()
    box = page.get_by_label("Filter caches")
    box.fill("key:pip-Linux-")
    box.press("Enter")
    page.wait_for_url("**query=key%3Apip-Linux-**")
    assert sorted(row_keys(page)) == ["pip-Linux-py3.11-77c0aa", "pip-Linux-py3.12-9ac1e4"]
    assert "2 caches match this filter" in page.locator("#count").inner_text()

    # Delete one entry: the trash button asks first; dismissing keeps it.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete cache pip-Linux-py3.11-77c0aa").click()
    assert "pip-Linux-py3.11-77c0aa" in row_keys(page)
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete cache pip-Linux-py3.11-77c0aa").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**deleted=1**")
    assert row_keys(page) == ["pip-Linux-py3.12-9ac1e4"]
    assert "Deleted 1 cache." in page.get_by_role("status").inner_text()
    assert ids["pip-Linux-py3.11-77c0aa"] not in {c["id"] for c in api_caches(srv)}  # gone from the API too
    assert box.input_value() == "key:pip-Linux-"  # the filter is kept

    # Bulk delete of a filtered set.
    box.fill("key:node-modules-")
    box.press("Enter")
    page.wait_for_url("**query=key%3Anode-modules-**")
    assert len(row_keys(page)) == 2
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete 2 matching caches").click()
    page.wait_for_url("**deleted=2**")
    assert page.locator("#empty").inner_text().startswith("No caches match this filter")
    assert [c["key"] for c in api_caches(srv, key="node-modules-")] == []
    assert len(api_caches(srv)) == 4  # the rest were not touched

    # Sign out: the session is gone.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/-/login")
    page.goto(srv.url + "/octo/app/actions/caches")
    assert "/-/login" in page.url


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_index_pagination_empty_state_and_screenshot(srv: Server, page, tmp_path: Path) -> None:
    readme_shot = ROOT / "docs" / "caches-page.png"
    before = _digest(readme_shot)
    ids = seed(srv)
    save(srv, "go-mod-Linux-1", b"x" * 5000, repo="octo/api")
    login(page, srv, srv.admin_token(org="octo"), target="/")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2 and "octo/app" in rows.nth(0).inner_text()
    assert "11.16 MiB of 10 GiB (0.1%)" in rows.nth(0).inner_text()  # the used size beside the meter
    page.get_by_role("link", name="octo/app").click()
    page.wait_for_url("**/octo/app/actions/caches")

    # A screenshot of what a user sees, kept with the test's files. The README's picture is made from
    # realistic data by scripts/screenshot.py; a test never rewrites a tracked file (least of all with
    # the XSS keys of this seed).
    shot = tmp_path / "caches-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert _digest(readme_shot) == before

    # Pagination: 30 per page.
    from mgmt_helpers import version_for

    for i in range(25):
        save(srv, "many", b"x", version=version_for(str(i)))
    page.reload()
    assert len(row_keys(page)) == 30
    nav = page.get_by_role("navigation", name="Pagination")
    assert "Page 1 of 2" in nav.inner_text()
    nav.get_by_role("link", name="Next").click()
    page.wait_for_url("**page=2**")
    assert len(row_keys(page)) == 2 and "Page 2 of 2" in nav.inner_text()

    # Empty state.
    for entry_id in [*ids.values()]:
        httpx.delete(srv.url + f"/repos/octo/app/actions/caches/{entry_id}", headers=bearer(srv.admin_token()))
    httpx.delete(srv.url + "/repos/octo/app/actions/caches?key=many", headers=bearer(srv.admin_token()))
    page.goto(srv.url + "/octo/app/actions/caches")
    assert page.locator("#empty h2").inner_text() == "No caches yet"
    assert page.get_by_role("button", name="Delete all").count() == 0


def test_read_only_token_sees_no_delete_buttons(srv: Server, page) -> None:
    seed(srv)
    login(page, srv, srv.admin_token("octo/app", permission="read"))
    assert len(row_keys(page)) == 7
    assert page.get_by_role("button", name="Delete cache", exact=False).count() == 0


LONG_KEYS = {
    "Linux-pip-" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": "refs/heads/main",
    "node-cache-Linux-x64-npm-" + "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752": (
        "refs/heads/feature/a-rather-long-branch-name-for-the-checkout-rework"
    ),
    "setup-python-Linux-x64-24.04-Ubuntu-python-3.12.8-pip-"
    + "fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13": ("refs/pull/418/merge"),
}


NO_SIDEWAYS_SCROLL = """() => document.documentElement.scrollWidth <= document.documentElement.clientWidth
    && [...document.querySelectorAll('.table-wrap')].every(box => box.scrollWidth <= box.clientWidth)"""


def test_narrow_screen_has_no_sideways_scroll(srv: Server, page) -> None:
    for key, ref in LONG_KEYS.items():
        save(srv, key, b"\0" * 300_000, ref=ref)
    page.set_viewport_size({"width": 420, "height": 800})
    login(page, srv, srv.admin_token("octo/app"))

    # The page itself never scrolls sideways: long keys wrap, details go under the key.
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    assert page.evaluate(NO_SIDEWAYS_SCROLL)  # nor is anything hidden in a scrolling table box
    assert sorted(row_keys(page)) == sorted(LONG_KEYS)  # every key is shown whole, not cut
    for key in LONG_KEYS:
        button = page.get_by_role("button", name=f"Delete cache {key}").bounding_box()
        assert button and button["x"] >= 0 and button["x"] + button["width"] <= 420  # reachable without scrolling
    for cell in page.locator("table.caches td").all():
        box = cell.bounding_box()
        assert box and box["x"] + box["width"] <= 420  # every detail of every cache is on screen

    # The filter hint and the index page fit as well.
    page.goto(srv.url + "/octo/app/actions/caches?query=" + "os:" + "x" * 120)
    assert page.locator("#filter-hint").is_visible()
    assert page.evaluate(NO_SIDEWAYS_SCROLL)
    page.goto(srv.url + "/")
    assert page.evaluate(NO_SIDEWAYS_SCROLL)

    # Tablet and small laptop widths: the table or the cards fit too.
    for width in (640, 800, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(srv.url + "/octo/app/actions/caches")
        assert page.evaluate(NO_SIDEWAYS_SCROLL), width


def test_screenshot_script_makes_a_desktop_picture(tmp_path: Path) -> None:
    # scripts/screenshot.py makes the README's picture; a quick run (sizes scaled down) proves it still works.
    out = tmp_path / "shot.png"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshot.py"), "--out", str(out), "--scale", "0.0001"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width == 1280 and height >= 800
