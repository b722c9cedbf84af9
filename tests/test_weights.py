"""Checkpoint I/O: safetensors round trip with the config inside, checked loading, safe unpickling."""

import pickle

import pytest
import torch

import swinlab
from conftest import assert_close_rel, randomize_
from swinlab.weights import CheckpointError, convert, infer_swin_config, load, read_state_dict, save


def test_safetensors_round_trip_rebuilds_the_model(tmp_path):
    model = randomize_(swinlab.create_model("swin_pico", position="abs+rel", num_classes=4))
    path = save(model, tmp_path / "m.safetensors", metadata={"classes": "a,b,c,d"})
    loaded = load(path).eval()
    assert loaded.config == model.config
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    _, meta = read_state_dict(path)
    assert meta["classes"] == "a,b,c,d" and "swinlab.config" in meta
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_load_with_overrides_changes_the_config_not_the_weights(tmp_path):
    model = swinlab.create_model("swin_pico")
    path = save(model, tmp_path / "m.safetensors")
    other = load(path, img_size=64)
    assert other.config.img_size == (64, 64)
    assert torch.equal(other.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_wrong_checkpoint_names_key_and_both_shapes(tmp_path):
    path = save(swinlab.create_model("swin_pico", num_classes=4), tmp_path / "m.safetensors")
    target = swinlab.create_model("swin_pico", num_classes=10)
    with pytest.raises(CheckpointError, match=r"head.weight: checkpoint \(4, 64\) vs model \(10, 64\)"):
        load(path, target)
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        load(path, swinlab.create_model("swin_pico", depths=(2, 4), num_classes=4))


def test_pickled_checkpoints_load_only_plain_tensors(tmp_path):
    model = swinlab.create_model("swin_pico")
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, good)
    loaded = load(good, swinlab.create_model("swin_pico"))
    assert torch.equal(loaded.state_dict()["head.bias"], model.state_dict()["head.bias"])

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    def plain_pickle(obj, path):
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i, dump in enumerate([torch.save, plain_pickle]):
        evil = tmp_path / f"evil{i}.pth"
        dump({"model": model.state_dict(), "x": Payload()}, evil)
        with pytest.raises(CheckpointError, match=r"will not unpickle.*GLOBAL"):
            load(evil, swinlab.create_model("swin_pico"))


def test_corrupt_and_missing_files_are_named(tmp_path):
    path = save(swinlab.create_model("swin_pico"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load(junk, swinlab.create_model("swin_pico"))
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save(swinlab.create_model("swin_pico"), tmp_path / "m.bin")


def test_an_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model = swinlab.create_model("swin_pico")
    path = save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("swinlab.weights.io.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save(randomize_(swinlab.create_model("swin_pico")), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize(("name", "overrides"), [("swin_t", {}), ("swin_b_384", {}), ("swin_pico", {}),
                                                 ("swin_micro_28", {}), ("swin_pico", {"stem": "conv"}),
                                                 ("swin_t", {"stem": "conv"}),
                                                 ("swinv2_pico", {"stem": "conv"})])
def test_infer_config_from_a_state_dict(name, overrides):
    with torch.device("meta"):
        model = swinlab.create_model(name, **overrides)
    v2 = {"window_size": model.config.window_size} if model.config.attention == "cosine" else {}
    cfg = infer_swin_config(model.state_dict(), img_size=model.config.img_size,
                            drop_path_rate=model.config.drop_path_rate, **v2)
    assert cfg == model.config


def test_foreign_checkpoint_loads_without_naming_the_variant(tmp_path):
    timm = pytest.importorskip("timm")
    theirs = randomize_(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False))
    path = tmp_path / "timm.pth"
    torch.save(theirs.state_dict(), path)
    ours = load(path, source="timm").eval()
    assert ours.config.depths == (2, 2, 6, 2) and ours.config.num_heads == (3, 6, 12, 24)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_rel(ours(x), theirs(x), what="logits")


def test_convert_rejects_unknown_sources_and_non_state_dicts():
    with pytest.raises(ValueError, match="unknown source"):
        convert({"a": torch.zeros(1)}, "caffe")
    with pytest.raises(ValueError, match="holds no tensors"):
        convert({"epoch": 3}, "timm")
