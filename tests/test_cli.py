"""The ``swinlab`` command line: list, profile, and clear errors (exit status 2) on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_close_rel
from swinlab.cli import main


def test_list_shows_every_model_with_params(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("swin_t "))
    assert "28.29M" in line and "Swin-T" in line


def test_list_filters_by_substring_or_pattern(capsys):
    main(["list", "swin_pi"])
    assert capsys.readouterr().out.split()[0] == "swin_pico"
    main(["list", "swin_?_384"])
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["swin_b_384", "swin_l_384"]
    assert main(["list", "no_such_thing"]) == 1


def test_profile_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "pico.json"
    assert main(["profile", "swin_pico", "--json", str(path), "--scaling", "32", "64"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "16×16" in out and "activations" in out
    r = json.loads(path.read_text())
    assert r["name"] == "swin_pico" and r["img_size"] == [32, 32]
    assert r["params"] > 0 and r["macs"] > 0 and r["activation_bytes"] > 0
    assert r["stages"][0]["map_size"] == [16, 16]
    small, large = r["scaling"]
    assert large["attention_entries_per_pixel"] == small["attention_entries_per_pixel"]
    assert large["global_attention_entries_per_pixel"] == 4 * small["global_attention_entries_per_pixel"]


def test_profile_img_size_builds_for_that_size(tmp_path):
    path = tmp_path / "t.json"
    main(["profile", "swin_pico", "--img-size", "48", "64", "--json", str(path)])
    r = json.loads(path.read_text())
    assert r["img_size"] == [48, 64] and r["stages"][0]["map_size"] == [24, 32]


@pytest.mark.parametrize(("argv", "says"), [
    (["profile", "swin_nope"], "swin_nope"),
    (["profile", "swin_pico", "--img-size", "0"], "positive"),
    (["profile", "swin_pico", "--img-size", "1", "2", "3"], "H or H W"),
    (["profile", "swin_pico", "--batch-size", "x"], "positive integer"),
    (["profile", "swin_pico", "--device", "nowhere"], "nowhere"),
])
def test_bad_input_exits_2_with_a_message(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert says in capsys.readouterr().err


def test_convert_a_peer_checkpoint(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from swinlab.weights import load

    peer = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    src = tmp_path / "timm.pth"
    torch.save(peer.state_dict(), src)
    out = tmp_path / "swin_t.safetensors"
    assert main(["convert", str(src), str(out), "--source", "timm"]) == 0
    ours = load(out).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_rel(ours(x), peer(x), what="logits")
    with pytest.raises(SystemExit) as e:  # the wrong variant: every mismatching key is named
        main(["convert", str(src), str(tmp_path / "s.safetensors"), "--source", "timm", "--model", "swin_s"])
    assert e.value.code == 2
    assert "missing from the checkpoint" in capsys.readouterr().err
