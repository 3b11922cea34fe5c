"""Computed fields of a mapping: arithmetic over source columns, nothing else.

``col("WBC") * col("Neutrophils %") / 100``: numbers, ``col("<header>")``, + - * / and
parentheses. Parsed with ``ast`` and evaluated by walking the tree (never ``eval``); a missing
operand or a division by zero gives a missing value.
"""
from __future__ import annotations

import ast
import operator

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def parse_expression(text: str) -> tuple[ast.expr, list[str]]:
    """(tree, source columns used); ValueError naming what is not allowed."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot read the expression {text!r}: {e.msg}") from None
    cols: list[str] = []

    def check(n):
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            check(n.left)
            check(n.right)
        elif isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            check(n.operand)
        elif isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
            pass
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "col"
              and len(n.args) == 1 and not n.keywords and isinstance(n.args[0], ast.Constant)
              and isinstance(n.args[0].value, str)):
            if n.args[0].value not in cols:
                cols.append(n.args[0].value)
        else:
            raise ValueError(f"only numbers, col(\"column\"), + - * / and parentheses are allowed; "
                             f"not {ast.unparse(n)!r}")

    check(tree)
    if not cols:
        raise ValueError("the expression uses no column (write col(\"header\"))")
    return tree, cols


def evaluate(tree: ast.expr, values: dict[str, float | None]) -> float | None:
    """Value of a parsed expression; None when an operand is missing or a divisor is 0."""
    if isinstance(tree, ast.Constant):
        return float(tree.value)
    if isinstance(tree, ast.Call):
        return values.get(tree.args[0].value)
    if isinstance(tree, ast.UnaryOp):
        v = evaluate(tree.operand, values)
        return None if v is None else (-v if isinstance(tree.op, ast.USub) else v)
    a, b = evaluate(tree.left, values), evaluate(tree.right, values)
    if a is None or b is None or (isinstance(tree.op, ast.Div) and b == 0):
        return None
    return _OPS[type(tree.op)](a, b)
