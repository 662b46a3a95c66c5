"""GitHub Actions workflow expressions (the ``${{ }}`` language).

This is a hand-written lexer, recursive-descent parser and tree-walking evaluator:
no well-kept Python library implements this language, so we follow the two
reference implementations directly:

* the runner's C# code (``actions/runner`` ``src/Sdk/DTExpressions2``), which is
  what actually evaluates workflow expressions, and
* GitHub's TypeScript implementation (``actions/languageservices``
  ``expressions/``) whose cross-language conformance data lives in
  ``shared/spec/expressions-testdata``.

Where the two differ, the runner's behaviour wins (absolute error positions, lazy
``format``/``case`` arguments, ``G15`` number formatting, ``OrdinalIgnoreCase``
string comparison, Int32 range for ``0x``/``0o`` numbers).  See
``shared/spec/runner.md`` section 3 for the rules.

Values are plain Python data: ``None``, ``bool``, ``int``/``float``, ``str``,
mappings (objects) and lists/tuples (arrays).  Numbers produced by the language
itself (literals, ``fromJSON``) are ``float``; context values are returned
unchanged, so object identity (which ``==`` uses for objects and arrays) is kept.

Public API: :func:`evaluate`, :func:`evaluate_if`, :func:`evaluate_template`,
:func:`interpolate`, :class:`ExpressionFunctions`, :class:`ExpressionError` and
:class:`CaseSensitiveDict` (wrap the ``env`` context in it for Linux/macOS
semantics, where ``env`` keys are case-sensitive).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

__all__ = [
    "CaseSensitiveDict",
    "ExpressionError",
    "ExpressionFunctions",
    "evaluate",
    "evaluate_if",
    "evaluate_template",
    "interpolate",
]

MAX_EXPRESSION_LENGTH = 21_000
MAX_DEPTH = 50
_MAX_FORMAT_ARGS = 255
_INT32_MAX = 2**31 - 1

ErrorKind = Literal["lexing", "parsing", "evaluation"]


# --------------------------------------------------------------------------- errors


class ExpressionError(Exception):
    """A lexing, parsing or evaluation error.

    ``str(err)`` reads like GitHub's messages, e.g.
    ``Unexpected symbol: '2'. Located at position 3 within expression: 1 2``.
    ``position`` is 1-based and counts UTF-16 code units, like the runner.
    """

    def __init__(self, message: str, *, kind: ErrorKind, expression: str, position: int | None) -> None:
        self.message = message
        self.kind: ErrorKind = kind
        self.expression = expression
        self.position = position
        if position is None:
            text = f"{message}. Located within expression: {expression}"
        else:
            text = f"{message}. Located at position {position} within expression: {expression}"
        super().__init__(text)


def _position(text: str, index: int) -> int:
    """1-based position of ``text[index]`` in UTF-16 code units (as .NET and JS count)."""
    head = text[:index]
    if head.isascii():
        return index + 1
    return index + 1 + sum(1 for ch in head if ord(ch) > 0xFFFF)


# --------------------------------------------------------------------------- values


class CaseSensitiveDict(dict[str, Any]):
    """A mapping whose keys are matched case-sensitively by property access.

    Every other object is matched case-insensitively; the runner uses this for the
    ``env`` context on Linux and macOS.
    """


class _FilteredArray(list[Any]):
    """Result of ``.*`` / ``[*]``: later ``.x`` / ``[i]`` map over its elements."""


_NULL, _BOOL, _NUM, _STR, _ARR, _OBJ = range(6)
_KIND_NAMES = ("Null", "Boolean", "Number", "String", "Array", "Object")


def _kind(value: Any) -> int:
    if value is None:
        return _NULL
    t = type(value)
    if t is str:
        return _STR
    if t is bool:
        return _BOOL
    if t is float or t is int:
        return _NUM
    if t is list or t is _FilteredArray:
        return _ARR
    if t is dict or t is CaseSensitiveDict:
        return _OBJ
    if isinstance(value, str):
        return _STR
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUM
    if isinstance(value, Mapping):
        return _OBJ
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return _ARR
    # Anything else is an opaque object, as in the runner (not traversable).
    return _OBJ


def kind_name(value: Any) -> str:
    """The expression-language kind of ``value``: Null, Boolean, Number, String, Array or Object."""
    return _KIND_NAMES[_kind(value)]


def _is_array(value: Any) -> bool:
    return _kind(value) == _ARR


def _float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
_OCT_RE = re.compile(r"0o[0-7]+")


def _int32_bits(value: int) -> float:
    # Int32.TryParse(hex) / Convert.ToInt32(s, 8) accept 32 bits and reinterpret them as signed.
    if value > 0xFFFFFFFF:
        return math.nan
    return float(value - 2**32 if value > _INT32_MAX else value)


def _parse_number(text: str) -> float:
    """String to number, as the runner's ``ExpressionUtility.ParseNumber``."""
    s = text.strip()
    if not s:
        return 0.0
    if _DECIMAL_RE.fullmatch(s):
        return float(s)
    if _HEX_RE.fullmatch(s):
        return _int32_bits(int(s[2:], 16))
    if _OCT_RE.fullmatch(s):
        return _int32_bits(int(s[2:], 8))
    lowered = s.lower()
    if lowered in ("infinity", "+infinity"):
        return math.inf
    if lowered == "-infinity":
        return -math.inf
    return math.nan


