"""Weakly-supervised object detection on WeakSAM proposals: WSDDN, OICR (WSOD2) and MIST.

Modules: ``config`` (the ``wsod`` section), ``backbones`` / ``model`` (the detector),
``outputs`` (its per-RoI outputs), ``transforms`` (views: resize, flip), ``rules`` /
``losses`` / ``objective`` (pseudo labels and losses), ``data`` (proposals joined to the
manifest, training batches), ``training`` (the Ray Train loop), ``postprocess`` /
``inference`` (TTA, NMS, the Ray Data UDF), ``supervised`` (the ground-truth upper bound
only), ``summary`` (curves, table) and ``stage`` (the pipeline stage).
"""
