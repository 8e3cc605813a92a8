"""The rule every stage applies before its ``_SUCCESS`` marker: its output table has exactly
one row (an error row counts) for every input image, and no other row.

A distributed write can lose rows silently (shards on a node-local disk the driver cannot see,
a retried task writing a block twice); this check turns either into a clear failure instead
of a smaller dataset downstream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from weaksam.io.tables import read_table


class CoverageError(RuntimeError):
    """An output table does not have exactly one row per input image; one-line message."""


def check_coverage(want: Iterable[str], got: Sequence[str], what: str) -> int:
    """Raise :class:`CoverageError` unless ``got`` (output image ids) holds every id of
    ``want`` exactly once and nothing else; return the number of rows. ``what`` names the
    output in the message (e.g. ``"proposals table runs/x/proposals/shards"``)."""
    wanted = {str(i) for i in want}
    counts = Counter(str(i) for i in got)
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(wanted - counts.keys())
    extra = sorted(counts.keys() - wanted)
    if twice or missing or extra:
        raise CoverageError(
            f"{what} does not cover its input exactly once: {len(missing)} images missing "
            f"(e.g. {missing[:3]}), {len(twice)} written more than once (e.g. {twice[:3]}), "
            f"{len(extra)} not in the input (e.g. {extra[:3]})"
        )
    return len(got)


def manifest_ids(manifest: str, splits: Sequence[str] = ()) -> list[str]:
    """Image ids of the ``manifest`` table at ``manifest`` in ``splits`` (all when empty)."""
    rows = read_table(manifest, columns=["image_id", "split"]).to_pylist()
    return [str(r["image_id"]) for r in rows if not splits or r["split"] in splits]


def check_table_covers(manifest: str, table: str, what: str, splits: Sequence[str] = ()) -> int:
    """:func:`check_coverage` of the table at ``table`` (a file or a folder of shards)
    against the ``manifest`` images of ``splits``; return its number of rows."""
    got = read_table(table, columns=["image_id"]).column("image_id").to_pylist()
    return check_coverage(manifest_ids(manifest, splits), got, f"{what} {table}")
