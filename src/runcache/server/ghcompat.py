"""Just enough of GitHub Enterprise's API root and GraphQL API for `gh auth login` and `gh auth status`.

gh validates a token for an Enterprise host with two calls before it stores or reports it:

- `GET /api/v3/` (`GetScopes`): any 200 answer; gh reads only the `X-OAuth-Scopes` header;
- `POST /api/graphql` with `query UserCurrent{viewer{login}}` (`GetCurrentLogin`, `CurrentLoginName`):
  the login it records for the host.

After that `gh cache list/delete` use the REST API of `rest.py` under `/api/v3`. The login is the
token's subject made into a GitHub login (`admin:alice` logs in as `admin-alice`). Management tokens and
job tokens both answer; what either may then do is decided by the REST API's rules (`core.access`),
not here: knowing who a token is grants nothing.

GraphQL requests are parsed, validated and executed by graphql-core against a schema holding only the
viewer, so anything gh or a script asks beyond that gets a proper GraphQL error naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_schema, execute_sync, parse, validate
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runcache.core.access import Principal
from runcache.core.errors import InvalidRequest
from runcache.server import rest
from runcache.server.common import public_base, read_capped
from runcache.server.openapi import API_PREFIX

# gh's queries are a few dozen tokens; a small cap keeps a hostile query from costing parse time.
MAX_GRAPHQL_BODY = 64 * 1024
MAX_GRAPHQL_TOKENS = 2000

SCHEMA: GraphQLSchema = build_schema(
    """
    type Query {
      "The caller: the runcache token that sent the request."
      viewer: User!
    }

    type User {
      "The token's subject as a GitHub login (letters, digits and single hyphens)."
      login: String!
      "What the token may manage, in words."
      name: String
    }
    """
)


def login_name(who: Principal) -> str:
    """The token's subject as a GitHub login: gh shows it and writes it as a key of hosts.yml, and
    tools that check logins expect 1-39 letters, digits and single inner hyphens."""
    login = re.sub(r"[^A-Za-z0-9]+", "-", who.subject).strip("-")[:39].strip("-")
    return login or f"runcache-{who.kind}"


def display_name(who: Principal) -> str:
    kind = "management" if who.kind == "admin" else "job"
    return f"runcache {kind} token for {who.description}"


@rest.rest_errors
async def api_root(request: Request) -> Response:
    """`GET /api/v3/`: GitHub's API root. Without a token it answers as GitHub does (the root is public);
    with one, the token must be valid, which is how gh checks a token before storing it."""
    if request.headers.get("authorization"):
        await rest.principal(request)  # a bad token raises Unauthenticated: 401 Bad credentials
    base = public_base(request) + API_PREFIX
    # No X-OAuth-Scopes header: runcache tokens carry permissions, not OAuth scopes, and gh treats a
    # token that reports no scopes as an integration token and does not demand `repo`/`read:org`.
    return JSONResponse(
        {
            "repository_url": base + "/repos/{owner}/{repo}",
            "organization_url": base + "/orgs/{org}",
            "openapi_url": base + "/openapi.json",
        }
    )


def graphql_errors(*messages: str | GraphQLError) -> JSONResponse:
    """GitHub answers a query it cannot run with 200 and an `errors` list (the request itself was fine)."""
    errors = [m.formatted if isinstance(m, GraphQLError) else {"message": m} for m in messages]
    return JSONResponse({"errors": errors})


async def _graphql_request(request: Request) -> dict[str, Any]:
    body = await read_capped(request, MAX_GRAPHQL_BODY, "GraphQL request")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("Problems parsing JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Problems parsing JSON")
    return data


@rest.rest_errors
async def graphql(request: Request) -> Response:
    """`POST /api/graphql`: the viewer query gh sends; authentication first, as GitHub does (401)."""
    who = await rest.principal(request)
    data = await _graphql_request(request)
    query, variables, operation = data.get("query"), data.get("variables"), data.get("operationName")
    if not isinstance(query, str) or not query.strip():
        return graphql_errors("A query attribute must be specified and must be a string.")
    if variables is not None and not isinstance(variables, dict):
        return graphql_errors("Variables must be an object.")
    if operation is not None and not isinstance(operation, str):
        return graphql_errors("operationName must be a string.")
    try:
        document = parse(query, max_tokens=MAX_GRAPHQL_TOKENS)
    except GraphQLError as exc:
        return graphql_errors(exc)
    problems = validate(SCHEMA, document)
    if problems:
        return graphql_errors(*problems)
    viewer = {"login": login_name(who), "name": display_name(who)}
    # Plain values, no resolvers that wait: the synchronous executor suffices (and fits a request).
    result = execute_sync(
        SCHEMA, document, root_value={"viewer": viewer}, variable_values=variables, operation_name=operation
    )
    return JSONResponse(result.formatted)


routes: list[BaseRoute] = [
    # Before rest.routes: its `/api/v3` mount would otherwise claim `/api/v3/` and answer 404.
    Route(API_PREFIX + "/", api_root, methods=["GET"]),
    Route("/api/graphql", graphql, methods=["POST"]),
]
