"""Pure rules of the GitHub Actions runner's ``hashFiles()`` (no I/O).

What "the runner" means here: the runner evaluates ``hashFiles()`` by running the
committed bundle ``src/Misc/layoutbin/hashFiles/index.js``. That bundle holds an older
``@actions/glob`` (its logic is the same as 0.7.0 without ``excludeHiddenFiles``) and
**minimatch 3.1.2**. The runner's ``package.json`` meanwhile asks for ``@actions/glob``
0.7.0 with minimatch 10.2.x, which disagrees with the bundle on rare patterns (for
example minimatch 10.2's globstar rewrite does not match ``a/b/c/d/f`` against
``**/a/b/c/**/d/**``, and its character classes are parsed differently). What GitHub
actually runs is the bundle, so this module reproduces the bundle: @actions/glob's
``Pattern``/``getSearchPaths``/``match``/``partialMatch`` and minimatch 3.1.2's
``parse``/``matchOne`` with the options @actions/glob passes (``dot``, ``nobrace``,
``noext``, ``nonegate``, ``nocomment``; case-sensitive as on Linux/macOS).

Why it is hand-written rather than built on ``wcmatch``: minimatch 3 compiles each path
segment to a *JavaScript* regular expression, passing character classes through raw and
falling back to a literal ``[`` when JavaScript rejects the class. wcmatch is a fine glob
library but follows its own (bash-like) rules; it disagrees with the runner on, e.g.,
``[z-a]`` (literal in the runner), ``[a\\-z]`` (a range in the runner), ``[!]`` (any
character), ``*`` against a name starting with a newline (no match: JS ``.`` in the
``(?=.)`` guard), ``[[:alpha:]]`` (no POSIX classes in minimatch 3), ``\\@*`` (the ``*`` is
literal) and ``?`` against an astral character (JS counts UTF-16 code units). It also has
no equivalent of minimatch's partial matching, which decides which directories the
runner descends into.

Everything that is compared or matched here is a "JS string": a Python ``str`` holding
UTF-16 code units (astral characters split into surrogate pairs), because that is what
@actions/glob and minimatch index and measure. :func:`to_js` / :func:`from_js` convert.

Paths are passed around as tuples of JS segments, ``"/a/b".split("/") == ("", "a",
"b")``; the file-system root is ``("", "")``, as ``"/".split("/")`` gives in JS.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Final, TypeAlias

__all__ = [
    "DIRECTORY_MATCH",
    "FILE_MATCH",
    "FOLLOW_SYMBOLIC_LINKS_OPTION",
    "GLOBSTAR",
    "GlobPattern",
    "GlobPlan",
    "HashFilesError",
    "HashFilesInvocation",
    "MatchKind",
    "Segments",
    "child_segments",
    "combine_digests",
    "directory_base",
    "from_js",
    "is_lossy_in_js",
    "js_trim",
    "needs_js_conversion",
    "parse_hashfiles_args",
    "path_segments",
    "segments_to_path",
    "to_js",
]

Segments: TypeAlias = tuple[str, ...]

FOLLOW_SYMBOLIC_LINKS_OPTION: Final = "--follow-symbolic-links"


class HashFilesError(Exception):
    """hashFiles() failed; the runner fails the step rather than returning ``''``."""


class MatchKind(IntFlag):
    """@actions/glob's MatchKind: a pattern with a trailing ``/`` matches directories only."""

    NONE = 0
    DIRECTORY = 1
    FILE = 2
    ALL = 3


# The matchers return plain ints: IntFlag arithmetic is too slow for the per-path loop.
DIRECTORY_MATCH: Final = int(MatchKind.DIRECTORY)
FILE_MATCH: Final = int(MatchKind.FILE)


# --------------------------------------------------------------------------------------
# JavaScript string semantics
# --------------------------------------------------------------------------------------

# String.prototype.trim() strips WhiteSpace and LineTerminator, which is not the same set
# as str.strip(): JS strips U+FEFF but not U+001C..U+001F or U+0085.
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_LINE_TERMINATORS: Final = "\n\r\u2028\u2029"
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def js_trim(s: str) -> str:
    return s.strip(_JS_WHITESPACE)


def _split_astral(m: re.Match[str]) -> str:
    o = ord(m.group()) - 0x10000
    return chr(0xD800 + (o >> 10)) + chr(0xDC00 + (o & 0x3FF))


def to_js(s: str) -> str:
    """Python str (file name, argv, env) -> the JS string node would see for it.

    Invalid UTF-8 that Python carries as surrogate escapes is what node decodes to
    U+FFFD; astral characters become surrogate pairs so that indexing and ``?`` count
    UTF-16 code units as in JS.
    """
    if s.isascii():
        return s
    if _SURROGATE.search(s):
        try:
            raw = s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = s.encode("utf-8", "surrogatepass")
        s = raw.decode("utf-8", "replace")
    return _ASTRAL.sub(_split_astral, s)


