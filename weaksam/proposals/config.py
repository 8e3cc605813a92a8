"""Settings of the proposal generation job (the engine's own settings are nested)."""

from __future__ import annotations

from dataclasses import dataclass, field

from weaksam.configlib import check_at_least, check_gpu_policy, check_gpus
from weaksam.sam.engine import EngineConfig


@dataclass(frozen=True)
class ProposalsConfig:
    """The Ray Data job that runs SAM over a manifest.

    Attributes:
        splits: manifest splits to process (empty = all).
        use_points: prompt with the peak points table when it exists.
        num_actors: the SAM actor pool's minimum (and starting) size.
        max_actors: its maximum; 0 = grow with the cluster on GPUs (one SAM per GPU, more as
            GPU nodes join), a fixed pool of ``num_actors`` on CPU
            (:func:`weaksam.train.placement.pool_sizes`).
        cpus_per_actor / gpus_per_actor: resources of each SAM actor (GPUs only when used).
        use_gpu: ``auto`` (GPUs when the cluster has them for every actor and CUDA works),
            ``true`` (fail fast without) or ``false`` (:mod:`weaksam.train.placement`).
        batch_size: images per ``map_batches`` call.
        decode_cpus: CPUs of each decoding task (the CPU stage before SAM).
        rows_per_file: row cap per Parquet shard.
        max_pixels: images over this pixel count are error rows.
        engine: prompting and filtering settings (WeakSAM's by default).
    """

    splits: tuple[str, ...] = ()
    use_points: bool = True
    num_actors: int = 1
    max_actors: int = 0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0
    use_gpu: str = "auto"
    batch_size: int = 4
    decode_cpus: float = 0.25
    rows_per_file: int = 500
    max_pixels: int = 64_000_000
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "num_actors", "batch_size", "rows_per_file", "max_pixels")
        # Ray allows 0 CPUs
        check_at_least(self, 0, "cpus_per_actor", "decode_cpus", "max_actors")
        check_gpus(self, "gpus_per_actor")
        check_gpu_policy(self, "use_gpu")  # 0: CPU actors even on a GPU cluster
