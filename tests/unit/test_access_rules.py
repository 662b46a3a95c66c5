"""The access rules of core/access.py: job permissions that are not a ladder, repositories known only by
their numeric id, the one name comparison, and the GitHub verifier's start-up requirements."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from runcache.auth.github import GitHubTokenVerifier
from runcache.config import Settings
from runcache.core.access import ADMIN, READ, WRITE, Forbidden, Principal, same_name
from runcache.core.errors import NotFound
from runcache.core.scopes import Identity, build_scopes
from runcache.server.app import build_authenticator

SRC = Path(__file__).resolve().parents[2] / "src" / "runcache"


# --- job tokens: write-only saves without reading ------------------------------------------------
def test_write_only_job_may_delete_its_own_ref_but_not_read() -> None:
    job = Principal.from_job(Identity("octo/app", build_scopes("refs/heads/feature", mode="write-only")))
    assert job.write_scope == "refs/heads/feature"
    job.require("octo/app", WRITE)  # deleting its own ref's caches is a write
    assert job.may_delete_scope("refs/heads/feature") and not job.may_delete_scope("refs/heads/main")
    with pytest.raises(Forbidden):
        job.require("octo/app", READ)  # listing keys and usage is a read it was not given
    assert not job.permits(READ) and job.permits(WRITE) and not job.permits(ADMIN)
    with pytest.raises(NotFound):
        job.require("octo/other", WRITE)


def test_read_and_write_jobs_keep_their_permissions() -> None:
    writer = Principal.from_job(Identity("octo/app", build_scopes("refs/heads/feature", default_branch="main")))
    writer.require("octo/app", READ)
    writer.require("octo/app", WRITE)
    reader = Principal.from_job(Identity("octo/app", build_scopes("main", mode="read")))
    reader.require("octo/app", READ)
    with pytest.raises(Forbidden):
        reader.require("octo/app", WRITE)
    none = Principal.from_job(Identity("octo/app", build_scopes("main", mode="none")))
    for needed in (READ, WRITE):
        with pytest.raises(Forbidden):
            none.require("octo/app", needed)


def test_management_levels_are_a_ladder() -> None:
    for level in (READ, WRITE, ADMIN):
        p = Principal("admin", "t", level, site=True)
        assert [p.permits(n) for n in (READ, WRITE, ADMIN)] == [n <= level for n in (READ, WRITE, ADMIN)]


# --- repositories known by id ---------------------------------------------------------------------
def test_repository_for_id_is_one_canonical_name() -> None:
    from runcache.core.access import repository_for_id, repository_id_of

    assert repository_for_id(42) == "id:42"
    assert repository_for_id("42") == "id:42"
    assert repository_id_of("id:42") == 42 and repository_id_of("octo/app") is None
    for bad in (0, -1, "0", "-3", "4a", "", "１２", True, 2**63, " 42", "042x"):
        with pytest.raises(ValueError):
            repository_for_id(bad)  # type: ignore[arg-type]


def test_org_tokens_never_match_id_repositories() -> None:
    from runcache.core.access import repository_for_id

    repo = repository_for_id(7)
    # An org named like the id form must not reach it either.
    for org in ("id", "id:7", "ID:7"):
        with pytest.raises(NotFound):
            Principal("admin", "t", ADMIN, org=org).require(repo, READ)
    Principal("admin", "t", ADMIN, site=True).require(repo, ADMIN)
    Principal.from_job(Identity(repo, build_scopes("main"))).require(repo, READ)
    with pytest.raises(NotFound):
        Principal.from_job(Identity(repository_for_id(8), build_scopes("main"))).require(repo, READ)


def test_github_token_with_only_repository_id_uses_the_canonical_name(tmp_path: Path) -> None:
    from runcache.core.access import repository_for_id

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    verifier = GitHubTokenVerifier(jwks_file=jwks, issuer="https://issuer.example")
    now = int(time.time())
    claims = {"iss": "https://issuer.example", "iat": now, "exp": now + 60, "ac": "[]"}
    for rid in (42, "42"):
        token = jwt.encode({**claims, "repository_id": rid}, key, algorithm="RS256", headers={"kid": "k1"})
        assert verifier.verify(token).repository == repository_for_id(42)


# --- the one comparison of repository names ----------------------------------------------------------
def test_same_name_folds_case() -> None:
    assert same_name("Octo/App", "octo/app") and not same_name("octo/app", "octo/app2")


@pytest.mark.parametrize("module", ["services/management.py", "server/rest.py", "server/web.py"])
def test_management_layers_compare_names_only_through_same_name(module: str) -> None:
    """No `a.lower() == b.lower()` of its own: a second folding rule is how `Octo/App` and `octo/app` drift apart."""
    tree = ast.parse((SRC / module).read_text())
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for sub in ast.walk(side):
                    if (
                        isinstance(sub, ast.Call)
                        and isinstance(sub.func, ast.Attribute)
                        and sub.func.attr in ("lower", "casefold", "upper")
                    ):
                        offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


# --- the GitHub verifier needs an issuer ---------------------------------------------------------------
def test_github_verifier_refuses_to_start_without_an_issuer(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.write_text(json.dumps({"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))]}))
    with pytest.raises(ValueError, match="issuer"):
        GitHubTokenVerifier(jwks_file=jwks)
    with pytest.raises(ValueError, match="--github-issuer"):
        build_authenticator(Settings(data_dir=tmp_path / "d", github_jwks_file=str(jwks)))
    with pytest.raises(ValueError, match="--github-issuer"):
        build_authenticator(Settings(data_dir=tmp_path / "d", github_jwks_url="http://127.0.0.1:9/jwks"))
    # With the issuer it starts.
    build_authenticator(Settings(data_dir=tmp_path / "d", github_jwks_file=str(jwks), github_issuer="https://i"))