def from_js(s: str) -> str:
    """JS string -> Python str for the file system (node writes lone surrogates as U+FFFD)."""
    if s.isascii() or not _SURROGATE.search(s):
        return s
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def is_lossy_in_js(name: str) -> bool:
    """Whether node cannot round-trip this file name (invalid UTF-8, decoded to U+FFFD).

    node's ``readdir`` hands back such a name with U+FFFD in it, so the path it then
    stats does not exist: without --follow-symbolic-links that fails hashFiles(), with
    it the entry is dropped like a broken link.
    """
    return not name.isascii() and _SURROGATE.search(name) is not None


def needs_js_conversion(name: str) -> bool:
    """Whether :func:`to_js` could change ``name``; cheap pre-check for the hot walk loop."""
    return not name.isascii() and (_ASTRAL.search(name) is not None or _SURROGATE.search(name) is not None)


# --------------------------------------------------------------------------------------
# The C# side: HashFilesFunction.cs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashFilesInvocation:
    follow_symbolic_links: bool
    patterns: str  # the arguments joined with "\n", as passed to node in env ``patterns``


def _ordinal_ignore_case_equals(a: str, b: str) -> bool:
    # .NET OrdinalIgnoreCase compares char by char after simple upper-casing; str.upper()
    # may expand a character ("ß" -> "SS"), which .NET never does.
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        ux, uy = x.upper(), y.upper()
        if (ux if len(ux) == 1 else x) != (uy if len(uy) == 1 else y):
            return False
    return True


def parse_hashfiles_args(args: Sequence[str]) -> HashFilesInvocation:
    """Only the first argument may be an option, and the only option is --follow-symbolic-links."""
    follow = False
    patterns: list[str] = []
    for i, arg in enumerate(args):
        if i == 0 and arg.startswith("--"):
            if _ordinal_ignore_case_equals(arg, FOLLOW_SYMBOLIC_LINKS_OPTION):
                follow = True
                continue
            # Wording (typo included) as the runner's ArgumentOutOfRangeException.
            raise HashFilesError(f"Invalid glob option {arg}, avaliable option: '{FOLLOW_SYMBOLIC_LINKS_OPTION}'.")
        patterns.append(arg)
    return HashFilesInvocation(follow, "\n".join(patterns))


def combine_digests(digests: Iterable[bytes]) -> str:
    """``sha256(d1 || d2 || ...)`` over raw 32-byte digests in traversal order; ``''`` if none."""
    outer = hashlib.sha256()
    count = 0
    for digest in digests:
        outer.update(digest)
        count += 1
    return outer.hexdigest() if count else ""


# --------------------------------------------------------------------------------------
# @actions/glob path helpers (posix flavour)
# --------------------------------------------------------------------------------------

_MULTI_SLASH: Final = re.compile("//+")


def _normalize_separators(p: str) -> str:
    return _MULTI_SLASH.sub("/", p)


def _safe_trim_trailing_separator(p: str) -> str:
    if not p:
        return ""
    p = _normalize_separators(p)
    if not p.endswith("/") or p == "/":
        return p
    return p[:-1]


def _dirname(p: str) -> str:
    # pathHelper.dirname = path.dirname after safeTrimTrailingSeparator; with no "//" and
    # no trailing "/" left, node's posix dirname reduces to this.
    p = _safe_trim_trailing_separator(p)
    idx = p.rfind("/")
    if idx == -1:
        return "."
    return "/" if idx == 0 else p[:idx]


def _has_root(p: str) -> bool:
    return _normalize_separators(p).startswith("/")


def path_segments(p: str) -> list[str]:
    """@actions/glob ``new Path(string).segments``: the root is the segment ``"/"``."""
    if not p:
        raise HashFilesError("Parameter 'itemPath' must not be empty")
    p = _safe_trim_trailing_separator(p)
    if not _has_root(p):
        return p.split("/")
    return ["/"] if p == "/" else ["/", *p[1:].split("/")]


def _path_from_segments(segments: Sequence[str]) -> str:
    """@actions/glob ``new Path(segments).toString()``, with its validation."""
    if not segments:
        raise HashFilesError("Parameter 'itemPath' must not be an empty array")
    checked: list[str] = []
    for i, segment in enumerate(segments):
        if not segment:
            raise HashFilesError("Parameter 'itemPath' must not contain any empty segments")
        segment = _normalize_separators(segment)
        if i == 0 and _has_root(segment):
            segment = _safe_trim_trailing_separator(segment)
            if segment != _dirname(segment):
                raise HashFilesError("Parameter 'itemPath' root segment contains information for multiple segments")
        elif "/" in segment:
            raise HashFilesError("Parameter 'itemPath' contains unexpected path separators")
        checked.append(segment)
    result = checked[0]
    skip_slash = result.endswith("/")
    for segment in checked[1:]:
        if skip_slash:
            skip_slash = False
        else:
            result += "/"
        result += segment
    return result


