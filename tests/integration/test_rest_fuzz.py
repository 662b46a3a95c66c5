"""Schema-driven fuzzing: schemathesis generates requests from the published OpenAPI document and
checks the running server's answers (no 5xx, documented status codes, content types and schemas).

Driven through hypothesis directly (one pytest case per operation), bounded by `max_examples`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from helpers import Server
from mgmt_helpers import bearer, save
from runcache.server.openapi import openapi_document

OPERATIONS = sorted((m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops)
MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fuzz") / "data").start()
    for i in range(5):
        save(srv, f"npm-{i}", b"x" * (i + 1), repo="octo/app", ref="refs/heads/main" if i % 2 else "refs/heads/dev")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server):
    # The document as the server publishes it, not the Python object it is built from.
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


@pytest.mark.parametrize("prefix", ["", "/api/v3"], ids=["root", "api-v3"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(
    api_schema, fuzz_server: Server, method: str, path: str, mode: GenerationMode, prefix: str
) -> None:
    """Valid requests must get documented answers; invalid ones a documented 4xx, never a 5xx."""
    operation = api_schema[path][method]
    token = fuzz_server.admin_token(site=True)  # reaches every operation, so requests get past authorization
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        # GitHub ignores unknown query parameters, so "accepted negative data" is no failure here;
        # every other check (no 5xx, documented status, content type and body schema) applies.
        response = case.call_and_validate(
            base_url=fuzz_server.url + prefix, headers=bearer(token), excluded_checks=[negative_data_rejection]
        )
        assert response.status_code < 500
        seen.append(response.status_code)

    run()
    assert seen, "the fuzzer sent no request"
