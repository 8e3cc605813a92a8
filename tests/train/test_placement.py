"""The GPU policy of pools and trainers: decided from the cluster's resources and a CUDA probe."""

from __future__ import annotations

import pytest

from weaksam.train.placement import (
    GPUPolicyError,
    decide_actor_gpus,
    decide_gpu,
    parse_policy,
    pool_cpus,
    pool_sizes,
)

NO_GPU = {"CPU": 6.0, "memory": 1e9}
TWO_GPUS = {"CPU": 6.0, "GPU": 2.0}


def _never_called() -> bool:
    raise AssertionError("the probe must not run when the cluster lacks GPUs")


def test_parse_policy_accepts_yaml_booleans_and_none() -> None:
    assert [parse_policy(v) for v in (None, True, False, "AUTO", " false ")] == [
        "auto",
        "true",
        "false",
        "auto",
        "false",
    ]
    with pytest.raises(ValueError, match="use_gpu must be one of"):
        parse_policy("maybe")


def test_false_never_uses_gpus() -> None:
    d = decide_gpu("false", 1, what="x", resources=TWO_GPUS, probe=_never_called)
    assert not d.use_gpu and d.device == "cpu" and "use_gpu: false" in d.reason


def test_true_fails_fast_in_one_line_with_the_resources() -> None:
    with pytest.raises(GPUPolicyError) as exc:
        decide_gpu("true", 2, what="proposals: 2 SAM actors", resources=NO_GPU, probe=_never_called)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("proposals: 2 SAM actors: use_gpu: true")
    assert "0 GPUs for 2 needed" in msg and "CPU=6" in msg
    with pytest.raises(GPUPolicyError, match="sees no CUDA device"):
        decide_gpu("true", 1, what="x", resources=TWO_GPUS, probe=lambda: False)
    assert decide_gpu("true", 2, what="x", resources=TWO_GPUS, probe=lambda: True).use_gpu


def test_auto_uses_gpus_only_when_enough_and_cuda_works(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        d = decide_gpu("auto", 4, what="wsod: 4 workers", resources=TWO_GPUS, probe=_never_called)
    assert not d.use_gpu and "2 GPUs for 4 needed" in d.reason
    assert d.reason in caplog.text  # a CPU fallback is never silent
    # advertised GPUs without CUDA (a simulated cluster): CPU, so training uses gloo
    fake = decide_gpu("auto", 1, what="x", resources=TWO_GPUS, probe=lambda: False)
    assert not fake.use_gpu and "no CUDA device" in fake.reason
    real = decide_gpu("auto", 2, what="x", resources=TWO_GPUS, probe=lambda: True)
    assert real.use_gpu and real.device == "cuda"


def test_pool_sizes_grow_on_gpus_and_stay_fixed_on_cpu() -> None:
    assert pool_sizes(1, 0, on_gpu=True) == (1, None)  # one actor per GPU, grows with nodes
    assert pool_sizes(2, 0, on_gpu=False) == (2, 2)
    assert pool_sizes(1, 4, on_gpu=False) == (1, 4)
    assert pool_sizes(3, 2, on_gpu=True) == (3, 3)  # max never below min
    with pytest.raises(ValueError, match="min 0"):
        pool_sizes(0, 0, on_gpu=True)


def test_actor_pools_follow_advertised_gpus_and_say_when_cuda_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a cluster advertising GPUs without CUDA (simulated nodes): actors still take one GPU
    # slot each (placement), compute on CPU, and the reason says so loudly
    with caplog.at_level("WARNING"):
        d = decide_actor_gpus("auto", 2, what="SAM actors", resources=TWO_GPUS, probe=lambda: False)
    assert d.use_gpu and "no CUDA device" in d.reason and "compute on CPU" in d.reason
    assert d.reason in caplog.text
    with pytest.raises(GPUPolicyError, match="sees no CUDA device"):
        decide_actor_gpus("true", 2, what="x", resources=TWO_GPUS, probe=lambda: False)
    with pytest.raises(GPUPolicyError, match="0 GPUs for 1 needed"):
        decide_actor_gpus("true", 1, what="x", resources=NO_GPU, probe=_never_called)
    assert not decide_actor_gpus("auto", 1, what="x", resources=NO_GPU, probe=_never_called).use_gpu
    assert not decide_actor_gpus("false", 1, what="x", resources=TWO_GPUS).use_gpu
    assert decide_actor_gpus("auto", 2, what="x", resources=TWO_GPUS, probe=lambda: True).use_gpu


def test_pool_cpus_leave_room_for_the_read_tasks() -> None:
    assert pool_cpus(1.0, 2, on_gpu=False, cluster_cpus=2.0) == 0.5  # one CPU left free
    assert pool_cpus(1.0, 1, on_gpu=False, cluster_cpus=8.0) == 1.0  # room already
    assert pool_cpus(2.0, 4, on_gpu=False, cluster_cpus=4.0) == 0.75
    assert pool_cpus(1.0, 1, on_gpu=False, cluster_cpus=1.0) == 1.0  # nothing to spare
    assert pool_cpus(3.0, 4, on_gpu=True, cluster_cpus=2.0) == 3.0  # GPU pools: as asked
