"""One factory for the prompting engines: the SAM config's model type picks the backend.

``vit_*`` / ``demo`` → :class:`~weaksam.sam.engine.SamPromptEngine` (segment-anything);
``sam2.1_hiera_*`` → :class:`~weaksam.sam.sam2_engine.Sam2PromptEngine` (the ``sam2``
package). Jobs build their engine here, so a config switch is all it takes to change models.
"""

from __future__ import annotations

from typing import Any

from weaksam.sam.build import SamConfig
from weaksam.sam.engine import EngineConfig, PromptEngine, SamPromptEngine


def build_engine(sam_cfg: SamConfig, engine_cfg: EngineConfig | None = None) -> PromptEngine[Any]:
    """The engine of ``sam_cfg.backend``: model built and loaded from ``sam_cfg`` (checkpoint,
    device, autocast), prompting settings ``engine_cfg`` (default :class:`EngineConfig`)."""
    if sam_cfg.backend == "sam2":
        # imported here: ``import sam2`` sets up Hydra's global state, SAM users need none of it
        from weaksam.sam.sam2_engine import Sam2PromptEngine

        return Sam2PromptEngine.from_config(sam_cfg, engine_cfg)
    return SamPromptEngine.from_config(sam_cfg, engine_cfg)
