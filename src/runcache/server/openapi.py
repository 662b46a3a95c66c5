"""The published OpenAPI 3.0 description of the management REST API (`GET /openapi.json`).

Operation ids, parameters and schema names follow GitHub's own description (`actions/get-actions-
cache-list`, `actions-cache-list`, ...), so generated clients line up. Tests fuzz the running server
against this document and check that every route is described here and vice versa.
"""

from __future__ import annotations

import copy
from typing import Any

from runcache.core.eviction import MAX_RETENTION_DAYS, MAX_STORAGE_LIMIT_GB
from runcache.core.listing import DEFAULT_PER_PAGE, MAX_NAME_LENGTH, SORT_FIELDS

API_PREFIX = "/api/v3"
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _resp(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": MAX_NAME_LENGTH}
_LINK = {"Link": {"description": "Pagination links (prev, next, last, first)", "schema": {"type": "string"}}}
_AUTH_ERRORS = {"401": _resp("requires_authentication"), "403": _resp("forbidden"), "404": _resp("not_found")}

_COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A management token (`runcache token --admin`) or a job token (reads need a "
            "readable cache scope: a write-only job token may only delete its own ref's caches). "
            "GitHub's `Authorization: token <t>` form is accepted too.",
        }
    },
    "parameters": {
        "owner": {
            "name": "owner",
            "in": "path",
            "required": True,
            "description": "The account owner of the repository (not case sensitive).",
            "schema": _NAME_SCHEMA,
        },
        "repo": {
            "name": "repo",
            "in": "path",
            "required": True,
            "description": "The name of the repository (not case sensitive).",
            "schema": _NAME_SCHEMA,
        },
        "repository-id": {
            "name": "repository_id",
            "in": "path",
            "required": True,
            "description": "The numeric id of the repository. Caches saved with a GitHub token that names its "
            "repository only by id (no `repository` claim) are reachable here only.",
            "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1},
        },
        "org": {
            "name": "org",
            "in": "path",
            "required": True,
            "description": "The organization (owner) name (not case sensitive).",
            "schema": _NAME_SCHEMA,
        },
        "per-page": {
            "name": "per_page",
            "in": "query",
            "description": "The number of results per page (max 100); larger values are capped at 100.",
            "schema": {"type": "integer", "default": DEFAULT_PER_PAGE, "minimum": 1},
        },
        "page": {
            "name": "page",
            "in": "query",
            "description": "The page number of the results to fetch.",
            "schema": {"type": "integer", "default": 1, "minimum": 1, "maximum": 1_000_000},
        },
        "actions-cache-git-ref-full": {
            "name": "ref",
            "in": "query",
            "description": "The full Git reference for narrowing down the cache: `refs/heads/<branch name>` or "
            "`refs/pull/<number>/merge` (a bare branch name means `refs/heads/<name>`). A `ref` that is given "
            "but cannot match one (empty, blank) selects nothing: it never widens to every ref.",
            "schema": {"type": "string"},
        },
        "actions-cache-key": {
            "name": "key",
            "in": "query",
            "description": "An explicit key or prefix for identifying the cache.",
            "schema": {"type": "string"},
        },
        "actions-cache-key-required": {
            "name": "key",
            "in": "query",
            "required": True,
            "description": "A key for identifying the cache.",
            "schema": {"type": "string", "minLength": 1},
        },
        "actions-cache-list-sort": {
            "name": "sort",
            "in": "query",
            "description": "The property to sort the results by.",
            "schema": {"type": "string", "enum": list(SORT_FIELDS), "default": "last_accessed_at"},
        },
        "direction": {
            "name": "direction",
            "in": "query",
            "description": "The direction to sort the results by.",
            "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
        },
        "cache-id": {
            "name": "cache_id",
            "in": "path",
            "required": True,
            "description": "The unique identifier of the GitHub Actions cache.",
            "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1},
        },
    },
    "schemas": {
        "basic-error": {
            "title": "Basic Error",
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "documentation_url": {"type": "string"},
                "status": {"type": "string"},
            },
        },
        "validation-error": {
            "title": "Validation Error",
            "type": "object",
            "required": ["message", "documentation_url"],
            "properties": {
                "message": {"type": "string"},
                "documentation_url": {"type": "string"},
                "status": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["code"],
                        "properties": {
                            "resource": {"type": "string"},
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                            "code": {"type": "string"},
                        },
                    },
                },
            },
        },
        "actions-cache-list": {
            "title": "Repository actions caches",
            "description": "Repository actions caches",
            "type": "object",
            "required": ["total_count", "actions_caches"],
            "properties": {
                "total_count": {"description": "Total number of caches", "type": "integer", "minimum": 0},
                "actions_caches": {
                    "description": "Array of caches",
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "ref", "key", "version", "last_accessed_at", "created_at", "size_in_bytes"],
                        "properties": {
                            "id": {"type": "integer"},
                            "ref": {"type": "string"},
                            "key": {"type": "string"},
                            "version": {"type": "string"},
                            "last_accessed_at": {"type": "string", "format": "date-time"},
                            "created_at": {"type": "string", "format": "date-time"},
                            "size_in_bytes": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
        "actions-cache-usage-by-repository": {
            "title": "Actions Cache Usage by repository",
            "type": "object",
            "required": ["full_name", "active_caches_size_in_bytes", "active_caches_count"],
            "properties": {
                "full_name": {"type": "string"},
                "active_caches_size_in_bytes": {"type": "integer", "minimum": 0},
                "active_caches_count": {"type": "integer", "minimum": 0},
            },
        },
        "actions-cache-usage-org-enterprise": {
            "type": "object",
            "required": ["total_active_caches_count", "total_active_caches_size_in_bytes"],
            "properties": {
                "total_active_caches_count": {"type": "integer", "minimum": 0},
                "total_active_caches_size_in_bytes": {"type": "integer", "minimum": 0},
            },
        },
        "actions-cache-storage-limit-for-repository": {
            "type": "object",
            "required": ["max_cache_size_gb"],
            "properties": {
                "max_cache_size_gb": {"type": "integer", "minimum": 1, "maximum": MAX_STORAGE_LIMIT_GB},
            },
        },
        "actions-cache-retention-limit-for-repository": {
            "type": "object",
            "required": ["max_cache_retention_days"],
            "properties": {
                "max_cache_retention_days": {"type": "integer", "minimum": 1, "maximum": MAX_RETENTION_DAYS},
            },
        },
    },
    "responses": {
        "requires_authentication": _json(_ref("basic-error"), "Requires authentication"),
        "forbidden": _json(_ref("basic-error"), "Forbidden"),
        "not_found": _json(_ref("basic-error"), "Resource not found"),
        "bad_request": _json(_ref("basic-error"), "Bad Request"),
        "validation_failed": _json(_ref("validation-error"), "Validation failed"),
    },
}

_REPO = [_param("owner"), _param("repo")]

_PATHS: dict[str, Any] = {
    "/repos/{owner}/{repo}/actions/caches": {
        "get": {
            "summary": "List GitHub Actions caches for a repository",
            "operationId": "actions/get-actions-cache-list",
            "tags": ["actions"],
            "parameters": [
                *_REPO,
                _param("per-page"),
                _param("page"),
                _param("actions-cache-git-ref-full"),
                _param("actions-cache-key"),
                _param("actions-cache-list-sort"),
                _param("direction"),
            ],
            "responses": {
                "200": _json(_ref("actions-cache-list"), "Response", _LINK),
                "422": _resp("validation_failed"),
                **_AUTH_ERRORS,
            },
        },
        "delete": {
            "summary": "Delete GitHub Actions caches for a repository (using a cache key)",
            "description": "Deletes every cache with exactly this key (in every ref and version unless `ref` "
            "narrows it) and returns them; 404 when nothing matched. A job token deletes from its own ref only.",
            "operationId": "actions/delete-actions-cache-by-key",
            "tags": ["actions"],
            "parameters": [*_REPO, _param("actions-cache-key-required"), _param("actions-cache-git-ref-full")],
            "responses": {
                "200": _json(_ref("actions-cache-list"), "Response"),
                "422": _resp("validation_failed"),
                **_AUTH_ERRORS,
            },
        },
    },
    "/repos/{owner}/{repo}/actions/caches/{cache_id}": {
        "delete": {
            "summary": "Delete a GitHub Actions cache for a repository (using a cache ID)",
            "operationId": "actions/delete-actions-cache-by-id",
            "tags": ["actions"],
            "parameters": [*_REPO, _param("cache-id")],
            "responses": {"204": {"description": "Response"}, **_AUTH_ERRORS},
        }
    },
    "/repos/{owner}/{repo}/actions/cache/usage": {
        "get": {
            "summary": "Get GitHub Actions cache usage for a repository",
            "operationId": "actions/get-actions-cache-usage",
            "tags": ["actions"],
            "parameters": _REPO,
            "responses": {"200": _json(_ref("actions-cache-usage-by-repository"), "Response"), **_AUTH_ERRORS},
        }
    },
    "/repos/{owner}/{repo}/actions/cache/storage-limit": {
        "get": {
            "summary": "Get GitHub Actions cache storage limit for a repository",
            "operationId": "actions/get-actions-cache-storage-limit-for-repository",
            "tags": ["actions"],
            "parameters": _REPO,
            "responses": {
                "200": _json(_ref("actions-cache-storage-limit-for-repository"), "Response"),
                **_AUTH_ERRORS,
            },
        },
        "put": {
            "summary": "Set GitHub Actions cache storage limit for a repository",
            "description": "Needs the `admin` permission. Least recently used caches are evicted at once "
            "when the repository is over the new limit.",
            "operationId": "actions/set-actions-cache-storage-limit-for-repository",
            "tags": ["actions"],
            "parameters": _REPO,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("actions-cache-storage-limit-for-repository")}},
            },
            "responses": {"204": {"description": "Response"}, "400": _resp("bad_request"), **_AUTH_ERRORS},
        },
    },
    "/repos/{owner}/{repo}/actions/cache/retention-limit": {
        "get": {
            "summary": "Get GitHub Actions cache retention limit for a repository",
            "operationId": "actions/get-actions-cache-retention-limit-for-repository",
            "tags": ["actions"],
            "parameters": _REPO,
            "responses": {
                "200": _json(_ref("actions-cache-retention-limit-for-repository"), "Response"),
                **_AUTH_ERRORS,
            },
        },
        "put": {
            "summary": "Set GitHub Actions cache retention limit for a repository",
            "description": "Needs the `admin` permission. Caches unused for longer are removed at once.",
            "operationId": "actions/set-actions-cache-retention-limit-for-repository",
            "tags": ["actions"],
            "parameters": _REPO,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("actions-cache-retention-limit-for-repository")}},
            },
            "responses": {"204": {"description": "Response"}, "400": _resp("bad_request"), **_AUTH_ERRORS},
        },
    },
    "/orgs/{org}/actions/cache/usage": {
        "get": {
            "summary": "Get GitHub Actions cache usage for an organization",
            "operationId": "actions/get-actions-cache-usage-for-org",
            "tags": ["actions"],
            "parameters": [_param("org")],
            "responses": {"200": _json(_ref("actions-cache-usage-org-enterprise"), "Response"), **_AUTH_ERRORS},
        }
    },
    "/orgs/{org}/actions/cache/usage-by-repository": {
        "get": {
            "summary": "List repositories with GitHub Actions cache usage for an organization",
            "operationId": "actions/get-actions-cache-usage-by-repo-for-org",
            "tags": ["actions"],
            "parameters": [_param("org"), _param("per-page"), _param("page")],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["total_count", "repository_cache_usages"],
                        "properties": {
                            "total_count": {"type": "integer", "minimum": 0},
                            "repository_cache_usages": {
                                "type": "array",
                                "items": _ref("actions-cache-usage-by-repository"),
                            },
                        },
                    },
                    "Response",
                    _LINK,
                ),
                "422": _resp("validation_failed"),
                **_AUTH_ERRORS,
            },
        }
    },
}


