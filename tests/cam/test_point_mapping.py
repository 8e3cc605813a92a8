"""Map -> point coordinates end to end: a hand-made CAM on a non-square image.

A "backbone" that passes the red channel through (average-pooled to stride 8) gives a class
map whose only peak is a red square; the points must land in that square in original-image
pixels (x = column, y = row), after the square resize to ``input_size``, the scales and the
flips, and be counted as hits by the precision metric.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from weaksam.cam.config import PeakStageConfig
from weaksam.cam.extractor import points_from_maps
from weaksam.cam.maps import compute_class_maps
from weaksam.cam.metrics import point_hits
from weaksam.cam.models import Backbone, CAMClassifier, Features


class RedChannel(Backbone):
    out_dim = 1
    stride = 8
    offset = 4.0  # an 8x8 average pool: cell i covers pixels 8i..8i+7

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: torch.Tensor) -> Features:
        return Features(F.avg_pool2d(x[:, :1], self.stride))


def test_peak_lands_on_the_object_in_original_pixels() -> None:
    h, w = 120, 200  # not square: rows and columns scale differently
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[20:40, 150:170, 0] = 255  # the class-1 object: rows 20-39, columns 150-169
    model = CAMClassifier(RedChannel(), 3)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[1, 0] = 1.0
    cfg = PeakStageConfig(scales=(1.0, 0.8, 1.2), flip=True, kernel=17)
    cmaps = compute_class_maps(model, image, 96, cfg, classes=[1])
    assert cmaps.maps["cam"].shape == (1, h, w)
    pts = points_from_maps(cmaps, cfg, h, w)
    xy = np.asarray(pts["points"], dtype=np.float64).reshape(-1, 2)
    assert len(xy) == 2 and pts["point_classes"] == [1, 1]  # one per map kind
    assert np.all((xy[:, 0] >= 150) & (xy[:, 0] < 170)), xy  # x is the column
    assert np.all((xy[:, 1] >= 20) & (xy[:, 1] < 40)), xy  # y is the row
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 20:40, 150:170] = True
    masks[1, 20:40, 20:40] = True  # same class elsewhere: not hit
    hits, found = point_hits(xy, pts["point_classes"], masks, [1, 1])
    assert hits.tolist() == [True, True] and found.tolist() == [True, False]
    # the transposed point (y, x) would miss: the test tells the two orders apart
    assert not point_hits(xy[:, ::-1], pts["point_classes"], masks, [1, 1])[0].any()
