"""The real GitHub REST client, @octokit/rest, pointed at runcache with a base URL (GHES style)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from helpers import NODE_DIR, Server
from mgmt_helpers import bearer, save


@pytest.fixture(autouse=True)
def _octokit_installed() -> None:
    # Missing clients fail the suite (scripts/test installs them) rather than skip it.
    assert (NODE_DIR / "node_modules" / "@octokit" / "rest").is_dir(), (
        "@octokit/rest is missing: run scripts/setup --dev"
    )


def octokit(base_url: str, token: str, calls: list[dict]) -> list[dict]:
    proc = subprocess.run(
        ["node", str(NODE_DIR / "octokit-cache.mjs"), base_url, token, json.dumps(calls)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"octokit printed no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("prefix", ["/api/v3", ""])
def test_octokit_lists_deletes_and_reads_usage(tmp_path: Path, prefix: str) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        ids = {}
        for i, (key, ref) in enumerate(
            [
                ("npm-linux-a", "refs/heads/main"),
                ("npm-linux-b", "refs/heads/main"),
                ("npm-linux-a", "refs/pull/3/merge"),
                ("pip-x", "refs/heads/main"),
                ("pip-y", "refs/heads/feature"),
            ]
        ):
            ids[(key, ref)] = save(srv, key, b"x" * (10 * (i + 1)), repo="octo/app", ref=ref)
        token = srv.admin_token("octo/app")
        base = srv.url + prefix
        owner = {"owner": "octo", "repo": "app"}
        direct = httpx.get(
            srv.url + "/repos/octo/app/actions/caches", params={"per_page": 2, "key": "npm-"}, headers=bearer(token)
        )

        res = octokit(
            base,
            token,
            [
                {"method": "getActionsCacheList", "params": {**owner, "per_page": 2, "key": "npm-"}},
                {"paginate": "getActionsCacheList", "params": {**owner, "per_page": 2, "sort": "size_in_bytes"}},
                {"method": "getActionsCacheList", "params": {**owner, "ref": "refs/pull/3/merge"}},
                {
                    "method": "deleteActionsCacheByKey",
                    "params": {**owner, "key": "npm-linux-a", "ref": "refs/heads/main"},
                },
                {
                    "method": "deleteActionsCacheById",
                    "params": {**owner, "cache_id": ids[("pip-y", "refs/heads/feature")]},
                },
                {
                    "method": "deleteActionsCacheById",
                    "params": {**owner, "cache_id": ids[("pip-y", "refs/heads/feature")]},
                },
                {"method": "deleteActionsCacheByKey", "params": {**owner, "key": "no-such-key"}},
                {"method": "getActionsCacheUsage", "params": owner},
                {"method": "getActionsCacheUsageForOrg", "params": {"org": "octo"}},
                {"request": "GET /repos/{owner}/{repo}/actions/cache/storage-limit", "params": owner},
                {
                    "request": "PUT /repos/{owner}/{repo}/actions/cache/retention-limit",
                    "params": {**owner, "max_cache_retention_days": 14},
                },
                {"request": "GET /repos/{owner}/{repo}/actions/cache/retention-limit", "params": owner},
                {"method": "getActionsCacheList", "params": {"owner": "octo", "repo": "not-mine"}},
            ],
        )
        first, paged, pr, by_key, by_id, by_id_again, no_key, usage, org, storage, put_ret, ret, other = res

        # What GitHub would return: the body as served, pagination via Link that octokit follows.
        assert first["status"] == 200 and first["data"] == direct.json()
        assert first["data"]["total_count"] == 3 and len(first["data"]["actions_caches"]) == 2
        assert 'rel="next"' in first["link"] and (prefix + "/repos/octo/app/actions/caches?") in first["link"]
        assert [c["size_in_bytes"] for c in paged["data"]] == [50, 40, 30, 20, 10]  # all pages, in order
        assert [c["key"] for c in pr["data"]["actions_caches"]] == ["npm-linux-a"]

        assert by_key["status"] == 200 and by_key["data"]["total_count"] == 1
        assert by_key["data"]["actions_caches"][0]["id"] == ids[("npm-linux-a", "refs/heads/main")]
        assert by_id["status"] == 204 and by_id["data"] in (None, "")
        assert by_id_again["error"]["status"] == 404
        assert no_key["error"] == {"status": 404, "message": "Not Found"}

        assert usage["data"] == {"full_name": "octo/app", "active_caches_size_in_bytes": 90, "active_caches_count": 3}
        assert org["error"]["status"] == 403  # a repository token cannot read the whole org
        assert storage["data"] == {"max_cache_size_gb": 10}
        assert put_ret["status"] == 204 and ret["data"] == {"max_cache_retention_days": 14}
        assert other["error"]["status"] == 404

        # ... and the deletes are visible through the API afterwards.
        left = httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(token)).json()
        assert sorted((c["key"], c["ref"]) for c in left["actions_caches"]) == [
            ("npm-linux-a", "refs/pull/3/merge"),
            ("npm-linux-b", "refs/heads/main"),
            ("pip-x", "refs/heads/main"),
        ]

        site = srv.admin_token(site=True, permission="read")
        org_res = octokit(
            base,
            site,
            [
                {"method": "getActionsCacheUsageForOrg", "params": {"org": "octo"}},
                {"method": "getActionsCacheUsageByRepoForOrg", "params": {"org": "octo"}},
                {"method": "deleteActionsCacheByKey", "params": {**owner, "key": "pip-x"}},
            ],
        )
        assert org_res[0]["data"] == {"total_active_caches_count": 3, "total_active_caches_size_in_bytes": 90}
        assert org_res[1]["data"] == {
            "total_count": 1,
            "repository_cache_usages": [
                {"full_name": "octo/app", "active_caches_size_in_bytes": 90, "active_caches_count": 3}
            ],
        }
        assert org_res[2]["error"]["status"] == 403  # a read token cannot delete
    finally:
        srv.stop()
