"""weaksam.storage on a local folder and on a moto S3 bucket: the same calls, the same results."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from weaksam import storage


@pytest.fixture
def root(storage_root: str) -> str:
    return storage_root


def test_join_parent_basename() -> None:
    assert storage.join("s3://b/runs", "tiny", "ingest") == "s3://b/runs/tiny/ingest"
    assert storage.join("s3://b/runs/", "/x/") == "s3://b/runs/x"
    assert storage.parent("s3://b/runs/tiny") == "s3://b/runs"
    assert storage.basename("s3://b/runs/tiny/") == "tiny"
    assert storage.normalize("s3://b/runs/tiny/../x") == "s3://b/runs/x"
    assert storage.join("/a", "b") == os.path.join("/a", "b")
    assert storage.is_remote("s3://b") and not storage.is_remote("file:///x")
    assert storage.is_local_relative("runs") and not storage.is_local_relative("/runs")


def test_check_location_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="gs"):
        storage.check_location("gs://bucket/runs")
    with pytest.raises(ValueError, match="bucket"):
        storage.check_location("s3:///runs")
    storage.check_location("s3://bucket/runs")
    storage.check_location("/abs")


def test_round_trip(root: str) -> None:
    f = storage.join(root, "a", "metrics.json")
    assert not storage.exists(f)
    storage.makedirs(storage.parent(f))
    storage.write_json(f, {"b": 1, "a": [1, 2]})
    assert storage.read_json(f) == {"a": [1, 2], "b": 1}
    assert storage.is_file(f) and storage.is_dir(storage.join(root, "a"))
    assert storage.size(f) == len(storage.read_bytes(f))
    storage.write_text(storage.join(root, "a", "_SUCCESS"), "{}")
    storage.write_bytes(storage.join(root, "a", "sub", "x.parquet"), b"1")
    assert storage.list_files(storage.join(root, "a")) == [f]
    assert storage.list_files(storage.join(root, "a"), ".parquet", recursive=True) == [
        storage.join(root, "a", "sub", "x.parquet")
    ]
    with storage.open_output(storage.join(root, "a", "w.bin")) as fh:
        fh.write(b"abc")
    with storage.open_input(storage.join(root, "a", "w.bin")) as fh:
        assert fh.read() == b"abc"
    with storage.local_file(storage.join(root, "a", "w.bin")) as path:
        assert Path(path).read_bytes() == b"abc"
    storage.remove(storage.join(root, "a", "w.bin"))
    storage.remove(storage.join(root, "a", "w.bin"))  # missing is fine
    assert not storage.exists(storage.join(root, "a", "w.bin"))
    storage.remove_tree(storage.join(root, "a"))
    assert not storage.exists(f)
    assert storage.list_files(storage.join(root, "a")) == []
    storage.remove_tree(storage.join(root, "a"))


def test_open_output_writes_nothing_on_error(root: str) -> None:
    loc = storage.join(root, "never.bin")
    with pytest.raises(RuntimeError), storage.open_output(loc) as fh:
        fh.write(b"partial")
        raise RuntimeError("cut off")
    assert not storage.exists(loc)


def test_local_writes_leave_no_temporaries(tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path / "x" / "f.bin"), b"1")
    storage.write_bytes(str(tmp_path / "x" / "f.bin"), b"22")
    assert sorted(os.listdir(tmp_path / "x")) == ["f.bin"]
    assert (tmp_path / "x" / "f.bin").read_bytes() == b"22"


def test_torch_checkpoint_on_s3(s3_bucket: str) -> None:
    torch = pytest.importorskip("torch")
    loc = storage.join(s3_bucket, "ckpt", "model.pt")
    with storage.open_output(loc) as fh:
        torch.save({"w": torch.arange(3)}, fh)
    with storage.open_input(loc) as fh:
        state = torch.load(io.BytesIO(fh.read()), weights_only=True)
    assert state["w"].tolist() == [0, 1, 2]
