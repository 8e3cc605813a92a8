"""Class-id mapping: project ids are 0-based contiguous; names and source ids travel along.

A :class:`ClassMap` is stored as JSON in the Parquet schema metadata of every table
(key ``weaksam.classes``), so COCO exports use the source dataset's original category ids.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from weaksam import storage

META_CLASSES = b"weaksam.classes"

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class ClassMap:
    """Names of the ``C`` classes in project-id order, and each one's source dataset id.

    Args:
        names: class names; index = project class id (0-based, contiguous).
        source_ids: the dataset's own category id per class (COCO ids, or ``1..C`` by default).
    """

    names: tuple[str, ...]
    source_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.source_ids):
            raise ValueError("names and source_ids must have the same length")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names in {self.names}")
        if len(set(self.source_ids)) != len(self.source_ids):
            raise ValueError(f"duplicate source ids in {self.source_ids}")

    @classmethod
    def from_names(cls, names: Sequence[str], source_ids: Sequence[int] | None = None) -> ClassMap:
        ids = tuple(int(i) for i in source_ids) if source_ids is not None else None
        return cls(tuple(names), ids or tuple(range(1, len(names) + 1)))

    @classmethod
    def from_coco_categories(cls, categories: Sequence[Mapping[str, object]]) -> ClassMap:
        """From a COCO ``categories`` list; project ids follow sorted source ids."""
        cats = sorted(categories, key=lambda c: int(c["id"]))  # type: ignore[call-overload]
        return cls(tuple(str(c["name"]) for c in cats), tuple(int(c["id"]) for c in cats))  # type: ignore[call-overload]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Project id of ``name``; ``KeyError`` naming the known classes when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown class {name!r}; known: {list(self.names)}") from None

    def from_source_id(self, source_id: int) -> int:
        """Project id of a source dataset category id."""
        try:
            return self.source_ids.index(int(source_id))
        except ValueError:
            raise KeyError(f"unknown source category id {source_id}") from None

    def coco_categories(self) -> list[dict[str, object]]:
        """The COCO ``categories`` list with the original ids."""
        return [
            {"id": sid, "name": name, "supercategory": "object"}
            for name, sid in zip(self.names, self.source_ids, strict=True)
        ]

    def to_json(self) -> str:
        return json.dumps({"names": list(self.names), "source_ids": list(self.source_ids)})

    @classmethod
    def from_json(cls, text: str | bytes) -> ClassMap:
        obj = json.loads(text)
        return cls(tuple(obj["names"]), tuple(int(i) for i in obj["source_ids"]))

    def to_metadata(self) -> dict[bytes, bytes]:
        return {META_CLASSES: self.to_json().encode()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[bytes, bytes] | None) -> ClassMap:
        if not metadata or META_CLASSES not in metadata:
            raise ValueError("table metadata has no class map (key 'weaksam.classes')")
        return cls.from_json(metadata[META_CLASSES])


def read_class_file(path: str) -> ClassMap:
    """A class list file (a local path or a URI): one name per line (blank lines and ``#``
    comments ignored)."""
    with io.StringIO(storage.read_text(path)) as fh:
        names = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"class file {path} lists no classes")
    return ClassMap.from_names(names)