def _by_repository_id(paths: dict[str, Any]) -> dict[str, Any]:
    """GitHub serves every repository operation under `/repositories/{repository_id}` as well."""
    out: dict[str, Any] = {}
    for path, ops in paths.items():
        if not path.startswith("/repos/{owner}/{repo}/"):
            continue
        variant: dict[str, Any] = {}
        for method, op in ops.items():
            op = copy.deepcopy(op)
            rest = [p for p in op["parameters"] if p not in _REPO]
            op["parameters"] = [_param("repository-id"), *rest]
            op["operationId"] += "-by-repository-id"
            op["summary"] += " (by repository id)"
            variant[method] = op
        out[path.replace("/repos/{owner}/{repo}/", "/repositories/{repository_id}/", 1)] = variant
    return out


_PATHS.update(_by_repository_id(_PATHS))


def openapi_document() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("runcache")
    except PackageNotFoundError:  # running from a source tree
        app_version = "0"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "runcache cache management API",
            "version": app_version,
            "description": "GitHub's REST API for Actions caches, served by runcache. Also served under "
            f"`{API_PREFIX}` for clients that take a GitHub Enterprise base URL.",
        },
        "servers": [{"url": "/"}, {"url": API_PREFIX}],
        "security": [{"bearer": []}],
        "paths": copy.deepcopy(_PATHS),
        "components": copy.deepcopy(_COMPONENTS),
    }
