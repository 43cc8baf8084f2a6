"""Safe ``where`` constraints for study files: ``gpus % (tp*pp) == 0``, ``batch <= 64 and dataflow != "os"``.

The text is parsed with ``ast.parse(text, mode="eval")`` and only a small tree is allowed: names (a point's
inputs), number / string / boolean / null constants, ``+ - * / // % **``, unary ``- + not``, comparisons
(``== != < <= > >=``, ``in`` / ``not in`` a parenthesized tuple of constants), ``and`` / ``or`` and parentheses.
Anything else — an attribute, a call, a subscript, a lambda, a comprehension, ``__import__`` — is refused with a
`UserError` when the study is read, before any point runs. Nothing is ever passed to ``eval``: the tree is walked
here. Arithmetic takes numbers only (no ``"a" * 10**9``) and exponents are bounded.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xpusim.errors import UserError

MAX_EXPONENT = 64
"""``a ** b`` with ``|b|`` larger than this is refused (a constraint never needs it; ``10**10**10`` would hang)."""
MAX_LENGTH = 1000
"""Longest constraint text accepted."""

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
"""Names that are constants, as YAML writes them (and as Python does)."""
ALLOWED = ("names, numbers, strings, true/false/null, + - * / // % **, == != < <= > >=, in / not in (a, b, ...), "
           "and, or, not, parentheses")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)  # bool is an int: True + 1 is allowed, as in Python


@dataclass(frozen=True)
class Where:
    """One parsed constraint; call `holds` with a point's inputs."""

    text: str
    tree: ast.Expression
    names: frozenset[str]

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the point ``values`` satisfies the constraint (any non-false result counts as true)."""
        try:
            return bool(_eval(self.tree.body, values, self.text))
        except UserError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:  # 1/0, "a" < 1, ...
            shown = {n: values[n] for n in sorted(self.names)}
            raise UserError(f"where {self.text!r} fails at {shown}: {type(exc).__name__}: {exc}") from None


def parse_where(text: str, names: Mapping[str, Any] | set[str] | frozenset[str]) -> Where:
    """Parse and check ``text``; every name must be one of ``names`` (a point's inputs)."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"where {text!r}: expected an expression such as \"gpus % (tp*pp) == 0\"")
    if len(text) > MAX_LENGTH:
        raise UserError(f"where: the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UserError(f"where {text!r}: not an expression ({exc.msg}); allowed: {ALLOWED}") from None
    used: set[str] = set()
    for node in ast.walk(tree):
        _check(node, text)
        if isinstance(node, ast.Name) and node.id not in CONSTANTS:
            used.add(node.id)
    unknown = sorted(used - set(names))
    if unknown:
        raise UserError(f"where {text!r}: unknown name{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                        f"a constraint may use the study's keys: {', '.join(sorted(names))}")
    return Where(text=text, tree=tree, names=frozenset(used))


_NODES = (ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Constant, ast.Load,
          ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Tuple, *_BINARY, *_COMPARE)


def _check(node: ast.AST, text: str) -> None:
    if not isinstance(node, _NODES):
        what = type(node).__name__.lower()
        raise UserError(f"where {text!r}: {what} is not allowed in a constraint; allowed: {ALLOWED}")
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        raise UserError(f"where {text!r}: name {node.id!r} is not allowed")
    if isinstance(node, ast.Constant) and not (node.value is None or isinstance(node.value, int | float | str)):
        raise UserError(f"where {text!r}: constant {node.value!r} is not allowed; allowed: {ALLOWED}")
    if isinstance(node, ast.Tuple) and not all(isinstance(e, ast.Constant) for e in node.elts):
        raise UserError(f"where {text!r}: a tuple may hold constants only, as in dataflow in (\"os\", \"ws\")")


def _eval(node: ast.expr, values: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id] if node.id in CONSTANTS else values[node.id]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, values, text) for e in node.elts)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for v in node.values:
                result = _eval(v, values, text)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = _eval(v, values, text)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, values, text)
        if isinstance(node.op, ast.Not):
            return not operand
        if not _is_number(operand):
            raise TypeError(f"unary {'-' if isinstance(node.op, ast.USub) else '+'} needs a number, not "
                            f"{operand!r}")
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, values, text), _eval(node.right, values, text)
        if not (_is_number(left) and _is_number(right)):
            raise TypeError(f"arithmetic needs numbers, not {left!r} and {right!r}")
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 2 ** 64):
            raise UserError(f"where {text!r}: {left!r} ** {right!r} is too large (exponent at most {MAX_EXPONENT})")
        out = _BINARY[type(node.op)](left, right)
        if isinstance(out, complex) or (isinstance(out, float) and math.isnan(out)):
            raise ValueError(f"{left!r} ** {right!r} is not a real number")
        return out
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values, text)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, values, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise UserError(f"where {text!r}: {type(node).__name__} is not allowed")  # unreachable after _check