def _to_number(value: Any) -> float:
    k = _kind(value)
    if k == _NULL:
        return 0.0
    if k == _BOOL:
        return 1.0 if value else 0.0
    if k == _NUM:
        return _float(value)
    if k == _STR:
        return _parse_number(value)
    return math.nan


def _format_number(value: float) -> str:
    """.NET ``ToString("G15", InvariantCulture)``; zero (also ``-0``) prints as ``0``."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    if value == 0:
        return "0"
    # Python's ".15g" switches to scientific notation at the same exponents as .NET's G15
    # (exponent < -4 or >= 15) and also prints at least two exponent digits.
    return format(value, ".15g").replace("e", "E")


def _to_string(value: Any) -> str:
    """String conversion used by ``format``, ``join``, interpolation and string keys."""
    k = _kind(value)
    if k == _STR:
        return str(value)
    if k == _NULL:
        return ""
    if k == _BOOL:
        return "true" if value else "false"
    if k == _NUM:
        return _format_number(_float(value))
    return _KIND_NAMES[k]


def _truthy(value: Any) -> bool:
    k = _kind(value)
    if k == _NULL:
        return False
    if k == _BOOL:
        return bool(value)
    if k == _NUM:
        f = _float(value)
        return not (f == 0 or f != f)
    if k == _STR:
        return len(value) > 0
    return True


def _fold(s: str) -> str:
    """Upper-case for ``OrdinalIgnoreCase``: simple (1:1) mapping, and ``ı`` is left alone."""
    if s.isascii():
        return s.upper()
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 and ch != "ı" else ch)
    return "".join(out)


def _compare_strings(left: str, right: str) -> int:
    """``String.Compare(left, right, OrdinalIgnoreCase)``: upper-case, then compare UTF-16 code units."""
    a, b = _fold(left), _fold(right)
    if any(ord(ch) > 0xFFFF for ch in a + b):
        ea, eb = a.encode("utf-16-be", "surrogatepass"), b.encode("utf-16-be", "surrogatepass")
        return (ea > eb) - (ea < eb)
    return (a > b) - (a < b)


def _coerce(left: Any, right: Any) -> tuple[int, Any, int, Any]:
    """Loose type coercion for ``==``, ``<`` and ``>`` (runner's ``CoerceTypes``)."""
    while True:
        lk, rk = _kind(left), _kind(right)
        if lk == rk:
            return lk, left, rk, right
        if lk == _NUM and rk == _STR:
            return _NUM, left, _NUM, _parse_number(right)
        if lk == _STR and rk == _NUM:
            return _NUM, _parse_number(left), _NUM, right
        if lk in (_BOOL, _NULL):
            left = _to_number(left)
        elif rk in (_BOOL, _NULL):
            right = _to_number(right)
        else:
            return lk, left, rk, right


def _equals(left: Any, right: Any) -> bool:
    lk, lv, rk, rv = _coerce(left, right)
    if lk != rk:
        return False
    if lk == _NULL:
        return True
    if lk == _NUM:
        a, b = _float(lv), _float(rv)
        return a == b  # NaN never equals anything
    if lk == _STR:
        return _fold(lv) == _fold(rv)
    if lk == _BOOL:
        return bool(lv) == bool(rv)
    return lv is rv  # objects and arrays: same instance only


def _greater(left: Any, right: Any) -> bool:
    lk, lv, rk, rv = _coerce(left, right)
    if lk != rk:
        return False
    if lk == _NUM:
        return _float(lv) > _float(rv)  # False when either is NaN
    if lk == _STR:
        return _compare_strings(lv, rv) > 0
    if lk == _BOOL:
        return bool(lv) and not rv
    return False


def _less(left: Any, right: Any) -> bool:
    lk, lv, rk, rv = _coerce(left, right)
    if lk != rk:
        return False
    if lk == _NUM:
        return _float(lv) < _float(rv)
    if lk == _STR:
        return _compare_strings(lv, rv) < 0
    if lk == _BOOL:
        return not lv and bool(rv)
    return False


_MISSING = object()


def _lookup(obj: Mapping[Any, Any], key: str) -> Any:
    """Property lookup: case-insensitive, except for :class:`CaseSensitiveDict`."""
    if key in obj:
        return obj[key]
    if isinstance(obj, CaseSensitiveDict):
        return _MISSING
    folded = _fold(key)
    for k, v in obj.items():
        if _fold(k if isinstance(k, str) else _to_string(k)) == folded:
            return v
    return _MISSING


# --------------------------------------------------------------------------- JSON


def _json_string(s: str) -> str:
    # Newtonsoft's default escaping: control characters, quote and backslash, plus U+0085/2028/2029.
    out = json.dumps(s, ensure_ascii=False)
    if any(ch in out for ch in "\u0085\u2028\u2029"):
        out = out.replace("\u0085", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return out


def _to_json(value: Any) -> str:
    parts: list[str] = []
    active: set[int] = set()

    def write(v: Any, level: int) -> None:
        k = _kind(v)
        if k == _NULL:
            parts.append("null")
        elif k == _BOOL:
            parts.append("true" if v else "false")
        elif k == _NUM:
            parts.append(_format_number(_float(v)))
        elif k == _STR:
            parts.append(_json_string(str(v)))
        elif k == _ARR or isinstance(v, Mapping):
            items = list(v.items()) if isinstance(v, Mapping) else list(v)
            if not items:
                parts.append("{}" if isinstance(v, Mapping) else "[]")
                return
            if id(v) in active:
                raise ValueError("toJSON cannot serialise a value that contains itself")
            active.add(id(v))
            inner = "\n" + "  " * (level + 1)
            parts.append("{" if isinstance(v, Mapping) else "[")
            for i, item in enumerate(items):
                parts.append(inner if i == 0 else "," + inner)
                if isinstance(v, Mapping):
                    key, item = item
                    parts.append(_json_string(key if isinstance(key, str) else _to_string(key)) + ": ")
                write(item, level + 1)
            parts.append("\n" + "  " * level + ("}" if isinstance(v, Mapping) else "]"))
            active.discard(id(v))
        else:
            parts.append("{}")  # an opaque object the runner does not know how to traverse

    write(value, 0)
    return "".join(parts)


def _from_json(text: str) -> Any:
    return json.loads(text, parse_int=float)


# --------------------------------------------------------------------------- lexer

# Token kinds.
_LPAREN, _RPAREN, _LBRACKET, _RBRACKET, _COMMA, _DOT = "(", ")", "[", "]", ",", "."
_BANG, _NE, _EQ, _GT, _GE, _LT, _LE, _AND, _OR = "!", "!=", "==", ">", ">=", "<", "<=", "&&", "||"
_STAR, _NUMBER, _STRING, _IDENT, _TRUE, _FALSE, _NULLTOK, _EOF = (
    "*",
    "number",
    "string",
    "identifier",
    "true",
    "false",
    "null",
    "eof",
)

_BOUNDARY = frozenset("([)],.!><=&|")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    lexeme: str
    index: int  # offset into the expression text
    value: Any = None


def _is_boundary(ch: str) -> bool:
    return ch in _BOUNDARY or ch.isspace()


def _lex(expr: str) -> list[_Token]:
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"Exceeded max expression length {MAX_EXPRESSION_LENGTH}",
            kind="lexing",
            expression=expr[:100] + "...",
            position=None,
        )
    tokens: list[_Token] = []
    n = len(expr)
    i = 0

    def fail(start: int, end: int) -> NoReturn:
        raise ExpressionError(
            f"Unexpected symbol: '{expr[start:end]}'",
            kind="lexing",
            expression=expr,
            position=_position(expr, start),
        )

    def previous() -> str:
        return tokens[-1].kind if tokens else _EOF

    def number(start: int) -> int:
        end = start + 1
        while end < n and (not _is_boundary(expr[end]) or expr[end] == "."):
            end += 1
        value = _parse_number(expr[start:end])
        if value != value:
            fail(start, end)
        tokens.append(_Token(_NUMBER, expr[start:end], start, value))
        return end

    def identifier(start: int) -> int:
        end = start + 1
        while end < n and not _is_boundary(expr[end]):
            end += 1
        lexeme = expr[start:end]
        kind, value = _IDENT, None
        if previous() != _DOT:
            if lexeme in ("true", "false", "null"):
                kind = lexeme
            elif lexeme == "NaN":
                kind, value = _NUMBER, math.nan
            elif lexeme == "Infinity":
                kind, value = _NUMBER, math.inf
        if not _IDENT_RE.fullmatch(lexeme):
            fail(start, end)
        tokens.append(_Token(kind, lexeme, start, value))
        return end

    while i < n:
        c = expr[i]
        start = i
        if c in "()[],*":
            tokens.append(_Token(c, c, start))
            i += 1
        elif c == ".":
            if previous() in (_IDENT, _RBRACKET, _RPAREN, _STAR):
                tokens.append(_Token(_DOT, c, start))
                i += 1
            else:
                i = number(start)
        elif c in "-+" or "0" <= c <= "9":
            i = number(start)
        elif c in "!<>":
            if i + 1 < n and expr[i + 1] == "=":
                tokens.append(_Token(c + "=", c + "=", start))
                i += 2
            else:
                tokens.append(_Token(c, c, start))
                i += 1
        elif c in "=&|":
            if i + 1 < n and expr[i + 1] == c:
                tokens.append(_Token(c + c, c + c, start))
                i += 2
            else:
                i = identifier(start)  # illegal: reads up to a boundary and reports it
        elif c == "'":
            j = i + 1
            while True:
                if j >= n:
                    fail(start, n)  # unterminated string
                if expr[j] == "'":
                    if j + 1 < n and expr[j + 1] == "'":  # escaped quote
                        j += 2
                        continue
                    break
                j += 1
            value = expr[start + 1 : j].replace("''", "'")
            tokens.append(_Token(_STRING, expr[start : j + 1], start, value))
            i = j + 1
        elif c.isspace():
            i += 1
        else:
            i = identifier(start)
    tokens.append(_Token(_EOF, "", n))
    return tokens


# --------------------------------------------------------------------------- AST


@dataclass(slots=True)
class _Literal:
    value: Any


@dataclass(slots=True)
class _Context:
    name: str
    index: int


@dataclass(slots=True)
class _Group:
    inner: _Node


@dataclass(slots=True)
class _Star:
    pass


@dataclass(slots=True)
class _Index:
    target: _Node
    index: _Node | _Star


@dataclass(slots=True)
class _Not:
    operand: _Node


@dataclass(slots=True)
class _Binary:
    op: str
    left: _Node
    right: _Node


@dataclass(slots=True)
class _Logical:
    op: str
    args: list[_Node]


@dataclass(slots=True)
class _Call:
    name: str  # lower-case
    args: list[_Node]
    index: int


_Node = _Literal | _Context | _Group | _Index | _Not | _Binary | _Logical | _Call


# --------------------------------------------------------------------------- functions


@dataclass(frozen=True)
class ExpressionFunctions:
    """Functions the caller provides: the status functions and ``hashFiles``.

    Without an ``ExpressionFunctions`` (``functions=None``) the status functions are unknown
    to the parser, and so is ``hashFiles`` while ``hash_files`` is ``None``: GitHub reports
    ``Unrecognized function`` where a function is not allowed (status functions outside
    ``if:``, ``hashFiles`` outside steps).  :meth:`for_job_status` builds the usual set.
    """

    success: Callable[[], bool]
    failure: Callable[[], bool]
    always: Callable[[], bool]
    cancelled: Callable[[], bool]
    hash_files: Callable[[list[str]], str] | None = None

    @classmethod
    def for_job_status(
        cls,
        status: Literal["success", "failure", "cancelled"],
        hash_files: Callable[[list[str]], str] | None = None,
    ) -> ExpressionFunctions:
        """Status functions for a job whose current status is ``status``."""
        return cls(
            success=lambda: status == "success",
            failure=lambda: status == "failure",
            always=lambda: True,
            cancelled=lambda: status == "cancelled",
            hash_files=hash_files,
        )


# name -> (min args, max args)
_BUILTINS: dict[str, tuple[int, int]] = {
    "case": (3, 2**31),
    "contains": (2, 2),
    "endswith": (2, 2),
    "format": (1, _MAX_FORMAT_ARGS),
    "fromjson": (1, 1),
    "join": (1, 2),
    "startswith": (2, 2),
    "tojson": (1, 1),
}
_STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")


def _available_functions(functions: ExpressionFunctions | None) -> dict[str, tuple[int, int]]:
    available = dict(_BUILTINS)
    if functions is not None:
        available.update(dict.fromkeys(_STATUS_FUNCTIONS, (0, 0)))
        if functions.hash_files is not None:
            available["hashfiles"] = (1, _MAX_FORMAT_ARGS)
    return available


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, expr: str, names: frozenset[str], functions: Mapping[str, tuple[int, int]]) -> None:
        self.expr = expr
        self.tokens = _lex(expr)
        self.names = names
        self.functions = functions
        self.pos = 0
        self.depth = 0

    # -- token helpers

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def previous(self) -> _Token:
        return self.tokens[self.pos - 1]

    def at_end(self) -> bool:
        return self.tokens[self.pos].kind == _EOF

    def check(self, kind: str) -> bool:
        return self.tokens[self.pos].kind == kind

    def match(self, *kinds: str) -> bool:
        if self.tokens[self.pos].kind in kinds and not self.at_end():
            self.pos += 1
            return True
        return False

    def error(self, message: str, token: _Token, *, show_token: bool = True) -> ExpressionError:
        if token.kind == _EOF:
            # Blame the last real token, as the reference implementations do.
            if message == "Unexpected symbol":
                message = "Unexpected end of expression"
            token = self.tokens[-2] if len(self.tokens) > 1 else token
        text = f"{message}: '{token.lexeme}'" if show_token else message
        return ExpressionError(text, kind="parsing", expression=self.expr, position=_position(self.expr, token.index))

    def consume(self, kind: str) -> None:
        if not self.match(kind):
            raise self.error("Unexpected symbol", self.peek())

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"Exceeded max expression depth {MAX_DEPTH}", self.peek(), show_token=False)

    # -- grammar (depth accounting mirrors the reference parser so limits match exactly)

    def parse(self) -> _Node | None:
        if self.at_end():
            return None
        node = self.expression()
        if not self.at_end():
            raise self.error("Unexpected symbol", self.peek())
        return node

    def expression(self) -> _Node:
        self.enter()
        node = self.logical(_OR)
        self.depth -= 1
        return node

    def logical(self, op: str) -> _Node:
        operand = self.logical_and if op == _OR else self.equality
        node = operand()
        if self.check(op):
            self.enter()
            args = [node]
            while self.match(op):
                args.append(operand())
            self.depth -= 1
            node = _Logical(op, args)
        return node

    def logical_and(self) -> _Node:
        return self.logical(_AND)

    def equality(self) -> _Node:
        node = self.comparison()
        while self.match(_EQ, _NE):
            op = self.previous().kind
            node = _Binary(op, node, self.comparison())
        return node

    def comparison(self) -> _Node:
        node = self.unary()
        while self.match(_GT, _GE, _LT, _LE):
            op = self.previous().kind
            node = _Binary(op, node, self.unary())
        return node

    def unary(self) -> _Node:
        if self.match(_BANG):
            self.enter()
            node = _Not(self.unary())
            self.depth -= 1
            return node
        return self.postfix()

    def postfix(self) -> _Node:
        node = self.call()
        if not isinstance(node, (_Group, _Call, _Context)):
            return node
        entered = 0
        while True:
            if self.match(_LBRACKET):
                index: _Node | _Star = _Star() if self.match(_STAR) else self.expression()
                self.consume(_RBRACKET)
                self.enter()
                entered += 1
                node = _Index(node, index)
            elif self.match(_DOT):
                self.enter()
                entered += 1
                if self.match(_IDENT):
                    node = _Index(node, _Literal(self.previous().lexeme))
                elif self.match(_STAR):
                    node = _Index(node, _Star())
                else:
                    raise self.error("Unexpected symbol", self.peek())
            else:
                break
        self.depth -= entered
        return node

    def call(self) -> _Node:
        if not self.check(_IDENT):
            return self.primary()
        ident = self.peek()
        self.pos += 1
        if not self.match(_LPAREN):
            if _fold(ident.lexeme) not in self.names:
                raise self.error("Unrecognized named-value", ident)
            return _Context(ident.lexeme, ident.index)
        args: list[_Node] = []
        if not self.match(_RPAREN):
            while True:
                args.append(self.expression())
                if self.match(_RPAREN):
                    break
                self.consume(_COMMA)
        name = ident.lexeme.lower()
        arity = self.functions.get(name)
        if arity is None:
            raise self.error("Unrecognized function", ident)
        if len(args) < arity[0]:
            raise self.error("Too few parameters supplied", ident)
        if len(args) > arity[1]:
            raise self.error("Too many parameters supplied", ident)
        if name == "case" and len(args) % 2 == 0:
            raise self.error("Even number of parameters supplied, requires an odd number of parameters", ident)
        return _Call(name, args, ident.index)

    def primary(self) -> _Node:
        if self.match(_FALSE):
            return _Literal(False)
        if self.match(_TRUE):
            return _Literal(True)
        if self.match(_NULLTOK):
            return _Literal(None)
        if self.match(_NUMBER, _STRING):
            return _Literal(self.previous().value)
        if self.match(_LPAREN):
            node = self.expression()
            if self.at_end():
                raise self.error("Unexpected end of expression", self.previous())
            self.consume(_RPAREN)
            return _Group(node)
        if self.at_end():
            raise self.error("Unexpected end of expression", self.previous())
        raise self.error("Unexpected symbol", self.peek())


