"""Cache management from the command line, shaped like `gh cache`: `ls`, `rm`, `usage`, `limits`.

`ls --in-progress` lists uploads not yet committed; `rm` also cancels them (`rm KEY` removes the key's
caches and its upload in progress, which is what blocks a new save of it; `rm --in-progress` only those).

A thin client of runcache's GitHub-compatible REST API (httpx). Output follows gh: a table with
relative times and human sizes on a terminal, tab-separated absolute values when piped, `--json`
with gh's field names. Management tokens come from `runcache token --admin` (cli/token.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import httpx


from runcache.core.humanize import fuzzy_ago, human_size, parse_iso
from runcache.core.listing import DIRECTIONS, MAX_PER_PAGE, SORT_FIELDS

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 4
JSON_FIELDS = {
    "createdAt": "created_at",
    "id": "id",
    "key": "key",
    "lastAccessedAt": "last_accessed_at",
    "ref": "ref",
    "sizeInBytes": "size_in_bytes",
    "version": "version",
}
UPLOAD_JSON_FIELDS = {
    "id": "id",
    "key": "key",
    "lastActivityAt": "last_activity_at",
    "receivedBytes": "received_bytes",
    "ref": "ref",
    "reservedAt": "reserved_at",
    "state": "state",
    "version": "version",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class UsageError(Exception):
    pass


# --- the REST client ------------------------------------------------------------------------------
def _is_json(r: httpx.Response) -> bool:
    return "json" in r.headers.get("content-type", "")


def _not_the_api(base: str, r: httpx.Response) -> str:
    # Never echo the body: a proxy's or another server's HTML page says nothing useful in a terminal.
    kind = r.headers.get("content-type", "no content type").split(";")[0]
    return (
        f"{base} did not answer like a runcache server (HTTP {r.status_code}, {kind}); "
        "check --url / RUNCACHE_URL (the server's base URL, e.g. http://127.0.0.1:8080)"
    )


class ManagementClient:
    """GitHub's cache REST API at `url` (runcache's root or any `/api/v3` base)."""

    def __init__(self, url: str, token: str, *, timeout: float = 30, transport: httpx.BaseTransport | None = None):
        self.base = url.rstrip("/")
        import httpx

        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "runcache-cli",
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        import httpx

        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            r = self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.base}: {exc}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                message = body.get("message", r.text)
                details = [
                    e.get("message") for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")
                ]
                if details:
                    message = f"{message}: {'; '.join(details)}"
            except (ValueError, AttributeError):
                message = _not_the_api(self.base, r) if not _is_json(r) else r.reason_phrase
            raise ApiError(r.status_code, message)
        if r.content and not _is_json(r):
            raise ApiError(0, _not_the_api(self.base, r))
        return r

    def caches(
        self,
        repo: str,
        *,
        key: str | None = None,
        ref: str | None = None,
        sort: str | None = None,
        direction: str | None = None,
        limit: int | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total_count, up to `limit` caches), following the `Link` header's next pages."""
        params = {"key": key, "ref": ref, "sort": sort, "direction": direction}
        return self._pages(f"/repos/{repo}/actions/caches", params, "actions_caches", limit)

    def uploads(
        self, repo: str, *, key: str | None = None, ref: str | None = None, limit: int | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total_count, up to `limit` uploads in progress), oldest first, following the `Link` header."""
        return self._pages(f"/repos/{repo}/actions/cache/uploads", {"key": key, "ref": ref}, "uploads", limit)

    def _pages(
        self, path: str, params: dict[str, Any], field: str, limit: int | None
    ) -> tuple[int, list[dict[str, Any]]]:
        per_page = MAX_PER_PAGE if limit is None else min(limit, MAX_PER_PAGE)
        query = {"per_page": per_page, **{k: v for k, v in params.items() if v}}
        url: str | None = path
        total, out = 0, []
        first = True
        while url and (limit is None or len(out) < limit):
            # Later pages come with their query in the `Link` URL.
            r = self._request("GET", url, params=query if first else None)
            first = False
            body = r.json()
            total = body["total_count"]
            out.extend(body[field])
            url = r.links.get("next", {}).get("url")
        return total, out if limit is None else out[:limit]

    def delete_upload(self, repo: str, upload_id: int) -> None:
        self._request("DELETE", f"/repos/{repo}/actions/cache/uploads/{upload_id}")

    def delete_uploads_of_key(self, repo: str, key: str, ref: str | None = None) -> list[dict[str, Any]]:
        params = {"key": key, **({"ref": ref} if ref else {})}
        return self._request("DELETE", f"/repos/{repo}/actions/cache/uploads", params=params).json()["uploads"]

    def delete_id(self, repo: str, cache_id: int) -> None:
        self._request("DELETE", f"/repos/{repo}/actions/caches/{cache_id}")

    def delete_key(self, repo: str, key: str, ref: str | None = None) -> list[dict[str, Any]]:
        params = {"key": key, **({"ref": ref} if ref else {})}
        return self._request("DELETE", f"/repos/{repo}/actions/caches", params=params).json()["actions_caches"]

    def usage(self, repo: str) -> dict[str, Any]:
        return self._request("GET", f"/repos/{repo}/actions/cache/usage").json()

    def org_usage(self, org: str) -> dict[str, Any]:
        return self._request("GET", f"/orgs/{org}/actions/cache/usage").json()

    def org_repositories(self, org: str) -> Iterator[dict[str, Any]]:
        url: str | None = f"/orgs/{org}/actions/cache/usage-by-repository?per_page={MAX_PER_PAGE}"
        while url:
            r = self._request("GET", url)
            yield from r.json()["repository_cache_usages"]
            url = r.links.get("next", {}).get("url")

    def limits(self, repo: str) -> dict[str, int]:
        size = self._request("GET", f"/repos/{repo}/actions/cache/storage-limit").json()
        days = self._request("GET", f"/repos/{repo}/actions/cache/retention-limit").json()
        return {**size, **days}

    def set_storage_limit(self, repo: str, gb: int) -> None:
        self._request("PUT", f"/repos/{repo}/actions/cache/storage-limit", json={"max_cache_size_gb": gb})

    def set_retention_limit(self, repo: str, days: int) -> None:
        self._request("PUT", f"/repos/{repo}/actions/cache/retention-limit", json={"max_cache_retention_days": days})


# --- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    url: str
    token: str
    repo: str | None


def _token_repository(token: str) -> str | None:
    import jwt  # imported here: `runcache --help` and the cache commands should not pay for it

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    repo = claims.get("repository")
    return repo if isinstance(repo, str) and "/" in repo else None


def resolve_target(args: argparse.Namespace, env: Mapping[str, str], *, need_repo: bool = True) -> Target:
    url = args.url or env.get("RUNCACHE_URL")
    token = args.token or env.get("RUNCACHE_ADMIN_TOKEN") or env.get("RUNCACHE_TOKEN")
    if not url:
        raise UsageError("no server: pass --url or set RUNCACHE_URL")
    if not token:
        raise UsageError(
            "no token: pass --token or set RUNCACHE_ADMIN_TOKEN (create one with `runcache token --admin --repo ...`)"
        )
    repo = args.repo or env.get("RUNCACHE_REPO") or env.get("GITHUB_REPOSITORY") or _token_repository(token)
    if repo is not None:
        repo = repo.strip("/")
        if repo.count("/") != 1 or "" in repo.split("/"):
            raise UsageError(f"expected the repository as OWNER/REPO, got {repo!r}")
    if need_repo and not repo:
        raise UsageError("no repository: pass -R OWNER/REPO (or set RUNCACHE_REPO)")
    return Target(url, token, repo)


def _is_tty(out: TextIO) -> bool:
    if os.environ.get("RUNCACHE_FORCE_TTY"):
        return True
    return hasattr(out, "isatty") and out.isatty()


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="runcache server URL (env RUNCACHE_URL)")
    p.add_argument("--token", help="management token (env RUNCACHE_ADMIN_TOKEN, then RUNCACHE_TOKEN)")
    p.add_argument(
        "-R",
        "--repo",
        help="OWNER/REPO (env RUNCACHE_REPO or GITHUB_REPOSITORY; default: the token's repository)",
    )


# --- output ---------------------------------------------------------------------------------------
def format_table(rows: list[list[str]], width: int, squeeze: int = 1) -> list[str]:
    """Columns padded to their widest cell; column `squeeze` (the key) is cut to fit the terminal."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    gap = 2
    fixed = sum(w for i, w in enumerate(widths) if i != squeeze) + gap * (len(widths) - 1)
    widths[squeeze] = max(10, min(widths[squeeze], width - fixed))
    out = []
    for r in rows:
        cells = []
        for i, cell in enumerate(r):
            if len(cell) > widths[i]:
                cell = cell[: widths[i] - 3] + "..."
            cells.append(cell if i == len(r) - 1 else cell.ljust(widths[i]))
        out.append((" " * gap).join(cells).rstrip())
    return out


