"""Readable monospace text tables for printing results anywhere in the project.

Numbers are right-aligned, text left-aligned; floats print with ``decimals`` places (4 by
default), NaN and ``None`` as ``-``. No dependencies beyond the standard library and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def format_value(value: object, decimals: int = 4) -> str:
    """One cell: floats to ``decimals`` places, NaN/None as ``-``, ints and text as is."""
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        return "-" if math.isnan(v) else f"{v:.{decimals}f}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def format_table(
    rows: Sequence[Sequence[object]],
    headers: Sequence[str],
    title: str | None = None,
    decimals: int = 4,
) -> str:
    """An aligned table with a header rule, e.g.::

        title
        class    AP50
        -----  ------
        cat    0.5000
        dog         -

    Args:
        rows: cells per row; each row as long as ``headers``.
        headers: column titles.
        title: optional first line.
        decimals: places for float cells.

    Raises ``ValueError`` when a row's length differs from the headers'.
    """
    cells = [[format_value(v, decimals) for v in row] for row in rows]
    for r, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {r} has {len(row)} cells, expected {len(headers)}")
    numeric = [
        bool(rows) and all(_is_number(row[c]) or row[c] is None for row in rows)
        for c in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[c]) for row in cells)]) for c, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def metrics_table(
    metrics: Mapping[str, object], title: str | None = None, decimals: int = 4
) -> str:
    """A two-column ``metric | value`` table of ``metrics`` in insertion order."""
    return format_table([[k, v] for k, v in metrics.items()], ["metric", "value"], title, decimals)