def _parse(expr: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None) -> _Node | None:
    names = frozenset(_fold(name) for name in contexts)
    return _Parser(expr, names, _available_functions(functions)).parse()


# --------------------------------------------------------------------------- evaluator


class _Evaluator:
    def __init__(self, expr: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None) -> None:
        self.expr = expr
        self.contexts = contexts
        self.functions = functions

    def fail(self, message: str, node: _Call) -> NoReturn:
        raise ExpressionError(
            message, kind="evaluation", expression=self.expr, position=_position(self.expr, node.index)
        )

    def eval(self, node: _Node) -> Any:
        match node:
            case _Literal(value=value):
                return value
            case _Context(name=name):
                value = _lookup(self.contexts, name)
                return None if value is _MISSING else value
            case _Group(inner=inner):
                return self.eval(inner)
            case _Index():
                return self.index(node)
            case _Not(operand=operand):
                return not _truthy(self.eval(operand))
            case _Logical(op=op, args=args):
                # && returns the first falsy value, || the first truthy one; else the last value.
                stop_when = op == _OR
                result = None
                for arg in args:
                    result = self.eval(arg)
                    if _truthy(result) == stop_when:
                        break
                return result
            case _Binary(op=op, left=left_node, right=right_node):
                left, right = self.eval(left_node), self.eval(right_node)
                if op == _EQ:
                    return _equals(left, right)
                if op == _NE:
                    return not _equals(left, right)
                if op == _GT:
                    return _greater(left, right)
                if op == _GE:
                    return _equals(left, right) or _greater(left, right)
                if op == _LT:
                    return _less(left, right)
                return _equals(left, right) or _less(left, right)
            case _Call():
                return self.call(node)
        raise AssertionError(f"unknown node {node!r}")  # pragma: no cover

    # -- property / index access

    def index(self, node: _Index) -> Any:
        target = self.eval(node.target)
        star = isinstance(node.index, _Star)
        is_mapping = isinstance(target, Mapping)
        if not is_mapping and not _is_array(target):
            return _FilteredArray() if star else None  # the index is not evaluated at all

        key: str | None = None
        position: int | None = None
        if not star:
            raw = self.eval(node.index)  # type: ignore[arg-type]
            if _kind(raw) <= _STR:
                key = _to_string(raw)
            number = _to_number(raw)
            if 0 <= number < _INT32_MAX + 1:  # NaN, negative and out-of-range indexes miss
                position = math.floor(number)

        if isinstance(target, _FilteredArray):
            result = _FilteredArray()
            for item in target:
                if isinstance(item, Mapping):
                    if star:
                        result.extend(item.values())
                    elif key is not None:
                        value = _lookup(item, key)
                        if value is not _MISSING:
                            result.append(value)
                elif _is_array(item):
                    if star:
                        result.extend(item)
                    elif position is not None and position < len(item):
                        result.append(item[position])
            return result
        if is_mapping:
            if star:
                return _FilteredArray(target.values())
            if key is not None:
                value = _lookup(target, key)
                if value is not _MISSING:
                    return value
            return None
        if star:
            return _FilteredArray(target)
        if position is not None and position < len(target):
            return target[position]
        return None

    # -- function calls

    def call(self, node: _Call) -> Any:
        name = node.name
        if name == "format":
            return self.format(node)
        if name == "case":
            args = node.args
            for i in range(0, len(args) - 1, 2):
                predicate = self.eval(args[i])
                if _kind(predicate) != _BOOL:
                    self.fail("case predicate must evaluate to a boolean value", node)
                if predicate:
                    return self.eval(args[i + 1])
            return self.eval(args[-1])

        values = [self.eval(arg) for arg in node.args]
        if name == "contains":
            search, item = values
            if _kind(search) <= _STR:
                if _kind(item) <= _STR:
                    return _fold(_to_string(item)) in _fold(_to_string(search))
                return False
            if _is_array(search):
                return any(_equals(item, element) for element in search)
            return False
        if name in ("startswith", "endswith"):
            left, right = values
            if _kind(left) > _STR or _kind(right) > _STR:
                return False
            subject, affix = _fold(_to_string(left)), _fold(_to_string(right))
            return subject.startswith(affix) if name == "startswith" else subject.endswith(affix)
        if name == "join":
            subject = values[0]
            if _kind(subject) <= _STR:
                return _to_string(subject)
            if _is_array(subject):
                separator = ","
                if len(values) > 1 and _kind(values[1]) <= _STR:
                    separator = _to_string(values[1])
                return separator.join(_to_string(item) for item in subject)
            return ""
        if name == "tojson":
            try:
                return _to_json(values[0])
            except ValueError as exc:
                self.fail(str(exc), node)
            except RecursionError:
                self.fail("toJSON: the value is nested too deeply", node)
        if name == "fromjson":
            text = _to_string(values[0])
            if not text.strip():
                self.fail("Error parsing fromJson: empty input", node)
            try:
                return _from_json(text)
            except (ValueError, RecursionError) as exc:
                self.fail(f"Error parsing fromJson: {exc}", node)
        # The parser only accepts the remaining functions when the caller provided them.
        assert self.functions is not None
        if name == "hashfiles":
            return self.hash_files(node, [_to_string(v) for v in values])
        status: Callable[[], bool] = getattr(self.functions, name)
        return bool(status())

    def hash_files(self, node: _Call, patterns: list[str]) -> str:
        assert self.functions is not None and self.functions.hash_files is not None
        hash_files = self.functions.hash_files
        try:
            return hash_files(patterns)
        except ExpressionError:
            raise
        except Exception as exc:
            message = f"hashFiles({', '.join(patterns)}) failed: {exc}"
            raise ExpressionError(
                message, kind="evaluation", expression=self.expr, position=_position(self.expr, node.index)
            ) from exc

    def format(self, node: _Call) -> str:
        fmt = _to_string(self.eval(node.args[0]))
        arg_count = len(node.args) - 1
        # Parse the whole format string first (errors are raised before any argument is evaluated),
        # then evaluate each referenced argument once, in order of first use.
        segments: list[str | tuple[int, str]] = []
        invalid = f"The following format string is invalid: {fmt}"
        i, n = 0, len(fmt)
        while i < n:
            lbrace, rbrace = fmt.find("{", i), fmt.find("}", i)
            if lbrace >= 0 and (rbrace < 0 or rbrace > lbrace):
                if lbrace + 1 < n and fmt[lbrace + 1] == "{":  # escaped {
                    segments.append(fmt[i : lbrace + 1])
                    i = lbrace + 2
                    continue
                parsed = _read_placeholder(fmt, lbrace + 1) if rbrace > lbrace + 1 else None
                if parsed is None:
                    self.fail(invalid, node)
                arg_index, specifiers, rbrace = parsed
                if arg_index >= arg_count:
                    self.fail(
                        f"The following format string references more arguments than were supplied: {fmt}",
                        node,
                    )
                if lbrace > i:
                    segments.append(fmt[i:lbrace])
                segments.append((arg_index, specifiers))
                i = rbrace + 1
            elif rbrace >= 0:
                if rbrace + 1 < n and fmt[rbrace + 1] == "}":  # escaped }
                    segments.append(fmt[i : rbrace + 1])
                    i = rbrace + 2
                else:
                    self.fail(invalid, node)
            else:
                segments.append(fmt[i:])
                break

        cache: dict[int, Any] = {}
        out: list[str] = []
        for segment in segments:
            if isinstance(segment, str):
                out.append(segment)
                continue
            arg_index, specifiers = segment
            if arg_index not in cache:
                cache[arg_index] = self.eval(node.args[arg_index + 1])
            value = cache[arg_index]
            if specifiers:
                self.fail(
                    f"The format specifiers '{specifiers}' are not valid for objects of type '{kind_name(value)}'",
                    node,
                )
            out.append(_to_string(value))
        return "".join(out)


