"""The one-row-per-input rule checked before a stage's marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaksam.io.classes import ClassMap
from weaksam.io.coverage import CoverageError, check_coverage, check_table_covers
from weaksam.io.tables import write_table


def test_exactly_once_passes_and_counts_rows() -> None:
    assert check_coverage(["a", "b"], ["b", "a"], "t") == 2
    assert check_coverage([], [], "t") == 0


@pytest.mark.parametrize(
    ("got", "needle"),
    [
        (["a"], "1 images missing (e.g. ['b'])"),
        (["a", "b", "b"], "1 written more than once (e.g. ['b'])"),
        (["a", "b", "c"], "1 not in the input (e.g. ['c'])"),
    ],
)
def test_missing_twice_or_unknown_rows_fail_in_one_line(got: list[str], needle: str) -> None:
    with pytest.raises(CoverageError) as exc:
        check_coverage(["a", "b"], got, "proposals table x")
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("proposals table x does not cover")


def test_table_against_the_manifest_splits(tmp_path: Path) -> None:
    classes = ClassMap.from_names(["cat"])
    manifest = str(tmp_path / "manifest.parquet")
    write_table(
        [
            {"image_id": i, "image_index": k, "split": s, "path": f"{i}.png", "error": ""}
            for k, (i, s) in enumerate([("a", "train"), ("b", "train"), ("c", "test")])
        ],
        manifest,
        "manifest",
        classes,
    )
    props = str(tmp_path / "points.parquet")
    write_table(
        [{"image_id": "a", "image_index": 0, "error": ""}],
        props,
        "points",
        classes,
    )
    with pytest.raises(CoverageError, match="1 images missing"):
        check_table_covers(manifest, props, "points", ("train",))
    with pytest.raises(CoverageError, match="2 images missing"):
        check_table_covers(manifest, props, "points")
    write_table(
        [{"image_id": i, "image_index": k, "error": ""} for k, i in enumerate("ab")],
        props,
        "points",
        classes,
    )
    assert check_table_covers(manifest, props, "points", ("train",)) == 2