def print_caches(caches: list[dict[str, Any]], total: int, repo: str, out: TextIO, *, tty: bool) -> None:
    if tty:
        noun = "cache" if total == 1 else "caches"
        print(f"\nShowing {len(caches)} of {total} {noun} in {repo}\n", file=out)
        rows = [["ID", "KEY", "SIZE", "CREATED", "ACCESSED"]]
        for c in caches:
            rows.append(
                [
                    str(c["id"]),
                    c["key"],
                    human_size(c["size_in_bytes"]),
                    fuzzy_ago(parse_iso(c["created_at"])),
                    fuzzy_ago(parse_iso(c["last_accessed_at"])),
                ]
            )
        for line in format_table(rows, shutil.get_terminal_size((120, 24)).columns):
            print(line, file=out)
        return
    for c in caches:
        created = parse_iso(c["created_at"]).isoformat().replace("+00:00", "Z")
        accessed = parse_iso(c["last_accessed_at"]).isoformat().replace("+00:00", "Z")
        print(f"{c['id']}\t{c['key']}\t{c['size_in_bytes']}\t{created}\t{accessed}", file=out)


def print_uploads(uploads: list[dict[str, Any]], total: int, repo: str, out: TextIO, *, tty: bool) -> None:
    if tty:
        noun = "upload" if total == 1 else "uploads"
        print(f"\nShowing {len(uploads)} of {total} {noun} in progress in {repo}\n", file=out)
        rows = [["ID", "KEY", "RECEIVED", "STARTED", "LAST WRITE"]]
        for u in uploads:
            received = u["received_bytes"]
            last = u["last_activity_at"]
            rows.append(
                [
                    str(u["id"]),
                    u["key"],
                    "?" if received is None else human_size(received),  # staged on another replica
                    fuzzy_ago(parse_iso(u["reserved_at"])),
                    fuzzy_ago(parse_iso(last)) if last else "?",
                ]
            )
        for line in format_table(rows, shutil.get_terminal_size((120, 24)).columns):
            print(line, file=out)
        return
    for u in uploads:
        reserved = parse_iso(u["reserved_at"]).isoformat().replace("+00:00", "Z")
        last = u["last_activity_at"]
        last = parse_iso(last).isoformat().replace("+00:00", "Z") if last else ""
        received = "" if u["received_bytes"] is None else u["received_bytes"]
        print(f"{u['id']}\t{u['key']}\t{received}\t{reserved}\t{last}", file=out)


