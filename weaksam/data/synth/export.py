"""Write the synthetic sets to disk in the formats the ingest stage reads.

``shapes`` layout under ``out_dir``::

    images/<split>/<split>_<index:05d>.png
    annotations/instances_<split>.json     COCO instances, compressed-RLE masks, "difficult": 0
    labels_<split>.csv                     folder format: file (relative to images/), labels (;)
    classes.txt                            the class names, one per line, in class-id order
    voc/Annotations/<stem>.xml             when cfg.export_voc (1-based inclusive boxes)
    voc/JPEGImages/<stem>.png              hard link (or copy) of the PNG
    voc/ImageSets/Main/<split>.txt
    contact_sheet.png                      the first 12 train images with their ground truth

COCO image ids are unique across splits: train images are ``1..num_train``, test images follow.
Files are overwritten in place; files of a previous, larger run are not removed.

``out_dir`` may be a local path, ``file://`` or ``s3://`` (every file goes through
:mod:`weaksam.storage`; on an object store the VOC copy of a PNG is a second upload of the same
bytes). Local output is byte-for-byte what it always was.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

from weaksam import storage
from weaksam.config import SynthConfig
from weaksam.data.synth.blobs import render_blobs_image
from weaksam.data.synth.scene import SyntheticImage, image_rng, render_shapes_image
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.geometry.boxes import mask_to_box, xyxy_to_xywh
from weaksam.io.classes import ClassMap
from weaksam.io.rle import decode_masks, encode_masks, from_json_rle, to_json_rle
from weaksam.viz.draw import class_color, contact_sheet, draw_boxes, overlay_masks, save_png

SPLITS: tuple[str, ...] = ("train", "test")
CONTACT_SHEET = "contact_sheet.png"
BLOBS_JSON = "instances.json"


def image_stem(split: str, index: int) -> str:
    """``<split>_<index:05d>``, the file stem of an image."""
    return f"{split}_{index:05d}"


def coco_annotations(
    sample: SyntheticImage, image_id: int, first_ann_id: int, class_map: ClassMap
) -> list[dict[str, Any]]:
    """COCO annotation dicts of one image (bbox XYWH continuous, area = mask pixel count)."""
    h, w = sample.image.shape[:2]
    counts = encode_masks(sample.masks)
    xywh = xyxy_to_xywh(sample.boxes)
    areas = sample.masks.reshape(len(sample), -1).sum(1)
    return [
        {
            "id": first_ann_id + k,
            "image_id": image_id,
            "category_id": class_map.source_ids[int(sample.classes[k])],
            "bbox": [float(v) for v in xywh[k]],
            "area": int(areas[k]),
            "iscrowd": 0,
            "difficult": 0,
            "segmentation": to_json_rle(counts[k], h, w),
        }
        for k in range(len(sample))
    ]


def voc_xml(sample: SyntheticImage, filename: str, names: tuple[str, ...]) -> str:
    """A VOC annotation; boxes 1-based inclusive: ``xmin = round(x1) + 1``, ``xmax = round(x2)``."""
    h, w = sample.image.shape[:2]
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(root, "segmented").text = "0"
    for k in range(len(sample)):
        x1, y1, x2, y2 = (round(float(v)) for v in sample.boxes[k])
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[int(sample.classes[k])]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, val in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(val)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_json(loc: str, obj: Any) -> None:
    """Compact json (``json.dump``'s defaults), written atomically."""
    storage.write_json(loc, obj, indent=None)


def _png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    """The PNG :func:`weaksam.viz.draw.save_png` writes, encoded in memory."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image)[..., :3])).save(buf, format="PNG")
    return buf.getvalue()


def _save_png(loc: str, image: npt.NDArray[np.uint8]) -> str:
    """``save_png`` for local paths (unchanged bytes); an upload of the same PNG for URIs."""
    if storage.is_remote(loc):
        storage.write_bytes(loc, _png_bytes(image))
    else:
        save_png(storage.resolve(loc)[1] if storage.is_uri(loc) else loc, image)
    return loc


def _csv_text(header: tuple[str, ...], rows: list[tuple[str, str]]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def disk_usage(path: str) -> int:
    """Bytes of all files under ``path``, counting hard-linked files once (a URI: the sum of
    its objects' sizes)."""
    if storage.is_remote(path):
        return sum(storage.size(f) for f in storage.list_files(path, recursive=True))
    path = storage.resolve(path)[1] if storage.is_uri(path) else path
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def render_sheet(
    samples: list[SyntheticImage], titles: list[str], ncols: int = 4
) -> npt.NDArray[np.uint8]:
    """A contact sheet of samples with their masks, boxes and class names drawn."""
    tiles = []
    for s in samples:
        cols = [class_color(int(c)) for c in s.classes]
        img = overlay_masks(s.image, s.masks, alpha=0.3, colors=cols)
        names = [SHAPE_CLASSES[int(c)] for c in s.classes]
        tiles.append(draw_boxes(img, s.boxes, labels=names, colors=cols, width=1))
    return contact_sheet(tiles, ncols=ncols, titles=titles)


def generate_shapes_dataset(
    cfg: SynthConfig, out_dir: str, progress: bool = True
) -> dict[str, Any]:
    """Render and write the ``shapes`` benchmark (layout in the module docstring).

    Returns:
        A summary: ``images`` and ``instances`` per split, ``instances_per_class`` (train+test),
        ``classes``, ``bytes`` on disk, ``seconds``, ``out_dir`` and ``contact_sheet`` path.
    """
    start = time.perf_counter()
    class_map = ClassMap.from_names(SHAPE_CLASSES)
    remote = storage.is_remote(out_dir)
    storage.makedirs(storage.join(out_dir, "annotations"))
    storage.write_text(storage.join(out_dir, "classes.txt"), "\n".join(SHAPE_CLASSES) + "\n")
    if cfg.export_voc:
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            storage.makedirs(storage.join(out_dir, "voc", *sub.split("/")))
    counts = {"train": cfg.num_train, "test": cfg.num_test}
    images: dict[str, int] = {}
    instances: dict[str, int] = {}
    per_class = [0] * len(SHAPE_CLASSES)
    sheet: list[SyntheticImage] = []
    sheet_titles: list[str] = []
    next_image_id, next_ann_id = 1, 1
    for split in SPLITS:
        n = int(counts[split])
        storage.makedirs(storage.join(out_dir, "images", split))
        coco_images: list[dict[str, Any]] = []
        coco_anns: list[dict[str, Any]] = []
        rows: list[tuple[str, str]] = []
        stems: list[str] = []
        it = tqdm(range(n), desc=f"shapes/{split}", disable=not progress, unit="img")
        for index in it:
            sample = render_shapes_image(image_rng(cfg.seed, split, index), cfg)
            stem = image_stem(split, index)
            rel = f"{split}/{stem}.png"
            path = storage.join(out_dir, "images", split, f"{stem}.png")
            png = b""
            if remote:  # encoded once: the VOC copy is the same bytes
                png = _png_bytes(sample.image)
                storage.write_bytes(path, png)
            else:
                _save_png(path, sample.image)
            h, w = sample.image.shape[:2]
            coco_images.append({"id": next_image_id, "file_name": rel, "width": w, "height": h})
            anns = coco_annotations(sample, next_image_id, next_ann_id, class_map)
            coco_anns.extend(anns)
            next_image_id += 1
            next_ann_id += len(anns)
            present = sorted(set(sample.classes.tolist()))
            rows.append((rel, ";".join(SHAPE_CLASSES[c] for c in present)))
            for c in sample.classes.tolist():
                per_class[c] += 1
            if cfg.export_voc:
                voc_png = storage.join(out_dir, "voc", "JPEGImages", f"{stem}.png")
                if remote:
                    storage.write_bytes(voc_png, png)
                else:
                    _link_or_copy(storage.resolve(path)[1], storage.resolve(voc_png)[1])
                xml_path = storage.join(out_dir, "voc", "Annotations", f"{stem}.xml")
                storage.write_text(xml_path, voc_xml(sample, f"{stem}.png", SHAPE_CLASSES))
                stems.append(stem)
            if split == "train" and len(sheet) < 12:
                sheet.append(sample)
                sheet_titles.append(rel)
        coco = {
            "info": {"description": f"weaksam synthetic shapes, {split}", "version": "1"},
            "licenses": [],
            "images": coco_images,
            "annotations": coco_anns,
            "categories": class_map.coco_categories(),
        }
        _write_json(storage.join(out_dir, "annotations", f"instances_{split}.json"), coco)
        storage.write_text(
            storage.join(out_dir, f"labels_{split}.csv"), _csv_text(("file", "labels"), rows)
        )
        if cfg.export_voc:
            storage.write_text(
                storage.join(out_dir, "voc", "ImageSets", "Main", f"{split}.txt"),
                "".join(f"{s}\n" for s in stems),
            )
        images[split] = n
        instances[split] = len(coco_anns)
    sheet_path = ""
    if sheet:
        sheet_path = _save_png(
            storage.join(out_dir, CONTACT_SHEET), render_sheet(sheet, sheet_titles)
        )
    return {
        "images": images,
        "instances": instances,
        "instances_per_class": dict(zip(SHAPE_CLASSES, per_class, strict=True)),
        "classes": list(SHAPE_CLASSES),
        "image_size": int(cfg.image_size),
        "bytes": disk_usage(out_dir),
        "seconds": round(time.perf_counter() - start, 3),
        "out_dir": out_dir,
        "contact_sheet": sheet_path,
    }


def generate_blobs_dataset(
    out_dir: str, num_images: int, size: int, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Write the class-agnostic ``blobs`` set: ``images/blobs_<index:05d>.png`` and a COCO json
    (:data:`BLOBS_JSON`, one category ``"object"``, compressed-RLE visible masks).

    Image ``i`` depends only on ``(seed, i)``. Returns ``images``, ``masks``, ``bytes``,
    ``seconds`` and ``out_dir``.
    """
    start = time.perf_counter()
    storage.makedirs(storage.join(out_dir, "images"))
    coco_images: list[dict[str, Any]] = []
    coco_anns: list[dict[str, Any]] = []
    it = tqdm(range(int(num_images)), desc="blobs", disable=not progress, unit="img")
    for index in it:
        image, masks = render_blobs_image(image_rng(seed, "blobs", index), size)
        rel = f"blobs_{index:05d}.png"
        _save_png(storage.join(out_dir, "images", rel), image)
        image_id = index + 1
        coco_images.append({"id": image_id, "file_name": rel, "width": size, "height": size})
        for counts, mask in zip(encode_masks(masks), masks, strict=True):
            x1, y1, x2, y2 = (float(v) for v in mask_to_box(mask))
            coco_anns.append(
                {
                    "id": len(coco_anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": to_json_rle(counts, size, size),
                }
            )
    coco = {
        "info": {"description": "weaksam synthetic blobs (class-agnostic)", "version": "1"},
        "licenses": [],
        "images": coco_images,
        "annotations": coco_anns,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    _write_json(storage.join(out_dir, BLOBS_JSON), coco)
    return {
        "images": len(coco_images),
        "masks": len(coco_anns),
        "image_size": int(size),
        "bytes": disk_usage(out_dir),
        "seconds": round(time.perf_counter() - start, 3),
        "out_dir": out_dir,
    }


def iter_blobs(
    data_dir: str,
) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
    """Yield ``(image HxWx3 uint8, masks KxHxW bool)`` of a ``blobs`` folder, in image-id order."""
    coco = storage.read_json(storage.join(data_dir, BLOBS_JSON))
    by_image: dict[int, list[bytes]] = {img["id"]: [] for img in coco["images"]}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        by_image[ann["image_id"]].append(from_json_rle(ann["segmentation"])[0])
    for img in sorted(coco["images"], key=lambda i: i["id"]):
        with (
            storage.open_input(storage.join(data_dir, "images", img["file_name"])) as fh,
            Image.open(fh) as pil,
        ):
            image = np.asarray(pil.convert("RGB"), dtype=np.uint8)
        masks = decode_masks(by_image[img["id"]], int(img["height"]), int(img["width"]))
        yield image, masks


def load_blobs(data_dir: str) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
    """All of :func:`iter_blobs` as a list (fine for the demo's few hundred small images)."""
    return list(iter_blobs(data_dir))
