"""``peaks.png``: class maps as heat maps with their peak points, over a few images."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from weaksam.cam.config import PeakStageConfig
from weaksam.cam.data import read_label_rows
from weaksam.cam.extractor import points_from_maps
from weaksam.cam.maps import compute_class_maps
from weaksam.cam.training import load_classifier
from weaksam.data.imageio import load_image
from weaksam.viz.draw import class_color, contact_sheet, draw_points


def heat_overlay(
    image: npt.NDArray[np.uint8], heat: npt.ArrayLike, alpha: float = 0.5
) -> npt.NDArray[np.uint8]:
    """Blend an ``HxW`` map in ``[0, 1]`` (``jet`` colours) over an ``HxWx3`` uint8 image."""
    from matplotlib import colormaps

    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgb = colormaps["jet"](h)[..., :3] * 255.0
    out = image.astype(np.float32) * (1 - alpha) + rgb * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_peaks_sheet(
    checkpoint: str, manifest: str, cfg: PeakStageConfig, split: str, train_split: str = ""
) -> npt.NDArray[np.uint8]:
    """A contact sheet of the first ``cfg.picture_images`` images of ``split``: per image and
    map kind, the maximum over its classes' maps as a heat map, with that kind's peak points in
    their class colours. Classes come from the labels only when ``split == train_split``."""
    model, ccfg, names = load_classifier(checkpoint)
    rows = read_label_rows(manifest, split)[: cfg.picture_images]
    tiles: list[npt.NDArray[np.uint8]] = []
    titles: list[str] = []
    for row in rows:
        image = load_image(str(row["path"]))
        h, w = image.shape[:2]
        labels = list(row["labels"] or []) if split == train_split else None
        cmaps = compute_class_maps(model, image, ccfg.input_size, cfg, labels)
        pts = points_from_maps(cmaps, cfg, h, w)
        xy = np.asarray(pts["points"], dtype=np.float32).reshape(-1, 2)
        kinds = np.asarray(pts["point_kinds"], dtype=object)
        pcls = np.asarray(pts["point_classes"], dtype=np.int64)
        shown = ",".join(names[c] for c in cmaps.classes)
        for kind in cfg.map_kinds:
            heat = cmaps.maps[kind].amax(0) if cmaps.classes else torch.zeros(h, w)
            sel = kinds == kind
            tile = draw_points(
                heat_overlay(image, heat.cpu().numpy()),
                xy[sel],
                colors=[class_color(int(c)) for c in pcls[sel]],
            )
            tiles.append(tile)
            titles.append(f"{split} {row['image_id']} {kind}: {shown}")
    if not tiles:
        return np.zeros((8, 8, 3), dtype=np.uint8)
    return contact_sheet(tiles, ncols=2 * len(cfg.map_kinds), titles=titles)
