import numpy as np
import pyarrow as pa
import pytest

from weaksam.geometry.boxes import as_boxes
from weaksam.io import rle, schemas
from weaksam.io.classes import VOC_CLASSES, ClassMap, read_class_file
from weaksam.io.tables import read_classes, read_table, table_name, write_table


def test_every_table_has_key_and_error() -> None:
    for name, schema in schemas.TABLES.items():
        assert schema.names[:4] == ["image_id", "image_index", "height", "width"], name
        assert "error" in schema.names
    with pytest.raises(ValueError, match="known"):
        schemas.get_schema("nope")


def test_manifest_round_trip(tmp_path) -> None:
    classes = ClassMap.from_names(["star", "ring"], [7, 9])
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    rows = [
        schemas.empty_row(
            "manifest",
            "a",
            1,
            height=4,
            width=6,
            path="/x/a.png",
            split="train",
            labels=[0, 1],
            gt_boxes=[2, 1, 5, 3, 0, 0, 1, 1],
            gt_classes=[0, 1],
            gt_difficult=[False, True],
            gt_masks=rle.encode_masks(np.stack([mask, mask])),
        ),
        schemas.error_row(
            "manifest", "b", 2, "truncated image file", path="/x/b.png", split="train"
        ),
    ]
    path = str(tmp_path / "m" / "manifest.parquet")
    write_table(rows, path, "manifest", classes)
    tbl = read_table(path, "manifest")
    assert table_name(tbl) == "manifest"
    assert read_classes(tbl) == classes
    assert read_classes(path) == classes
    got = tbl.to_pylist()
    assert got[0]["error"] is None and got[1]["error"] == "truncated image file"
    assert got[1]["labels"] == [] and got[1]["gt_masks"] is None
    np.testing.assert_array_equal(as_boxes(got[0]["gt_boxes"]), [[2, 1, 5, 3], [0, 0, 1, 1]])
    np.testing.assert_array_equal(rle.decode_masks(got[0]["gt_masks"], 4, 6)[1], mask)
    # folder of shards reads the same, markers ignored
    shard_dir = tmp_path / "shards"
    write_table(rows[:1], str(shard_dir / "part-0.parquet"), "manifest", classes)
    write_table(rows[1:], str(shard_dir / "part-1.parquet"), "manifest", classes)
    (shard_dir / "_SUCCESS").write_text("{}")
    both = read_table(str(shard_dir), "manifest")
    assert sorted(both.column("image_id").to_pylist()) == ["a", "b"]
    assert read_classes(str(shard_dir)) == classes


def test_rows_reject_unknown_columns_and_wrong_types(tmp_path) -> None:
    with pytest.raises(ValueError, match="not in table"):
        schemas.empty_row("proposals", "a", 0, bogus=1)
    with pytest.raises(ValueError, match="not in table"):
        schemas.rows_to_table([{"image_id": "a", "image_index": 0, "zzz": 1}], "pgt")
    bad = pa.table({"image_id": ["a"], "image_index": [0]})
    with pytest.raises(ValueError, match="missing columns"):
        schemas.validate_table(bad, "detections")
    with pytest.raises(FileNotFoundError):
        read_table(str(tmp_path / "absent.parquet"))


def test_validate_casts_compatible_types() -> None:
    row = schemas.empty_row(
        "detections", "a", 0, height=2, width=2, boxes=[0, 0, 1, 1], scores=[0.5], classes=[0]
    )
    tbl = schemas.rows_to_table([row], "detections")
    # widen a column to float64 and back: validate casts to the contract type
    idx = tbl.schema.get_field_index("boxes")
    widened = tbl.set_column(idx, "boxes", tbl.column("boxes").cast(pa.list_(pa.float64())))
    out = schemas.validate_table(widened, "detections")
    assert out.schema.field("boxes").type == pa.list_(pa.float32())


def test_class_map(tmp_path) -> None:
    cm = ClassMap.from_coco_categories([{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}])
    assert cm.names == ("person", "dog") and cm.source_ids == (1, 18)
    assert cm.from_source_id(18) == 1 and cm.index("dog") == 1
    assert ClassMap.from_json(cm.to_json()) == cm
    assert cm.coco_categories()[1] == {"id": 18, "name": "dog", "supercategory": "object"}
    with pytest.raises(KeyError, match="known"):
        cm.index("cat")
    with pytest.raises(ValueError, match="duplicate"):
        ClassMap.from_names(["a", "a"])
    assert len(VOC_CLASSES) == 20
    f = tmp_path / "classes.txt"
    f.write_text("# comment\nstar\n\nring\n")
    assert read_class_file(str(f)).names == ("star", "ring")
    with pytest.raises(ValueError, match="no class map"):
        ClassMap.from_metadata({})