def _read_placeholder(fmt: str, start: int) -> tuple[int, str, int] | None:
    """Read ``N}`` or ``N:spec}`` at ``start``; returns (N, spec, index of the closing brace)."""
    end = start
    while end < len(fmt) and "0" <= fmt[end] <= "9":
        end += 1
    if end == start:
        return None
    arg_index = int(fmt[start:end])
    if arg_index > 255:  # Byte.TryParse
        return None
    if end < len(fmt) and fmt[end] == "}":
        return arg_index, "", end
    if end >= len(fmt) or fmt[end] != ":":
        return None
    spec: list[str] = []
    j = end + 1
    while j < len(fmt):
        if fmt[j] != "}":
            spec.append(fmt[j])
            j += 1
        elif j + 1 < len(fmt) and fmt[j + 1] == "}":
            spec.append("}")
            j += 2
        else:
            return arg_index, "".join(spec), j
    return None


# --------------------------------------------------------------------------- templates


def _split_template(template: str) -> list[tuple[bool, str]]:
    """Split ``text ${{ expr }} text`` into ``(is_expression, text)`` segments."""
    segments: list[tuple[bool, str]] = []
    i, n = 0, len(template)
    while i < n:
        start = template.find("${{", i)
        if start < 0:
            segments.append((False, template[i:]))
            break
        if start > i:
            segments.append((False, template[i:start]))
        # Find the closing }} outside of string literals.
        in_string = False
        end = -1
        j = start + 3
        while j < n:
            ch = template[j]
            if ch == "'":
                in_string = not in_string  # also copes with '' escapes
            elif not in_string and ch == "}" and template[j - 1] == "}":
                end = j
                break
            j += 1
        if end < 0:
            raise ExpressionError(
                "The expression is not closed. An unescaped ${{ sequence was found, "
                "but the closing }} sequence was not found",
                kind="parsing",
                expression=template,
                position=_position(template, start),
            )
        raw = template[start + 3 : end - 1]
        if not raw.strip():
            raise ExpressionError(
                "An expression was expected",
                kind="parsing",
                expression=template,
                position=_position(template, start),
            )
        segments.append((True, raw.strip()))
        i = end + 1
    return segments