def _ensure_absolute_root(root: str, item_path: str) -> str:
    if _has_root(item_path):
        return item_path
    if not _has_root(root):
        raise HashFilesError("ensureAbsoluteRoot parameter 'root' must have an absolute root")
    return (root if root.endswith("/") else root + "/") + item_path


_GLOB_ESCAPE_BRACKET: Final = re.compile(r"(\[)(?=[^/]+\])")


def _glob_escape(s: str) -> str:
    s = s.replace("\\", "\\\\")
    s = _GLOB_ESCAPE_BRACKET.sub("[[]", s)
    return s.replace("?", "[?]").replace("*", "[*]")


def _get_literal(segment: str) -> str:
    """Pattern.getLiteral: the unescaped segment, or ``''`` when it contains a glob.

    A one-character class such as ``[a]`` counts as the literal ``a``, which is how the
    runner lets ``[*]`` name a file called ``*``.
    """
    literal = ""
    i = 0
    n = len(segment)
    while i < n:
        c = segment[i]
        if c == "\\" and i + 1 < n:
            i += 1
            literal += segment[i]
            i += 1
            continue
        if c in "*?":
            return ""
        if c == "[" and i + 1 < n:
            char_set = ""
            closed = -1
            i2 = i + 1
            while i2 < n:
                c2 = segment[i2]
                if c2 == "\\" and i2 + 1 < n:
                    i2 += 1
                    char_set += segment[i2]
                elif c2 == "]":
                    closed = i2
                    break
                else:
                    char_set += c2
                i2 += 1
            if closed >= 0:
                if len(char_set) > 1:
                    return ""
                if char_set:
                    literal += char_set
                    i = closed + 1
                    continue
        literal += c
        i += 1
    return literal


def segments_to_path(segments: Segments) -> str:
    return "/".join(segments)


def directory_base(directory: Segments) -> Segments:
    """Segments that ``path.join(directory, name)`` puts before ``name``: node normalises.

    Only a search path can hold a ``.`` segment (from a first pattern segment like
    ``[.]``); ``..`` is rejected by pattern validation, so it never appears.
    """
    if directory == ("", ""):
        return ("",)
    if "." in directory[1:]:
        return ("", *(s for s in directory[1:] if s != "."))
    return directory


def child_segments(parent: Segments, name: str) -> Segments:
    return (*directory_base(parent), name)


# --------------------------------------------------------------------------------------
# A JavaScript (non-unicode, Annex B) regular expression parser
# --------------------------------------------------------------------------------------
# minimatch 3 decides whether a character class is valid by asking the JS engine
# (``RegExp('[' + cs + ']')``) and falls back to a literal "[" if it throws; it also gives
# up on a whole segment (never matches) if the final RegExp throws. To make the same
# decisions we parse with JS rules, and translate the (simple) regexes minimatch builds
# into Python ones with the same meaning.


class _JsSyntaxError(Exception):
    pass


_CLASS_ESCAPE_RANGES: Final[dict[str, list[tuple[int, int]]]] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    # JS \s: WhiteSpace + LineTerminator (Zs per current Unicode), code units only.
    "s": sorted((ord(c), ord(c)) for c in _JS_WHITESPACE),
}


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= 0xFFFF:
        out.append((nxt, 0xFFFF))
    return out


def _py_char(code: int) -> str:
    return f"\\u{code:04x}"


