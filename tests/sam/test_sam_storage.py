"""SAM checkpoints at URIs (moto S3): saved and loaded through weaksam.storage, the same
tensors as a local file; the exporter of a training checkpoint reads and writes URIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weaksam import storage
from weaksam.sam.build import (
    SamCheckpointError,
    SamConfig,
    build_sam,
    build_sam_model,
    load_sam_checkpoint,
    save_sam_checkpoint,
)
from weaksam.sam.export import export_trained_sam, plot_history
from weaksam.train.reporting import STATE_FILE


def test_checkpoint_on_s3_loads_like_the_local_file(s3_bucket: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    demo = build_sam_model("demo")
    local = tmp_path / "sam.pt"
    save_sam_checkpoint(demo, local, {"model_type": "demo"}, extra={"step": 3})
    loc = storage.join(s3_bucket, "ckpt", "sam.pt")
    save_sam_checkpoint(demo, loc, {"model_type": "demo"}, extra={"step": 3})
    uploaded = storage.join(s3_bucket, "ckpt", "uploaded.pt")
    storage.upload_file(str(local), uploaded)

    a, b = build_sam_model("demo"), build_sam_model("demo")
    assert load_sam_checkpoint(a, loc) == load_sam_checkpoint(b, uploaded)
    for (k, x), (_, y) in zip(a.state_dict().items(), demo.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    model = build_sam(SamConfig(model_type="demo", checkpoint=loc, device="cpu"))
    assert torch.equal(model.mask_decoder.iou_token.weight, demo.mask_decoder.iou_token.weight)

    with pytest.raises(FileNotFoundError, match="SAM checkpoint not found"):
        load_sam_checkpoint(build_sam_model("demo"), storage.join(s3_bucket, "missing.pt"))
    storage.write_bytes(storage.join(s3_bucket, "junk.pt"), b"not a checkpoint" * 8)
    with pytest.raises(SamCheckpointError, match="not a valid SAM checkpoint"):
        load_sam_checkpoint(build_sam_model("demo"), storage.join(s3_bucket, "junk.pt"))
    # file:// names the local file
    c = build_sam_model("demo")
    load_sam_checkpoint(c, f"file://{local}")
    assert torch.equal(c.image_encoder.pos_embed, demo.image_encoder.pos_embed)


def test_export_trained_sam_between_uris(s3_bucket: str) -> None:
    torch.manual_seed(0)
    demo = build_sam_model("demo")
    history = [{"step": 1, "loss": 1.0, "val_miou": 0.2, "val_oracle_miou": 0.3, "miou": 0.25}]
    state = {
        "model": {f"sam.{k}": v for k, v in demo.state_dict().items()},
        "sam_config": {"model_type": "demo"},
        "step": 5,
        "history": history,
        "train_config": {"steps": 5},
    }
    ckpt = storage.join(s3_bucket, "train", "checkpoint")
    with storage.open_output(storage.join(ckpt, STATE_FILE)) as fh:
        torch.save(state, fh)
    out = storage.join(s3_bucket, "export", "demo_sam.pt")
    assert export_trained_sam(ckpt, out) == {"step": 5, "history": history}
    model = build_sam_model("demo")
    extra = load_sam_checkpoint(model, out)
    assert extra["step"] == 5 and extra["config"] == {"model_type": "demo"}
    assert torch.equal(model.mask_decoder.iou_token.weight, demo.mask_decoder.iou_token.weight)
    plot = storage.join(s3_bucket, "export", "curves.png")
    plot_history(history, plot)
    assert storage.read_bytes(plot).startswith(b"\x89PNG")