def _template_expression(
    template: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None
) -> str | None:
    """The expression a template stands for, or ``None`` if it holds no ``${{ }}`` at all.

    A template that is exactly one ``${{ expr }}`` stands for ``expr``; text mixed with
    expressions becomes ``format('text {0} text', expr)``, as GitHub's template reader does.
    """
    if "${{" not in template:
        return None
    segments = _split_template(template)
    for is_expression, text in segments:
        if is_expression:
            _parse(text, contexts, functions)  # report syntax errors against the segment itself
    if len(segments) == 1 and segments[0][0]:
        return segments[0][1]
    fmt: list[str] = []
    args: list[str] = []
    for is_expression, text in segments:
        if is_expression:
            fmt.append("{" + str(len(args)) + "}")
            args.append(text)
        else:
            fmt.append(text.replace("'", "''").replace("{", "{{").replace("}", "}}"))
    return "format('" + "".join(fmt) + "'" + "".join(", " + arg for arg in args) + ")"


# --------------------------------------------------------------------------- public API


def _run(expr: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None) -> Any:
    tree = _parse(expr, contexts, functions)
    if tree is None:
        return None
    result = _Evaluator(expr, contexts, functions).eval(tree)
    return list(result) if isinstance(result, _FilteredArray) else result


def evaluate(expr: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None = None) -> Any:
    """Evaluate one expression (the text inside ``${{ }}``, without the wrapper).

    ``contexts`` maps context names (``github``, ``env``, ``steps``, ...) to plain data; only these
    names are known to the parser (matched case-insensitively).  ``functions`` supplies the
    status functions and ``hashFiles``; without it only the built-in functions exist.
    An empty expression evaluates to ``None``.  Raises :class:`ExpressionError`.
    """
    return _run(expr, contexts, functions)


