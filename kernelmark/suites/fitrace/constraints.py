"""A restricted evaluator for FlashInfer-Trace ``constraints``: the expressions are parsed
with ``ast`` and walked by our own code, never handed to ``eval``. Only arithmetic,
comparisons and boolean logic over the definition's axis names are allowed; anything else
(a call, an attribute, a subscript, an input's name) makes the constraint "not checked".
"""

from __future__ import annotations

import ast
import operator
from typing import Optional

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
# A huge power would hang the run: axes are sizes, so exponents are small.
MAX_EXPONENT = 64


class NotAxesOnly(ValueError):
    """The expression uses something beyond axes, numbers, arithmetic and comparisons."""


def _eval(node, axes: dict):
    if isinstance(node, ast.Expression):
        return _eval(node.body, axes)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in axes:
            raise NotAxesOnly(f"uses {node.id!r}, which is not an axis")
        return axes[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left, axes), _eval(node.right, axes)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise NotAxesOnly(f"exponent {right} is too large")
        return _BIN[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, axes))
    if isinstance(node, ast.BoolOp):
        vals = [_eval(v, axes) for v in node.values]
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
        left = _eval(node.left, axes)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, axes)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise NotAxesOnly(f"uses {type(node).__name__}, which the axes-only evaluator does not allow")


def evaluate(expr: str, axes: dict) -> Optional[bool]:
    """True/False for a constraint over axes alone; raises NotAxesOnly for any other.
    A constraint that divides by zero is False (the axes cannot satisfy it)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise NotAxesOnly(f"is not a Python expression ({e.msg})") from None
    try:
        return bool(_eval(tree, axes))
    except ZeroDivisionError:
        return False


def value(expr: str, axes: dict):
    """The number an axes-only expression gives (a shape entry such as ``hidden_size // 2``);
    raises NotAxesOnly for any other."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise NotAxesOnly(f"is not a Python expression ({e.msg})") from None
    return _eval(tree, axes)


def check_all(constraints: list, axes: dict) -> tuple:
    """(failed, not_checked): the constraints the axes break, and those not axes-only."""
    failed, not_checked = [], []
    for c in constraints:
        try:
            if not evaluate(c, axes):
                failed.append(c)
        except NotAxesOnly as e:
            not_checked.append(f"{c} ({e})")
    return failed, not_checked