def parse_json_fields(spec: str, known: Mapping[str, str] = JSON_FIELDS) -> list[str]:
    fields = [f.strip() for f in spec.split(",") if f.strip()]
    unknown = [f for f in fields if f not in known]
    if not fields or unknown:
        listed = "\n".join(f"  {f}" for f in sorted(known))
        problem = f"Unknown JSON field: {', '.join(unknown)}\n" if unknown else ""
        raise UsageError(f"{problem}Specify one or more comma-separated fields for `--json`:\n{listed}")
    return fields


# --- commands -------------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.limit < 1:
        raise UsageError(f"invalid limit: {args.limit}")
    if args.in_progress:
        return _ls_uploads(args, out, err)
    fields = parse_json_fields(args.json) if args.json is not None else None
    t = resolve_target(args, os.environ)
    with ManagementClient(t.url, t.token) as client:
        total, caches = client.caches(
            t.repo, key=args.key, ref=args.ref, sort=args.sort, direction=args.order, limit=args.limit
        )
    if fields is not None:
        print(json.dumps([{f: c[JSON_FIELDS[f]] for f in fields} for c in caches], indent=2), file=out)
        return EXIT_OK
    if not caches:
        # As gh: an empty list is a success; the notice is for people, not for scripts reading a pipe.
        if _is_tty(out):
            print(f"No caches found in {t.repo}", file=err)
        return EXIT_OK
    print_caches(caches, total, str(t.repo), out, tty=_is_tty(out))
    return EXIT_OK


