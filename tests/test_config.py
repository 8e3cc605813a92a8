import dataclasses
import os

import pytest
import yaml

from weaksam.config import (
    Config,
    ConfigError,
    config_hash,
    from_dict,
    load_config,
    save_resolved,
    to_dict,
)


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["synth.num_train=7", "data.splits=[a, b, c]", "name=x"])
    assert cfg.synth.num_train == 7 and cfg.data.splits == ("a", "b", "c") and cfg.name == "x"
    assert cfg.run_dir == os.path.join(os.getcwd(), "runs", "x")  # absolute: Ray workers
    assert load_config(None, ["run_root=s3://b/r/", "name=x"]).run_dir == "s3://b/r/x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "y"  # type: ignore[misc]


def test_unknown_key_names_key_and_file(tmp_path) -> None:
    f = _write(tmp_path / "c.yaml", {"synth": {"num_trian": 3}})
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert "synth.num_trian" in str(exc.value) and "c.yaml" in str(exc.value)
    with pytest.raises(ConfigError, match="--set bogus=1"):
        load_config(None, ["bogus=1"])


def test_base_inheritance_and_source_of_error(tmp_path) -> None:
    _write(tmp_path / "base.yaml", {"name": "b", "synth": {"num_train": 5, "seed": 3}})
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "synth": {"num_train": 9}})
    cfg = load_config(child)
    assert (cfg.name, cfg.synth.num_train, cfg.synth.seed) == ("b", 9, 3)
    _write(tmp_path / "base.yaml", {"evaluate": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"base\.yaml"):
        load_config(child)


def test_type_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["synth.num_train=abc"])
    with pytest.raises(ConfigError, match="expected true/false"):
        load_config(None, ["synth.occlusion=3"])
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(None, ["synth.num_train"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    cyc = _write(tmp_path / "cyc.yaml", {"base": "cyc.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(cyc)


def test_resolved_round_trip_and_hash(tmp_path) -> None:
    cfg = load_config(None, ["synth.num_test=4"])
    path = save_resolved(cfg, str(tmp_path / "run"))
    again = load_config(path)
    assert again == cfg
    assert from_dict(to_dict(cfg), Config) == cfg
    assert config_hash(cfg.synth) == config_hash(again.synth)
    assert config_hash(cfg.synth) != config_hash(load_config(None, ["synth.seed=1"]).synth)


def test_run_dir_on_every_store(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, ["run_root=runs/", "name=x"]).run_dir == str(tmp_path / "runs" / "x")
    assert load_config(None, ["run_root=/", "name=x"]).run_dir == "/x"
    assert load_config(None, ["run_root=s3://b", "name=x"]).run_dir == "s3://b/x"
    assert load_config(None, ["run_root=s3://b/a/r", "name=x"]).run_dir == "s3://b/a/r/x"
    assert load_config(None, ["run_root=file:///d/r/", "name=x"]).run_dir == "file:///d/r/x"
    with pytest.raises((ConfigError, ValueError), match="gs"):
        load_config(None, ["run_root=gs://b/r"])
    with pytest.raises((ConfigError, ValueError), match="bucket"):
        load_config(None, ["run_root=s3:///r"])


def test_save_resolved_on_s3(s3_bucket: str) -> None:
    from weaksam import storage

    cfg = load_config(None, [f"run_root={s3_bucket}/runs", "name=t", "synth.num_test=4"])
    path = save_resolved(cfg)
    assert path == f"{s3_bucket}/runs/t/config.resolved.yaml"
    with storage.local_file(path) as local:
        assert load_config(local) == cfg


@dataclasses.dataclass(frozen=True)
class _Inner:
    kind: str = "big"
    size: int = 1


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=lambda: _Inner(kind="small", size=2))


def test_partial_section_starts_from_the_field_default() -> None:
    from weaksam.configlib import load_into

    cfg = load_into(_Outer, None, ["inner.size=5"])
    assert cfg.inner == _Inner(kind="small", size=5)  # not the class default "big"


@dataclasses.dataclass(frozen=True)
class _Pair:
    pair: tuple[int, float] = (1, 2.0)


def test_fixed_length_tuple_fields_are_typed_per_position() -> None:
    from weaksam.configlib import load_into

    assert load_into(_Pair, None, ["pair=[3, 4.5]"]).pair == (3, 4.5)
    with pytest.raises(ConfigError, match="expected an integer"):
        load_into(_Pair, None, ["pair=[3.5, 4]"])