def evaluate_template(template: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None = None) -> Any:
    """Evaluate a workflow field value that may contain ``${{ }}``.

    A value that is exactly one ``${{ expr }}`` keeps the expression's type (for example
    ``continue-on-error: ${{ matrix.experimental }}`` gives a ``bool``); text mixed with
    expressions gives a string; a value without ``${{`` is returned unchanged.
    """
    expr = _template_expression(template, contexts, functions)
    if expr is None:
        return template
    return _run(expr, contexts, functions)


def interpolate(template: str, contexts: Mapping[str, Any], functions: ExpressionFunctions | None = None) -> str:
    """Replace every ``${{ expr }}`` in ``template`` with its value converted to a string.

    Conversion is GitHub's: ``null`` gives ``''``, booleans ``true``/``false``, numbers ``G15``
    (``1``, ``0.5``, ``1E+20``), arrays ``Array`` and objects ``Object``.
    """
    return _to_string(evaluate_template(template, contexts, functions))


def _contains_status_call(node: _Node | _Star) -> bool:
    if isinstance(node, _Call):
        return node.name in _STATUS_FUNCTIONS or any(_contains_status_call(a) for a in node.args)
    if isinstance(node, _Logical):
        return any(_contains_status_call(a) for a in node.args)
    if isinstance(node, _Binary):
        return _contains_status_call(node.left) or _contains_status_call(node.right)
    if isinstance(node, _Not):
        return _contains_status_call(node.operand)
    if isinstance(node, _Group):
        return _contains_status_call(node.inner)
    if isinstance(node, _Index):
        return _contains_status_call(node.target) or _contains_status_call(node.index)
    return False