def _ls_uploads(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    fields = parse_json_fields(args.json, UPLOAD_JSON_FIELDS) if args.json is not None else None
    t = resolve_target(args, os.environ)
    with ManagementClient(t.url, t.token) as client:
        total, uploads = client.uploads(str(t.repo), key=args.key, ref=args.ref, limit=args.limit)
    if fields is not None:
        print(json.dumps([{f: u[UPLOAD_JSON_FIELDS[f]] for f in fields} for u in uploads], indent=2), file=out)
        return EXIT_OK
    if not uploads:
        if _is_tty(out):
            print(f"No uploads in progress in {t.repo}", file=err)
        return EXIT_OK
    print_uploads(uploads, total, str(t.repo), out, tty=_is_tty(out))
    return EXIT_OK


def _deleted(n: int, repo: str, out: TextIO) -> None:
    if _is_tty(out):
        print(f"✓ Deleted {n} {'cache' if n == 1 else 'caches'} from {repo}", file=out)


def _cancelled(n: int, repo: str, out: TextIO) -> None:
    if _is_tty(out):
        print(f"✓ Cancelled {n} {'upload' if n == 1 else 'uploads'} in progress in {repo}", file=out)


def _gone(call: Callable[[], object]) -> bool:
    """Run a delete; False when there was nothing to delete (404)."""
    try:
        call()
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _rm_uploads(args: argparse.Namespace, client: ManagementClient, repo: str, out: TextIO, err: TextIO) -> int:
    """`rm --in-progress`: uploads not yet committed only, by id, key or --all."""
    if args.all:
        _, uploads = client.uploads(repo, ref=args.ref)
        if not uploads:
            if args.succeed_on_no_caches:
                return EXIT_OK
            print("No uploads in progress to cancel", file=err)
            return EXIT_ERROR
        n = sum(_gone(lambda u=u: client.delete_upload(repo, u["id"])) for u in uploads)
        _cancelled(n, repo, out)
        return EXIT_OK
    if args.target.isdigit():
        n = int(_gone(lambda: client.delete_upload(repo, int(args.target))))
    else:
        gone: list[dict[str, Any]] = []
        _gone(lambda: gone.extend(client.delete_uploads_of_key(repo, args.target, args.ref)))
        n = len(gone)
    if not n:
        print(f"X Could not find an upload in progress matching {args.target} in {repo}", file=err)
        return EXIT_ERROR
    _cancelled(n, repo, out)
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.all and args.target:
        raise UsageError("specify a cache ID or key, or --all, not both")
    if not args.all and not args.target:
        raise UsageError("specify a cache ID or key, or --all")
    if args.succeed_on_no_caches and not args.all:
        raise UsageError("--succeed-on-no-caches only applies with --all")
    if args.target and args.target.isdigit() and args.ref:
        raise UsageError("--ref narrows a key or --all; a cache ID names one cache already")
    if args.ref is not None and not args.ref.strip():
        # An empty filter must never widen `rm --all` to every ref.
        raise UsageError("--ref needs a ref, e.g. refs/heads/main or refs/pull/7/merge")
    t = resolve_target(args, os.environ)
    repo = str(t.repo)
    with ManagementClient(t.url, t.token) as client:
        if args.in_progress:
            return _rm_uploads(args, client, repo, out, err)
        if args.all:
            _, caches = client.caches(repo, ref=args.ref)
            if not caches:
                if args.succeed_on_no_caches:
                    if _is_tty(out):
                        print(f"✓ No caches to delete in {repo}", file=out)
                    return EXIT_OK
                print("No caches to delete", file=err)
                return EXIT_ERROR
            deleted = 0
            for c in caches:
                try:
                    client.delete_id(repo, c["id"])
                    deleted += 1
                except ApiError as exc:
                    if exc.status != 404:  # already gone (evicted meanwhile) is fine
                        raise
            _deleted(deleted, repo, out)
            return EXIT_OK
        # An id or key also names an upload in progress: after a cancelled save that is what blocks the
        # key, and it is invisible in the cache list. Ids are shared, so an id is one or the other.
        cancelled = 0
        if args.target.isdigit():
            n = int(_gone(lambda: client.delete_id(repo, int(args.target))))
            if not n:
                cancelled = int(_gone(lambda: client.delete_upload(repo, int(args.target))))
        else:
            deleted: list[dict[str, Any]] = []
            stopped: list[dict[str, Any]] = []
            _gone(lambda: deleted.extend(client.delete_key(repo, args.target, args.ref)))
            _gone(lambda: stopped.extend(client.delete_uploads_of_key(repo, args.target, args.ref)))
            n, cancelled = len(deleted), len(stopped)
        if not n and not cancelled:
            print(f"X Could not find a cache matching {args.target} in {repo}", file=err)
            return EXIT_ERROR
    if n:
        _deleted(n, repo, out)
    if cancelled:
        _cancelled(cancelled, repo, out)
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    t = resolve_target(args, os.environ, need_repo=not args.org)
    tty = _is_tty(out)
    with ManagementClient(t.url, t.token) as client:
        if args.org:
            totals = client.org_usage(args.org)
            repos = list(client.org_repositories(args.org))
            if args.json:
                print(json.dumps({**totals, "repository_cache_usages": repos}, indent=2), file=out)
                return EXIT_OK
            count, size = totals["total_active_caches_count"], totals["total_active_caches_size_in_bytes"]
            if tty:
                noun = "cache" if count == 1 else "caches"
                print(f"{args.org}: {count} {noun}, {human_size(size)} in {len(repos)} repositories\n", file=out)
                rows = [["REPOSITORY", "CACHES", "SIZE"]]
                rows += [
                    [r["full_name"], str(r["active_caches_count"]), human_size(r["active_caches_size_in_bytes"])]
                    for r in repos
                ]
                for line in format_table(rows, shutil.get_terminal_size((120, 24)).columns, squeeze=0):
                    print(line, file=out)
            else:
                for r in repos:
                    print(f"{r['full_name']}\t{r['active_caches_count']}\t{r['active_caches_size_in_bytes']}", file=out)
            return EXIT_OK
        usage = client.usage(str(t.repo))
        limits = client.limits(str(t.repo))
    if args.json:
        print(json.dumps({**usage, **limits}, indent=2), file=out)
        return EXIT_OK
    count, size = usage["active_caches_count"], usage["active_caches_size_in_bytes"]
    limit_bytes = limits["max_cache_size_gb"] * 1024**3
    if tty:
        noun = "cache" if count == 1 else "caches"
        share = 100 * size / limit_bytes
        print(
            # GiB, not GB: the limit counts 1024^3 bytes, and the size beside it is in binary units too.
            f"{usage['full_name']}: {count} {noun}, {human_size(size)} of {limits['max_cache_size_gb']} GiB "
            f"({share:.1f}%); unused caches are removed after {limits['max_cache_retention_days']} days",
            file=out,
        )
    else:
        print(f"{usage['full_name']}\t{count}\t{size}\t{limit_bytes}\t{limits['max_cache_retention_days']}", file=out)
    return EXIT_OK


def cmd_limits(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    t = resolve_target(args, os.environ)
    repo = str(t.repo)
    with ManagementClient(t.url, t.token) as client:
        if args.storage is not None:
            client.set_storage_limit(repo, args.storage)
        if args.retention is not None:
            client.set_retention_limit(repo, args.retention)
        limits = client.limits(repo)
    if args.json:
        print(json.dumps(limits, indent=2), file=out)
    else:
        print(f"storage limit: {limits['max_cache_size_gb']} GiB", file=out)
        print(f"retention: {limits['max_cache_retention_days']} days after last use", file=out)
    return EXIT_OK


def _run(command):
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            print(f"runcache: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ApiError as exc:
            print(
                f"runcache: {exc.message} (HTTP {exc.status})" if exc.status else f"runcache: {exc.message}",
                file=sys.stderr,
            )
            return EXIT_AUTH if exc.status == 401 else EXIT_ERROR

    return run


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ls`, `rm`, `usage` and `limits` to the `runcache` command line."""
    p = sub.add_parser("ls", aliases=["list"], help="list the caches of a repository (as `gh cache list`)")
    _client_flags(p)
    p.add_argument("-k", "--key", help="filter by key prefix")
    p.add_argument("-r", "--ref", help="filter by ref: refs/heads/<branch> or refs/pull/<number>/merge")
    p.add_argument("-S", "--sort", choices=SORT_FIELDS, default="last_accessed_at", help="sort field")
    p.add_argument("-O", "--order", choices=DIRECTIONS, default="desc", help="sort direction")
    p.add_argument("-L", "--limit", type=int, default=30, help="maximum number of caches to fetch (default 30)")
    p.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="FIELDS",
        help=f"print JSON with these comma-separated fields: {','.join(sorted(JSON_FIELDS))} "
        f"(with --in-progress: {','.join(sorted(UPLOAD_JSON_FIELDS))})",
    )
    p.add_argument(
        "--in-progress",
        action="store_true",
        help="list uploads not yet committed (oldest first) with the bytes received so far",
    )
    p.set_defaults(func=_run(cmd_ls))

    p = sub.add_parser("rm", aliases=["delete"], help="delete caches by id, by key, or --all (as `gh cache delete`)")
    _client_flags(p)
    p.add_argument("target", nargs="?", help="a cache ID (all digits) or a cache key")
    p.add_argument("-a", "--all", action="store_true", help="delete every cache (of --ref, if given)")
    p.add_argument("-r", "--ref", help="only caches of this ref")
    p.add_argument("--succeed-on-no-caches", action="store_true", help="with --all: exit 0 when there is nothing")
    p.add_argument(
        "--in-progress",
        action="store_true",
        help="only cancel uploads in progress (by id, key or --all); without it an id or key names both",
    )
    p.set_defaults(func=_run(cmd_rm))

    p = sub.add_parser("usage", help="cache usage of a repository (or --org) against its limits")
    _client_flags(p)
    p.add_argument("--org", help="usage of an owner's repositories (needs an org-wide or site token)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=_run(cmd_usage))

    p = sub.add_parser("limits", help="show or set a repository's storage and retention limits")
    _client_flags(p)
    # The same names as `serve`'s server-wide defaults; the short old names stay as aliases.
    p.add_argument(
        "--storage-limit-gb",
        "--storage",
        dest="storage",
        type=int,
        metavar="GB",
        help="set the storage limit (1-10000)",
    )
    p.add_argument(
        "--retention-days",
        "--retention",
        dest="retention",
        type=int,
        metavar="DAYS",
        help="set the retention in days after last use (1-365)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run(cmd_limits))
