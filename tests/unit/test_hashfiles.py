"""hashFiles(): the runner's test vectors, the pure rules, and the walking/hashing client."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runcache.client import hashfiles as client
from runcache.client.hashfiles import hash_files, list_hashed_files
from runcache.core.hashfiles import (
    GLOBSTAR,
    GlobPlan,
    HashFilesError,
    MatchKind,
    _js_regex_is_valid,
    _Minimatch3,
    _mm3_parse,
    child_segments,
    combine_digests,
    from_js,
    is_lossy_in_js,
    js_trim,
    parse_hashfiles_args,
    path_segments,
    to_js,
)

# Produced by the runner's own hashFiles implementation; a missing file fails collection, never skips.
VECTORS_FILE = Path(__file__).resolve().parents[1] / "data" / "hashfiles-vectors.json"


def _vector_params() -> list[object]:
    vectors = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return [pytest.param(v, id=v["name"]) for v in vectors]


def _setup(tmp_path: Path, script: str) -> Path:
    root = Path(os.path.realpath(tmp_path))
    subprocess.run(["bash", "-e", "-c", script], cwd=root, check=True)
    return root


@pytest.mark.parametrize("vector", _vector_params())
def test_runner_vector(vector: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _setup(tmp_path, vector["setup_sh"])
    patterns = [p.replace("@ROOT@", str(root)) for p in vector["patterns"]]
    for key, value in (vector.get("env") or {}).items():
        monkeypatch.setenv(key, value.replace("@ROOT@", str(root)))
    ws = root / "ws"
    if vector.get("expect_error"):
        with pytest.raises(HashFilesError):
            hash_files(patterns, ws)
        return
    assert hash_files(patterns, ws) == vector["expected"].replace("@ROOT@", str(root))
    if vector.get("hashed_files") is not None:
        assert list_hashed_files(patterns, ws) == vector["hashed_files"]


# ---------------------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------------------

WS = "/w/ws"


def plan(*patterns: str, home: str = "/home/u") -> GlobPlan:
    return GlobPlan.create("\n".join(patterns), cwd=WS, homedir=lambda: home)


def segs(path: str) -> tuple[str, ...]:
    return tuple(to_js(path).split("/"))


def matched(p: GlobPlan, path: str) -> int:
    return p.match(segs(path))


def test_combine_digests_is_sha256_of_raw_digests() -> None:
    assert combine_digests([]) == ""
    empty = hashlib.sha256(b"").digest()
    # The spec's empty-file value: sha256 over the raw 32-byte digest, not over its hex.
    assert combine_digests([empty]) == hashlib.sha256(empty).hexdigest()
    assert combine_digests([empty]).startswith("5df6e0e2") and combine_digests([empty]).endswith("c9456")
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert combine_digests([a, b]) == hashlib.sha256(a + b).hexdigest() != combine_digests([b, a])


def test_args_option_only_first_and_case_insensitive() -> None:
    assert parse_hashfiles_args(["a", "b"]).patterns == "a\nb"
    assert not parse_hashfiles_args(["a"]).follow_symbolic_links
    inv = parse_hashfiles_args(["--FOLLOW-symbolic-LINKS", "x"])
    assert inv.follow_symbolic_links and inv.patterns == "x"
    assert parse_hashfiles_args(["x", "--recursive"]).patterns == "x\n--recursive"
    with pytest.raises(HashFilesError, match="Invalid glob option --recursive"):
        parse_hashfiles_args(["--recursive", "x"])
    assert parse_hashfiles_args(["--follow-symbolic-links"]).patterns == ""


def test_js_strings() -> None:
    assert js_trim("\ufeff a \u2028") == "a"  # JS trims BOM and line separators
    assert js_trim("\x1ca\x85") == "\x1ca\x85"  # ...but not these, which str.strip() would
    assert to_js("😀") == "\ud83d\ude00" and len(to_js("a😀")) == 3  # UTF-16 code units
    assert from_js(to_js("日本😀")) == "日本😀"
    bad = os.fsdecode(b"x\xffy")
    assert is_lossy_in_js(bad) and to_js(bad) == "x\ufffdy"  # node decodes invalid UTF-8 to U+FFFD
    assert not is_lossy_in_js("é")


def test_path_segments_and_join() -> None:
    assert path_segments("/a//b/") == ["/", "a", "b"]
    assert path_segments("a/b") == ["a", "b"]
    assert child_segments(("", ""), "x") == ("", "x")
    assert child_segments(("", "w", ".", "s"), "x") == ("", "w", "s", "x")  # path.join normalises


def test_pattern_rooting_and_validation() -> None:
    p = plan("requirements.txt", "./x", "~/y", "/abs/z", "!vendor", "  # comment", "", "#also")
    texts = [(q.negate, q.pattern, q.is_implicit) for q in p.patterns]
    assert texts == [
        (False, "/w/ws/requirements.txt", False),
        (False, "/w/ws/requirements.txt/**", True),
        (False, "/w/ws/x", False),
        (False, "/w/ws/x/**", True),
        (False, "/home/u/y", False),
        (False, "/home/u/y/**", True),
        (False, "/abs/z", False),
        (False, "/abs/z/**", True),
        (True, "/w/ws/vendor", False),
        (True, "/w/ws/vendor/**", True),
    ]
    for bad in ("../x", "a/../b", "a/./b", "a/[.]/b"):
        with pytest.raises(HashFilesError, match="Relative pathing"):
            plan(bad)
    with pytest.raises(HashFilesError, match="pattern cannot be empty"):
        plan("! ")
    with pytest.raises(HashFilesError, match="HOME"):
        plan("~/x", home="")
    plan("~x")  # "~" only expands as a whole first segment; nothing asks for HOME here


def test_negation_toggles_and_trims() -> None:
    assert plan("!! ! a").patterns[0].negate
    assert not plan("!!a").patterns[0].negate
    assert plan("! a").patterns[0].pattern == "/w/ws/a"


def test_cwd_is_glob_escaped() -> None:
    p = GlobPlan.create("*.txt", cwd="/w/[a]*?", homedir=lambda: "/h")
    assert p.search_paths == ("/w/[a]*?",)
    assert p.match(("", "w", "[a]*?", "x.txt")) == MatchKind.ALL
    assert p.match(("", "w", "a", "x.txt")) == 0


def test_search_paths_order_dedupe_and_ancestors() -> None:
    assert plan("b/**/r.txt", "a/**/r.txt").search_paths == ("/w/ws/b", "/w/ws/a")
    assert plan("**/r.txt", "**/c.txt").search_paths == ("/w/ws",)
    # A root is dropped when an ancestor is also a root, even one listed later.
    assert plan("a/b/*.txt", "c", "a/*").search_paths == ("/w/ws/c", "/w/ws/a")
    assert plan("!x/**", "[a]/[*]/?").search_paths == ("/w/ws/a/*",)  # one-char classes are literal
    assert plan("/**").search_paths == ("/",)


def test_last_matching_pattern_wins() -> None:
    assert matched(plan("**/r.txt", "!**/vendor/**"), "/w/ws/vendor/r.txt") == 0
    assert matched(plan("!**/vendor/**", "**/r.txt"), "/w/ws/vendor/r.txt") == MatchKind.ALL
    assert matched(plan("**/r.txt", "!vendor"), "/w/ws/vendor/r.txt") == 0  # via implicit vendor/**
    # A negated directory-only pattern clears just the directory bit.
    assert matched(plan("**", "!**/sub/"), "/w/ws/sub") == MatchKind.FILE


def test_trailing_slash_matches_directories_and_descendants() -> None:
    p = plan("config/")
    assert matched(p, "/w/ws/config") == MatchKind.DIRECTORY
    assert matched(p, "/w/ws/config/a.yml") == MatchKind.ALL


def test_star_and_globstar() -> None:
    p = plan("*")
    assert matched(p, "/w/ws/top.txt") and matched(p, "/w/ws/.hidden")
    assert matched(p, "/w/ws/d/deep/x")  # implicit d/** pulls in everything below
    assert not matched(plan("*.txt"), "/w/ws/d/a.txt")
    assert matched(plan("*.txt"), "/w/ws/notes.txt/inner.md")
    p = plan("**/requirements.txt")
    assert matched(p, "/w/ws/requirements.txt") and matched(p, "/w/ws/a/b/requirements.txt")
    assert not matched(p, "/w/ws/Requirements.txt")  # case-sensitive on Linux
    assert matched(plan("**"), "/w/ws") == MatchKind.ALL  # "/ws/**" matches "/ws/" itself


def test_braces_classes_and_escapes() -> None:
    assert matched(plan("{a,b}.txt"), "/w/ws/{a,b}.txt") and not matched(plan("{a,b}.txt"), "/w/ws/a.txt")
    assert matched(plan("[ab].txt"), "/w/ws/b.txt") and not matched(plan("[ab].txt"), "/w/ws/c.txt")
    assert matched(plan("[!a].txt"), "/w/ws/b.txt") and not matched(plan("[!a].txt"), "/w/ws/a.txt")
    assert matched(plan("?.cfg"), "/w/ws/x.cfg") and not matched(plan("?.cfg"), "/w/ws/xy.cfg")
    assert matched(plan("\\*"), "/w/ws/*") and not matched(plan("\\*"), "/w/ws/x")
    assert matched(plan("+(a)"), "/w/ws/+(a)")  # noext: extglobs are literal


@pytest.mark.parametrize(
    ("segment", "name", "expected"),
    [
        # minimatch 3 passes classes to the JS regex engine and, if it rejects them, takes
        # the "[" literally. These are the cases where a bash-like glob library differs.
        ("[z-a]", "[z-a]", True),
        ("[z-a]", "m", False),
        ("[a\\-z]", "m", True),  # "\-" loses its backslash: a range
        ("[!]", "x", True),  # JS [^] matches any character
        ("[[:alpha:]]", "a]", True),  # no POSIX classes: "[[:alph" then "]"
        ("[[:alpha:]]", "a", False),
        ("\\@*", "@x", False),  # the escape still applies to the "*" after "@"
        ("\\@*", "@*", True),
        ("*", "\nfoo", False),  # the (?=.) guard: JS "." does not match line terminators
        ("?", "😀", False),  # "?" is one UTF-16 code unit
        ("??", "😀", True),
        ("a?[", "ab[undefined", True),  # minimatch 3 concatenates an undefined here
        ("[\\d-a]", "d", False),  # valid in JS as written, invalid once unescaped: never matches
        ("[]a]", "]", True),
        ("*.txt", ".txt", True),
        ("*", ".", False),
        ("**", "anything", True),
    ],
)
def test_minimatch3_segment_semantics(segment: str, name: str, expected: bool) -> None:
    mm = _Minimatch3("/r/" + to_js(segment))
    assert mm.match(("", "r", to_js(name))) is expected


def test_minimatch3_parse_shapes() -> None:
    assert _mm3_parse("**") is GLOBSTAR
    assert _mm3_parse("requirements.txt") == "requirements.txt"
    assert _mm3_parse("a\\*b") == "a*b"
    assert _mm3_parse("[z-a]") == "[z-a]"


def test_globstar_with_uneven_sections() -> None:
    # The shipped runner (minimatch 3) matches these; minimatch 10.2's globstar rewrite,
    # which the runner's package.json would pull in, does not.
    p = plan("**/a/b/c/**/d")
    assert matched(p, "/w/ws/a/b/c/d") == MatchKind.ALL
    assert matched(p, "/w/ws/x/a/b/c/y/d/f") == MatchKind.ALL


def test_partial_match_prunes() -> None:
    p = plan("src/**/*.py", "docs/conf.py")
    assert p.partial_match(segs("/w"))
    assert p.partial_match(segs("/w/ws"))
    assert p.partial_match(segs("/w/ws/src/pkg"))
    assert p.partial_match(segs("/w/ws/docs"))
    assert not p.partial_match(segs("/w/ws/tests"))
    assert not p.partial_match(segs("/w/other"))
    assert plan("/**").partial_match(("", ""))


@pytest.mark.parametrize(
    ("source", "valid"),
    [
        ("[a-z]", True),
        ("[z-a]", False),
        ("[]a]", True),  # [] is an empty class in JS, then "a]"
        ("[](]", False),  # ...then an unterminated group
        ("[a-\\d]", True),  # Annex B: a class escape makes "-" literal
        ("[\\d-a]", True),
        ("[ab\\]", False),
        ("[\\c]", True),
        ("a{2,1}", False),
        ("{1}", False),
        ("a{", True),
        ("(?<n>a)\\k<n>", True),
        ("(?<n>a)\\k<m>", False),
        ("\\k<m>", True),
        ("\\k<n>(?<n>a)", True),
        ("[\\k](?<n>a)", False),
        ("(?=a)*", True),
        ("(?<=a)*", False),
        ("a**", False),
        ("x|*", False),
        ("[\\b-a]", True),
        ("[\\c1-\\c0]", False),
        ("(?a)", False),
        ("\\8[9-8]", False),
    ],
)
def test_js_regex_validity(source: str, valid: bool) -> None:
    assert _js_regex_is_valid(source) is valid


# ---------------------------------------------------------------------------------------
# Client: walking and hashing
# ---------------------------------------------------------------------------------------


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def expected_hash(*files: Path) -> str:
    return combine_digests(hashlib.sha256(f.read_bytes()).digest() for f in files)


def test_order_is_depth_first_with_byte_sorted_entries(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    files = [write(ws / n, n) for n in ("B.txt", "_c.txt", "a/z.txt", "a-b/x.txt", "a.txt", "z/é.txt", "z/日.txt")]
    assert list_hashed_files(["**/*.txt"], ws) == [
        "B.txt",
        "_c.txt",
        "a/z.txt",
        "a-b/x.txt",
        "a.txt",
        "z/é.txt",
        "z/日.txt",
    ]
    assert hash_files(["**/*.txt"], ws) == expected_hash(*files)


def test_follow_option_and_parameter_agree(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "real" / "r.txt", "r")
    (ws / "link").symlink_to("real")
    plain = hash_files(["**/r.txt"], ws)
    followed = hash_files(["**/r.txt"], ws, follow_symbolic_links=True)
    assert plain != followed
    assert hash_files(["--follow-symbolic-links", "**/r.txt"], ws) == followed
    assert list_hashed_files(["**/r.txt"], ws, follow_symbolic_links=True) == ["link/r.txt", "real/r.txt"]


def test_follow_stops_at_cycles(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a" / "f.txt")
    (ws / "a" / "up").symlink_to("..")
    (ws / "a" / "self").symlink_to(".")
    assert list_hashed_files(["**/f.txt"], ws, follow_symbolic_links=True) == ["a/f.txt"]


def test_dangling_and_looping_links(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "ok.txt")
    (ws / "gone.txt").symlink_to("missing")
    with pytest.raises(HashFilesError):
        hash_files(["*.txt"], ws)
    assert list_hashed_files(["*.txt"], ws, follow_symbolic_links=True) == ["ok.txt"]
    assert hash_files(["ok.txt"], ws)  # the dangling link is never looked at
    (ws / "gone.txt").unlink()
    (ws / "loop.txt").symlink_to("loop.txt")
    with pytest.raises(HashFilesError):  # ELOOP is not ENOENT: fails even when following
        hash_files(["--follow-symbolic-links", "*.txt"], ws)


def test_workspace_is_resolved_and_defaults_to_github_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    f = write(ws / "r.txt", "r")
    (tmp_path / "alias").symlink_to("ws")
    assert hash_files(["r.txt"], tmp_path / "alias") == expected_hash(f)
    # An absolute pattern through the unresolved alias is "outside" the real workspace.
    assert hash_files([str(tmp_path / "alias" / "r.txt")], tmp_path / "alias") == ""
    monkeypatch.setenv("GITHUB_WORKSPACE", str(ws))
    monkeypatch.chdir(tmp_path)
    assert hash_files(["r.txt"]) == expected_hash(f)
    monkeypatch.delenv("GITHUB_WORKSPACE")
    monkeypatch.chdir(ws)
    assert hash_files(["r.txt"]) == expected_hash(f)
    with pytest.raises(HashFilesError):
        hash_files(["r.txt"], tmp_path / "nope")


def test_outside_workspace_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    inside = write(ws / "r.txt", "in")
    write(tmp_path / "out" / "r.txt", "out")
    assert hash_files([str(tmp_path / "**" / "r.txt")], ws) == expected_hash(inside)
    assert hash_files([str(tmp_path / "out" / "r.txt")], ws) == ""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hash_files(["~/ws/r.txt"], ws) == expected_hash(inside)  # HOME above the workspace
    assert hash_files(["~/out/r.txt"], ws) == ""


def test_special_files_fail_instead_of_hanging(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os.mkfifo(ws / "pipe")
    with pytest.raises(HashFilesError, match="not a regular file"):
        hash_files(["pipe"], ws)


def test_unreadable_directory_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    write(ws / "locked" / "x")
    write(ws / "other" / "y")
    real = client.sorted_entries

    def sorted_entries(path: str) -> list[os.DirEntry[str]]:
        if path.endswith("/locked"):  # as readdir on a mode-000 directory does (root ignores modes)
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(client, "sorted_entries", sorted_entries)
    with pytest.raises(HashFilesError, match="Permission denied"):
        hash_files(["**"], ws)
    assert hash_files(["other/**"], ws) == expected_hash(ws / "other" / "y")  # never descended: no error


def test_non_utf8_names(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "ok.txt")
    bad = os.fsencode(ws) + b"/bad\xff.txt"
    with open(bad, "wb") as fh:
        fh.write(b"x")
    # node reads the name back with U+FFFD in it, so the path it stats does not exist.
    with pytest.raises(HashFilesError):
        hash_files(["*.txt"], ws)
    assert list_hashed_files(["--follow-symbolic-links", "*.txt"], ws) == ["ok.txt"]


def test_thread_pool_matches_serial_and_large_files(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    files = [write(ws / f"d{i % 7}" / f"f{i:03d}", os.urandom(i * 37)) for i in range(200)]
    files.append(write(ws / "zz" / "big.bin", os.urandom(3 * client._BLOCK_SIZE + 12345)))
    candidates = [(str(f), False) for f in files]
    serial = client._digest_all(candidates, workers=1)
    parallel = client._digest_all(candidates, workers=4)
    assert serial == parallel == [hashlib.sha256(f.read_bytes()).digest() for f in files]
    order = sorted(files, key=lambda p: os.fsencode(p.relative_to(ws)))  # same-depth tree: byte order
    assert hash_files(["**"], ws) == expected_hash(*order)


def test_parallel_errors_propagate(tmp_path: Path) -> None:
    candidates = [(str(write(tmp_path / f"f{i}")), False) for i in range(100)]
    candidates[57] = (str(tmp_path / "missing"), False)
    with pytest.raises(HashFilesError, match="missing"):
        client._digest_all(candidates, workers=3)


# ---------------------------------------------------------------------------------------
# Against the real @actions/glob (the runner's package.json version), when installed
# ---------------------------------------------------------------------------------------

GLOB_LIB = Path(__file__).resolve().parents[1] / "node" / "node_modules" / "@actions" / "glob" / "lib" / "glob.js"

NODE_HARNESS = """
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
const glob = await import(process.env.GLOB_LIB);
process.stdout.write = () => true;  // core.debug writes there
const out = [];
for (const args of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  try {
    const ws = process.cwd();
    const total = crypto.createHash('sha256');
    let n = 0;
    const g = await glob.create(args.join('\\n'), {followSymbolicLinks: false});
    for await (const file of g.globGenerator()) {
      if (!file.startsWith(ws + path.sep) || fs.statSync(file).isDirectory()) continue;
      total.write(crypto.createHash('sha256').update(fs.readFileSync(file)).digest());
      n++;
    }
    total.end();
    out.push(n ? total.digest('hex') : '');
  } catch (e) { out.push(null); }
}
fs.writeFileSync(process.env.OUT, JSON.stringify(out));
"""

# Everyday patterns, on which the shipped runner and @actions/glob 0.7.0 agree.
REAL_WORLD_PATTERNS = [
    ["**/requirements*.txt"],
    ["**/package-lock.json", "!**/node_modules/**"],
    ["!**/node_modules/**", "**/package-lock.json"],
    ["**/*.gradle*", "**/gradle-wrapper.properties"],
    ["go.sum", "**/go.mod"],
    ["*"],
    ["**"],
    ["src/**", "!src/**/*.pyc"],
    ["**/[Rr]equirements.txt"],
    ["**/*.lock", "**/*.toml"],
    ["vendor/"],
    ["./src/app/*.py", "docs"],
    ["**/?.txt", "**/.hidden/**"],
    ["**/node_modules/**/package.json"],
    ["**/a/b/**/c"],
]


@pytest.mark.skipif(shutil.which("node") is None or not GLOB_LIB.is_file(), reason="node or @actions/glob missing")
def test_agrees_with_actions_glob(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for rel in (
        "requirements.txt",
        "requirements-dev.txt",
        "Requirements.txt",
        "app/requirements.txt",
        "node_modules/x/package-lock.json",
        "node_modules/x/package.json",
        "web/package-lock.json",
        "web/node_modules/y/z/package.json",
        "build.gradle",
        "app/build.gradle.kts",
        "gradle/wrapper/gradle-wrapper.properties",
        "go.sum",
        "svc/go.mod",
        "src/app/main.py",
        "src/app/__pycache__/main.cpython-311.pyc",
        "src/lib/util.py",
        "Cargo.lock",
        "pyproject.toml",
        "vendor/mod/a.txt",
        "docs/conf.py",
        "x/a.txt",
        "x/.hidden/y",
        "a-b/c.txt",
        "a.txt",
        "a/b/q/c/d.txt",
        "a/b/c",
        "é/a.txt",
        "日本/requirements.txt",
    ):
        write(ws / rel, rel)
    (ws / "lnk.txt").symlink_to("a.txt")
    script = tmp_path / "harness.mjs"
    script.write_text(NODE_HARNESS)
    out = tmp_path / "out.json"
    env = dict(os.environ, GLOB_LIB=str(GLOB_LIB), OUT=str(out))
    subprocess.run(["node", str(script)], input=json.dumps(REAL_WORLD_PATTERNS), text=True, cwd=ws, env=env, check=True)
    expected = json.loads(out.read_text())
    got = [hash_files(p, ws) for p in REAL_WORLD_PATTERNS]
    assert got == expected
    assert sum(1 for h in got if h) >= 12  # the tree really exercises the patterns