def evaluate_if(
    condition: str | bool | None,
    contexts: Mapping[str, Any],
    functions: ExpressionFunctions | None = None,
) -> bool:
    """Evaluate a step or job ``if:`` condition.

    The value may be a bare expression or wrapped in ``${{ }}``; a blank value means
    ``success()``; a YAML boolean is read as ``true``/``false``.  Unless the condition calls
    ``success``, ``failure``, ``cancelled`` or ``always`` somewhere, it becomes
    ``success() && (<condition>)``.  Text mixed with ``${{ }}`` (``${{ a }} == 'x'``) is a
    ``format()`` string and therefore true whenever the job is successful, exactly as on GitHub.
    ``functions`` defaults to a successful job (:meth:`ExpressionFunctions.for_job_status`).
    """
    if functions is None:
        functions = ExpressionFunctions.for_job_status("success")
    if condition is None:
        condition = ""
    elif isinstance(condition, bool):
        condition = "true" if condition else "false"
    expr = _template_expression(condition, contexts, functions)
    if expr is None:
        expr = condition.strip()
    if not expr:
        expr = "success()"
    tree = _parse(expr, contexts, functions)
    if tree is None or not _contains_status_call(tree):
        expr = f"success() && ({expr})"
    return _truthy(_run(expr, contexts, functions))