def _py_class(ranges: list[tuple[int, int]], negate: bool) -> str:
    if not ranges:
        return "[\\s\\S]" if negate else "(?!)"
    body = "".join(_py_char(lo) if lo == hi else f"{_py_char(lo)}-{_py_char(hi)}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


_IDENT_START: Final = re.compile(r"[A-Za-z_$]")
_IDENT_PART: Final = re.compile(r"[A-Za-z0-9_$]")
_BRACED_QUANTIFIER: Final = re.compile(r"\{(\d+)(,(\d*))?\}")
_HEX2: Final = re.compile(r"[0-9A-Fa-f]{2}")
_HEX4: Final = re.compile(r"[0-9A-Fa-f]{4}")
_JS_DOT: Final = "[^\\n\\r\\u2028\\u2029]"
_ASCII_WORD: Final = "[A-Za-z0-9_]"


class _JsRegex:
    """Recursive-descent parser for a JS RegExp source (no flags) emitting Python re source.

    Validation covers what V8 rejects in non-unicode mode (Annex B): unterminated classes
    and groups, ranges out of order, nothing to repeat, bad ``{n,m}``, ``\\`` at the end,
    bad group names and ``\\k`` when named groups exist. Emission is exact for the subset
    minimatch generates; the rest (back-references, lookbehind) is only validated.
    """

    def __init__(self, src: str) -> None:
        self.s = src
        self.i = 0
        self.emittable = True
        self.capture_count = 0
        self.group_names: set[str] = set()
        self.named_references: set[str] = set()
        # V8 scans ahead: whether (?<name> appears decides how \k is read.
        self.has_named_groups = re.search(r"\(\?<(?![=!])", src) is not None
        self.total_captures = self._count_captures()

    def _count_captures(self) -> int:
        count = 0
        in_class = False
        i = 0
        s = self.s
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if in_class:
                if c == "]":
                    in_class = False
            elif c == "[":
                in_class = True
            elif c == "(" and (
                not s.startswith("(?", i) or (s.startswith("(?<", i) and s[i + 3 : i + 4] not in ("=", "!"))
            ):
                count += 1
            i += 1
        return count

    def parse(self) -> str:
        out = self._disjunction()
        if self.i < len(self.s):
            raise _JsSyntaxError("Unmatched ')'")
        if not self.named_references <= self.group_names:  # forward references are fine
            raise _JsSyntaxError("Invalid named capture referenced")
        return out

    def _peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def _disjunction(self) -> str:
        alternatives = [self._alternative()]
        while self._peek() == "|":
            self.i += 1
            alternatives.append(self._alternative())
        return "|".join(alternatives)

    def _alternative(self) -> str:
        parts: list[str] = []
        while self.i < len(self.s) and self._peek() not in "|)":
            parts.append(self._term())
        return "".join(parts)

    def _term(self) -> str:
        s = self.s
        c = s[self.i]
        quantifiable = True
        if c == "^":
            self.i += 1
            atom, quantifiable = "^", False
        elif c == "$":
            self.i += 1
            atom, quantifiable = r"\Z", False  # JS "$" without the m flag: end of input only
        elif c == "\\" and self._peek(1) in ("b", "B"):
            self.i += 2
            word_boundary = f"(?:(?<={_ASCII_WORD})(?!{_ASCII_WORD})|(?<!{_ASCII_WORD})(?={_ASCII_WORD}))"
            atom = word_boundary if self._peek(-1) == "b" else f"(?!{word_boundary})"
            quantifiable = False
        elif c == "(":
            atom, quantifiable = self._group()
        elif c == "[":
            atom = self._class()
        elif c == ".":
            self.i += 1
            atom = _JS_DOT
        elif c == "\\":
            atom = self._atom_escape()
        elif c in "*+?" or (c == "{" and _BRACED_QUANTIFIER.match(s, self.i)):
            raise _JsSyntaxError("Nothing to repeat")
        else:
            self.i += 1
            atom = re.escape(c)
        quantifier = self._quantifier()
        if quantifier:
            if not quantifiable:
                raise _JsSyntaxError("Nothing to repeat")
            if atom.startswith(("(?=", "(?!")):
                self.emittable = False  # Annex B allows it; Python does not
            return f"(?:{atom}){quantifier}"
        return atom

    def _quantifier(self) -> str:
        c = self._peek()
        if c in ("*", "+", "?"):
            self.i += 1
            q = c
        elif c == "{":
            m = _BRACED_QUANTIFIER.match(self.s, self.i)
            if not m:
                return ""
            lo = int(m.group(1))
            if m.group(2) and m.group(3) and int(m.group(3)) < lo:
                raise _JsSyntaxError("numbers out of order in {} quantifier")
            self.i = m.end()
            q = m.group(0)
        else:
            return ""
        if self._peek() == "?":
            self.i += 1
            q += "?"
        return q

    def _group(self) -> tuple[str, bool]:
        s = self.s
        i = self.i
        quantifiable = True
        if s.startswith("(?:", i):
            self.i += 3
            opener = "(?:"
        elif s.startswith("(?=", i) or s.startswith("(?!", i):
            opener = s[i : i + 3]
            self.i += 3
        elif s.startswith("(?<=", i) or s.startswith("(?<!", i):
            opener = s[i : i + 4]
            self.i += 4
            quantifiable = False
            self.emittable = False  # Python needs fixed-width lookbehind
        elif s.startswith("(?<", i):
            self.i += 3
            name = self._group_name()
            if name in self.group_names:
                raise _JsSyntaxError("Duplicate capture group name")
            self.group_names.add(name)
            self.capture_count += 1
            opener = "("
        elif s.startswith("(?", i):
            raise _JsSyntaxError("Invalid group")
        else:
            self.i += 1
            self.capture_count += 1
            opener = "("
        inner = self._disjunction()
        if self._peek() != ")":
            raise _JsSyntaxError("Unterminated group")
        self.i += 1
        return f"{opener}{inner})", quantifiable

    def _group_name(self) -> str:
        s = self.s
        start = self.i
        if not _IDENT_START.match(self._peek()):
            raise _JsSyntaxError("Invalid capture group name")
        self.i += 1
        while _IDENT_PART.match(self._peek()):
            self.i += 1
        if self._peek() != ">":
            raise _JsSyntaxError("Invalid capture group name")
        name = s[start : self.i]
        self.i += 1
        return name

    def _atom_escape(self) -> str:
        s = self.s
        if self.i + 1 >= len(s):
            raise _JsSyntaxError("\\ at end of pattern")
        d = s[self.i + 1]
        if d in "123456789":
            m = re.compile(r"\d+").match(s, self.i + 1)
            assert m is not None
            if int(m.group()) <= self.total_captures:
                self.i = m.end()
                self.emittable = False  # back-reference; minimatch never produces one
                return "(?:)"
            # Annex B: not a back-reference, so a legacy octal or identity escape.
            if d in "89":
                self.i += 2
                return re.escape(d)
            return _py_char(self._legacy_octal())
        if d in "dDwWsS":
            self.i += 2
            ranges = _CLASS_ESCAPE_RANGES[d.lower()]
            return _py_class(_complement(ranges) if d.isupper() else ranges, False)
        if d == "k" and self.has_named_groups:
            m = re.compile(r"k<([A-Za-z_$][A-Za-z0-9_$]*)>").match(s, self.i + 1)
            if not m:
                raise _JsSyntaxError("Invalid named reference")
            self.named_references.add(m.group(1))
            self.i = m.end()
            self.emittable = False
            return "(?:)"
        code = self._character_escape(in_class=False)
        return _py_char(code)

    def _legacy_octal(self) -> int:
        # Called with self.i at the backslash and an octal digit after it.
        s = self.s
        j = self.i + 1
        first = s[j]
        max_len = 3 if first in "0123" else 2
        k = j
        while k < len(s) and k - j < max_len and s[k] in "01234567":
            k += 1
        self.i = k
        return int(s[j:k], 8)

    def _character_escape(self, *, in_class: bool) -> int:
        """Escapes that stand for one code unit. ``self.i`` is at the backslash."""
        s = self.s
        d = s[self.i + 1]
        if d == "c":
            nxt = self._peek(2)
            if nxt.isascii() and (nxt.isalpha() or (in_class and (nxt.isdigit() or nxt == "_"))):
                self.i += 3
                return ord(nxt) % 32
            self.i += 1  # Annex B: "\c" not followed by a control letter is a literal "\"
            return ord("\\")
        if d == "0" and not self._peek(2).isdigit():
            self.i += 2
            return 0
        if d in "01234567":
            return self._legacy_octal()
        if d == "x" and _HEX2.match(s, self.i + 2):
            self.i += 4
            return int(s[self.i - 2 : self.i], 16)
        if d == "u" and _HEX4.match(s, self.i + 2):
            self.i += 6
            return int(s[self.i - 4 : self.i], 16)
        controls = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
        if d in controls:
            self.i += 2
            return controls[d]
        if in_class and d == "b":
            self.i += 2
            return 0x08
        if in_class and d == "k" and self.has_named_groups:
            raise _JsSyntaxError("Invalid escape")
        self.i += 2
        return ord(d)

    def _class_atom(self) -> int | list[tuple[int, int]]:
        s = self.s
        c = s[self.i]
        if c != "\\":
            self.i += 1
            return ord(c)
        if self.i + 1 >= len(s):
            raise _JsSyntaxError("\\ at end of pattern")
        d = s[self.i + 1]
        if d in "dDwWsS":
            self.i += 2
            ranges = _CLASS_ESCAPE_RANGES[d.lower()]
            return _complement(ranges) if d.isupper() else list(ranges)
        if d in "89":
            self.i += 2
            return ord(d)
        return self._character_escape(in_class=True)

    def _class(self) -> str:
        s = self.s
        self.i += 1
        negate = False
        if self._peek() == "^":
            negate = True
            self.i += 1
        ranges: list[tuple[int, int]] = []

        def add(atom: int | list[tuple[int, int]]) -> None:
            if isinstance(atom, int):
                ranges.append((atom, atom))
            else:
                ranges.extend(atom)

        while True:
            if self.i >= len(s):
                raise _JsSyntaxError("Unterminated character class")
            if s[self.i] == "]":
                self.i += 1
                break
            lo = self._class_atom()
            if self._peek() == "-" and self.i + 1 < len(s) and s[self.i + 1] != "]":
                self.i += 1
                hi = self._class_atom()
                if isinstance(lo, int) and isinstance(hi, int):
                    if lo > hi:
                        raise _JsSyntaxError("Range out of order in character class")
                    ranges.append((lo, hi))
                else:  # Annex B: a class escape in a range makes "-" a literal
                    add(lo)
                    add(ord("-"))
                    add(hi)
            else:
                add(lo)
        return _py_class(sorted(ranges), negate)


def _js_regex_is_valid(src: str) -> bool:
    try:
        _JsRegex(src).parse()
    except _JsSyntaxError:
        return False
    return True


# --------------------------------------------------------------------------------------
# minimatch 3.1.2, restricted to the options @actions/glob uses
# --------------------------------------------------------------------------------------


class _Globstar:
    __slots__ = ()

    def __repr__(self) -> str:
        return "GLOBSTAR"


GLOBSTAR: Final = _Globstar()

_RE_SPECIALS: Final = frozenset("().*{}+?[]^$\\!")
_QMARK: Final = "[^/]"
_STAR: Final = _QMARK + "*?"
_PATTERN_START_DOT: Final = "(?!(?:^|\\/)\\.{1,2}(?:$|\\/))"  # dot:true still never matches "." / ".."
_GLOB_UNESCAPE: Final = re.compile(r"\\([^\n\r\u2028\u2029])")  # JS /\\(.)/g: "." skips line ends


@dataclass(frozen=True)
class _SegmentRegex:
    """A compiled segment; ``source`` is the JS regex minimatch would build (for tests/debugging)."""

    source: str
    regex: re.Pattern[str] | None  # None: the JS RegExp would throw, minimatch uses /$./

    def test(self, segment: str) -> bool:
        return self.regex is not None and self.regex.search(segment) is not None


SegmentMatcher: TypeAlias = str | _SegmentRegex | _Globstar


def _compile_js_regex(src: str) -> re.Pattern[str] | None:
    try:
        parser = _JsRegex(src)
        py_src = parser.parse()
    except _JsSyntaxError:
        return None
    if not parser.emittable:  # cannot happen for sources built by _mm3_parse
        raise AssertionError(f"cannot translate JS regex {src!r}")
    return re.compile(py_src)


def _mm3_parse(pattern: str, is_sub: bool = False) -> SegmentMatcher | tuple[str, bool] | None:
    """minimatch 3.1.2 ``Minimatch.prototype.parse`` with noext/nocase=false/dot=true.

    Returns GLOBSTAR, a literal string, a :class:`_SegmentRegex`, ``None`` for a segment
    holding "/" (cannot happen after splitting) or, for ``is_sub``, ``(re_source, magic)``.
    """
    if pattern == "**":
        return GLOBSTAR
    if pattern == "":
        return ""

    src = ""
    has_magic = False
    escaping = False
    state_char = ""
    in_class = False
    re_class_start = -1
    class_start = -1
    pattern_start = "" if pattern[0] == "." else _PATTERN_START_DOT

    def clear_state_char() -> None:
        nonlocal src, has_magic, state_char
        if state_char:
            if state_char == "*":
                src += _STAR
                has_magic = True
            elif state_char == "?":
                src += _QMARK
                has_magic = True
            else:
                src += "\\" + state_char
            state_char = ""

    def sub_parse(cs: str) -> tuple[str, bool]:
        sp = _mm3_parse(cs, True)
        if isinstance(sp, tuple):
            return sp
        # parse('') and parse('**') return early with a string/GLOBSTAR, and minimatch then
        # reads sp[0] and sp[1] from it: undefined, which "+" turns into "undefined".
        return "undefined", False

    for i, c in enumerate(pattern):
        if escaping and c in _RE_SPECIALS:
            src += "\\" + c
            escaping = False
            continue
        if c == "/":
            return None
        if c == "\\":
            clear_state_char()
            escaping = True
            continue
        if c in "?*+@!":
            if in_class:
                if c == "!" and i == class_start + 1:
                    c = "^"
                src += c
                continue
            # noext: the state char is flushed at once. Note `escaping` is left alone here,
            # so after "\@" the next special character is still taken as escaped.
            clear_state_char()
            state_char = c
            clear_state_char()
            continue
        if c == "(":
            src += "(" if in_class else "\\("
            continue
        if c == ")":
            src += "\\)"
            continue
        if c == "|":
            src += "\\|"
            escaping = False
            continue
        if c == "[":
            clear_state_char()
            if in_class:
                src += "\\["
                continue
            in_class = True
            class_start = i
            re_class_start = len(src)
            src += "["
            continue
        if c == "]":
            if i == class_start + 1 or not in_class:
                src += "\\]"
                escaping = False
                continue
            cs = pattern[class_start + 1 : i]
            if not _js_regex_is_valid("[" + cs + "]"):
                sp_src, sp_magic = sub_parse(cs)
                src = src[:re_class_start] + "\\[" + sp_src + "\\]"
                has_magic = has_magic or sp_magic
                in_class = False
                continue
            has_magic = True
            in_class = False
            src += "]"
            continue
        clear_state_char()
        if escaping:
            escaping = False
        elif c in _RE_SPECIALS and not (c == "^" and in_class):
            src += "\\"
        src += c

    if in_class:
        # "[abc" is a literal "[" followed by whatever "abc" means.
        sp_src, sp_magic = sub_parse(pattern[class_start + 1 :])
        src = src[:re_class_start] + "\\[" + sp_src
        has_magic = has_magic or sp_magic

    clear_state_char()
    if escaping:
        src += "\\\\"

    add_pattern_start = src[:1] in ("[", ".", "(")
    if src != "" and has_magic:
        src = "(?=.)" + src
    if add_pattern_start:
        src = pattern_start + src
    if is_sub:
        return src, has_magic
    if not has_magic:
        return _GLOB_UNESCAPE.sub(r"\1", pattern)
    full = "^" + src + "$"
    return _SegmentRegex(full, _compile_js_regex(full))


_MM_SLASH_SPLIT: Final = re.compile("/+")


class _Minimatch3:
    """The per-pattern state of minimatch 3.1.2 for one (brace-free) pattern."""

    def __init__(self, pattern: str) -> None:
        # minimatch 3 trims; @actions/glob already did, but it trims a pattern such as
        # "foo /" only after removing the slash, so this can still bite.
        pattern = js_trim(pattern)
        self.pattern = pattern
        self.empty = pattern == ""
        parsed = [_mm3_parse(part) for part in _MM_SLASH_SPLIT.split(pattern)] if pattern else []
        # A segment that fails to compile drops the whole set (cannot happen after split).
        self.set: list[list[SegmentMatcher]] = []
        if parsed and all(p is not None and not isinstance(p, tuple) for p in parsed):
            self.set = [[p for p in parsed if p is not None and not isinstance(p, tuple)]]

    def match(self, file: Sequence[str]) -> bool:
        if self.empty:
            return list(file) == [""]
        # nobrace: the set holds at most one entry.
        return bool(self.set) and _match_one(file, 0, self.set[0], 0, False)

    def match_one_partial(self, file: Sequence[str]) -> bool:
        if not self.set:
            # minimatch would read set[0] of an empty set and throw.
            raise HashFilesError(f"Invalid pattern '{self.pattern}'")
        return _match_one(file, 0, self.set[0], 0, True)


def _match_one(file: Sequence[str], fi: int, pattern: Sequence[SegmentMatcher], pi: int, partial: bool) -> bool:
    """minimatch 3.1.2 ``matchOne`` (recursive, correct globstar), with dot:true."""
    fl = len(file)
    pl = len(pattern)
    while fi < fl and pi < pl:
        p = pattern[pi]
        f = file[fi]
        if p is GLOBSTAR:
            pr = pi + 1
            if pr == pl:
                # A trailing ** swallows the rest, but never a "." or ".." segment.
                rest = file[fi:]
                return "." not in rest and ".." not in rest
            fr = fi
            while fr < fl:
                if _match_one(file, fr, pattern, pr, partial):
                    return True
                swallowee = file[fr]
                if swallowee == "." or swallowee == "..":
                    break
                fr += 1
            return partial and fr == fl
        if isinstance(p, str):
            if f != p:
                return False
        elif not p.test(f):  # type: ignore[union-attr]
            return False
        fi += 1
        pi += 1
    if fi == fl and pi == pl:
        return True
    if fi == fl:
        return partial
    # Pattern exhausted: only a trailing "" (path ending in "/") may be left over.
    return fi == fl - 1 and file[fi] == ""


# --------------------------------------------------------------------------------------
# @actions/glob Pattern, getSearchPaths, match, partialMatch
# --------------------------------------------------------------------------------------


class GlobPattern:
    """One @actions/glob ``Pattern`` (Linux/macOS semantics)."""

    def __init__(
        self,
        pattern: str,
        *,
        cwd: str,
        homedir: Callable[[], str],
        implicit: bool = False,
    ) -> None:
        """``pattern`` is a JS string; ``cwd``/``homedir()`` are JS strings too."""
        pattern = js_trim(pattern)
        negate = False
        while pattern.startswith("!"):
            negate = not negate
            pattern = js_trim(pattern[1:])
        pattern = _fixup_pattern(pattern, cwd, homedir)
        self.negate = negate
        self.is_implicit = implicit
        self.segments: list[str] = path_segments(pattern)
        self.trailing_separator = _normalize_separators(pattern).endswith("/")
        pattern = _safe_trim_trailing_separator(pattern)
        self.pattern = pattern

        search_segments: list[str] = []
        for segment in self.segments:
            literal = _get_literal(segment)
            if literal == "":
                break
            search_segments.append(literal)
        self.search_path: str = _path_from_segments(search_segments)
        # rootRegExp is new RegExp(escape(searchSegments[0])): on posix that is "/".
        self._root_literal = search_segments[0]
        self._ends_with_globstar = self.segments[-1] == "**"
        self._kind = int(MatchKind.DIRECTORY if self.trailing_separator else MatchKind.ALL)
        self._minimatch = _Minimatch3(pattern)

    @classmethod
    def implicit_descendants(cls, base: GlobPattern, *, cwd: str, homedir: Callable[[], str]) -> GlobPattern:
        """``new Pattern(negate, true, segments.concat('**'))``: re-validated like any pattern."""
        segments = [*base.segments, "**"]
        root = _get_literal(segments[0])
        if not (root and _has_root(root)):
            raise HashFilesError("Parameter 'segments' first element must be a root path")
        text = js_trim(_path_from_segments(segments))
        if base.negate:
            text = "!" + text
        return cls(text, cwd=cwd, homedir=homedir, implicit=True)

    def needs_implicit_descendants(self) -> bool:
        return self.trailing_separator or not self._ends_with_globstar

    def match(self, item: Segments) -> int:
        """Pattern.match (a :class:`MatchKind` value) for an absolute, normalised item path."""
        # @actions/glob appends "/" to the path so that "/foo/**" matches "/foo" itself.
        if self._ends_with_globstar and not self.is_implicit and item[-1] != "":
            item = (*item, "")
        if self._minimatch.match(item):
            return self._kind
        return 0

    def partial_match(self, item: Segments) -> bool:
        """Whether a descendant of ``item`` could match (decides whether to descend)."""
        if item == ("", ""):
            return self._root_literal in "/"
        return self._minimatch.match_one_partial(item)

    def __repr__(self) -> str:
        return f"GlobPattern({'!' if self.negate else ''}{self.pattern!r}, implicit={self.is_implicit})"


def _fixup_pattern(pattern: str, cwd: str, homedir: Callable[[], str]) -> str:
    if not pattern:
        raise HashFilesError("pattern cannot be empty")
    literal_segments = [_get_literal(x) for x in path_segments(pattern)]
    if any((x == "." and i != 0) or x == ".." for i, x in enumerate(literal_segments)):
        raise HashFilesError(f"Invalid pattern '{pattern}'. Relative pathing '.' and '..' is not allowed.")
    if _has_root(pattern) and not literal_segments[0]:
        raise HashFilesError(f"Invalid pattern '{pattern}'. Root segment must not contain globs.")
    pattern = _normalize_separators(pattern)
    if pattern == "." or pattern.startswith("./"):
        pattern = _glob_escape(cwd) + pattern[1:]
    elif pattern == "~" or pattern.startswith("~/"):
        home = homedir()
        if not home:
            raise HashFilesError("Unable to determine HOME directory")
        if not _has_root(home):
            raise HashFilesError(f"Expected HOME directory to be a rooted path. Actual '{home}'")
        pattern = _glob_escape(home) + pattern[1:]
    else:
        pattern = _ensure_absolute_root(_glob_escape(cwd), pattern)
    return _normalize_separators(pattern)


def _get_search_paths(patterns: Sequence[GlobPattern]) -> list[str]:
    """De-duplicated search roots in argument order, minus those under another root."""
    includes = [p for p in patterns if not p.negate]
    state: dict[str, str] = {p.search_path: "candidate" for p in includes}
    result: list[str] = []
    for p in includes:
        key = p.search_path
        if state[key] == "included":
            continue
        found_ancestor = False
        temp = key
        parent = _dirname(temp)
        while parent != temp:
            if parent in state:
                found_ancestor = True
                break
            temp = parent
            parent = _dirname(temp)
        if not found_ancestor:
            result.append(key)
            state[key] = "included"
    return result


@dataclass(frozen=True)
class GlobPlan:
    """What globGenerator works from: the patterns incl. implicit ones, and the search roots."""

    patterns: tuple[GlobPattern, ...]
    search_paths: tuple[str, ...]

    @classmethod
    def create(
        cls, patterns: str, *, cwd: str, homedir: Callable[[], str], implicit_descendants: bool = True
    ) -> GlobPlan:
        """DefaultGlobber.create + the first steps of globGenerator.

        hashFiles() uses the default implicitDescendants=true; @actions/cache resolves its
        `path` input with implicitDescendants=false (a matched directory is archived whole).

        ``patterns`` is the "\\n"-joined argument string; ``cwd`` is the workspace (JS
        string, real path, as node's ``process.cwd()``); ``homedir`` is only called for a
        ``~`` pattern.
        """
        given: list[GlobPattern] = []
        for line in patterns.split("\n"):
            line = js_trim(line)
            if not line or line.startswith("#"):
                continue
            given.append(GlobPattern(line, cwd=cwd, homedir=homedir))
        expanded: list[GlobPattern] = []
        for p in given:
            expanded.append(p)
            if implicit_descendants and p.needs_implicit_descendants():
                expanded.append(GlobPattern.implicit_descendants(p, cwd=cwd, homedir=homedir))
        return cls(tuple(expanded), tuple(_get_search_paths(expanded)))

    def match(self, item: Segments) -> int:
        """Last matching pattern wins: includes set bits, negations clear them."""
        result = 0
        for p in self.patterns:
            if p.negate:
                result &= ~p.match(item)
            else:
                result |= p.match(item)
        return result

    def partial_match(self, item: Segments) -> bool:
        return any(not p.negate and p.partial_match(item) for p in self.patterns)
