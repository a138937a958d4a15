"""Shipping the text-aligned part into the trained weights (`modeling_aio.training.ship_alignment`)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_aio import AIOModel
from modeling_aio.training.ship_alignment import branch_tuned_trunk, ship_text_alignment
from modeling_aio.training.text_alignment import add_text_alignment

from conftest import OSNET, TINY_BERT, random_image, tiny_config


@pytest.fixture
def aligned_model() -> AIOModel:
    torch.manual_seed(0)
    return AIOModel(tiny_config(text_alignment_size=8, text_alignment_hidden=16, **OSNET)).eval()


def test_ship_adds_the_part_to_the_trainable_weights(aligned_model, tmp_path):
    aligned_model.alignment_shares.copy_(torch.tensor([0.1, 0.8, 0.5, 0.6]))
    aligned_model.save_pretrained(tmp_path / "aligned")
    (tmp_path / "aligned" / "text_alignment_summary.json").write_text(json.dumps(
        {"epochs": 2, "shares": {"rgb": 0.1, "rgb_rank1_map": {"0.0": [90.0, 80.0], "0.1": [91.0, 81.0]}}}))
    trainable = tmp_path / "weights" / "aio-reid-trainable.safetensors"
    trainable.parent.mkdir()
    save_file({"projection.weight": torch.zeros(2, 2, dtype=torch.float16)}, str(trainable), metadata={"format": "pt"})
    trainable.with_suffix(".json").write_text(json.dumps({"trained_modules": ["projection"]}))
    (trainable.parent / "training_summary.json").write_text(json.dumps({"steps": 1}))
    added = ship_text_alignment(tmp_path / "aligned", trainable)
    weights = load_file(str(trainable))
    assert added == len([k for k in weights if k != "projection.weight"])
    assert weights["alignment_shares"].dtype == torch.float32
    assert weights["alignment_shares"].tolist() == pytest.approx([0.1, 0.8, 0.5, 0.6])
    assert all(v.dtype == torch.float16 for k, v in weights.items() if k != "alignment_shares")
    shapes = json.loads(trainable.with_suffix(".json").read_text())
    assert shapes["text_alignment_size"] == 8 and "text_alignment_text" in shapes["trained_modules"]
    shipped = json.loads((trainable.parent / "training_summary.json").read_text())["text_alignment_heads"]
    assert shipped == {"epochs": 2, "shares": {"rgb": 0.1, "rgb_rank1_map_at_share": [91.0, 81.0]}}
    with pytest.raises(ValueError, match="no text-aligned part"):
        AIOModel(tiny_config(**OSNET)).save_pretrained(tmp_path / "plain")
        ship_text_alignment(tmp_path / "plain", trainable)
    # a part read from the second RGB trunk ships only into weights that ship that trunk
    second = add_text_alignment(AIOModel(tiny_config(second_rgb_trunk_share=0.3, **OSNET)), size=8, hidden=16,
                                trunk="second_rgb")
    second.save_pretrained(tmp_path / "second")
    before = trainable.read_bytes()
    with pytest.raises(ValueError, match="ship_second_rgb_trunk"):
        ship_text_alignment(tmp_path / "second", trainable)
    assert trainable.read_bytes() == before  # refused before anything was written
    trainable.with_suffix(".json").write_text(json.dumps({"second_rgb_trunk_share": 0.3}))
    ship_text_alignment(tmp_path / "second", trainable)
    assert json.loads(trainable.with_suffix(".json").read_text())["text_alignment_trunk"] == "second_rgb"


def _shipped_beside_a_second_trunk(aligned, base: AIOModel, tmp_path) -> tuple[dict, dict]:
    """(trainable weights, shapes) after `ship_text_alignment(aligned)` into trained weights holding `base`'s
    projection and a second RGB trunk of share 0.3, as the shipped ones do."""
    trainable = tmp_path / "weights" / "aio-reid-trainable.safetensors"
    trainable.parent.mkdir()
    save_file({"projection.weight": base.projection.weight.half()}, str(trainable))
    trainable.with_suffix(".json").write_text(json.dumps({"trained_modules": ["projection"],
                                                          "second_rgb_trunk_share": 0.3}))
    ship_text_alignment(aligned, trainable)
    return load_file(str(trainable)), json.loads(trainable.with_suffix(".json").read_text())


def test_a_tuned_part_ships_its_trunk_and_layers_and_builds_back(tmp_path, osnet_processor):
    torch.manual_seed(0)
    base = AIOModel(tiny_config(encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, **OSNET)).eval()
    tuned = add_text_alignment(base, size=8, hidden=16, trunk="tuned", tuned_layers=1)
    tuned.alignment_shares.copy_(torch.tensor([0.1, 0.9, 0.5, 0.6]))
    with torch.no_grad():
        tuned.text_alignment_rgb_trunk.conv1.conv.weight.mul_(1.5)  # "trained" away from 0267
    tuned.save_pretrained(tmp_path / "tuned")
    weights, shapes = _shipped_beside_a_second_trunk(tmp_path / "tuned", base, tmp_path)
    assert shapes["text_alignment_trunk"] == "tuned" and shapes["text_alignment_tuned_layers"] == 1
    assert "text_alignment_rgb_trunk" in shapes["trained_modules"]
    assert any(k.startswith("text_alignment_text.tuned_layers.0.") for k in weights)
    # what a build does with them: a model of those shapes, the trained tensors over it
    rebuilt = AIOModel(tiny_config(encoder_config=TINY_BERT, **OSNET, **{
        k: v for k, v in shapes.items() if k != "trained_modules"})).eval()
    rebuilt.load_state_dict({**base.state_dict(), **{k: v.float() for k, v in weights.items()}}, strict=False)
    inputs = osnet_processor(rgb=[random_image(1, (20, 40))], text=["a red shirt"], return_tensors="pt")
    with torch.no_grad():
        for query in ({"pixel_values_rgb": inputs["pixel_values_rgb"]},
                      {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}):
            assert torch.allclose(rebuilt(**query).embeds, tuned(**query).embeds, atol=2e-3)  # fp16 weights


@pytest.mark.parametrize("changed", ["conv4", "conv2"])
def test_a_trunk_tuned_from_a_stage_ships_as_a_branch_of_the_second_trunk(tmp_path, osnet_processor, changed):
    """`--tune-trunk-from conv4`: when the trunk's stages below conv4 are still the second trunk's, only conv4 and
    conv5 ship and the built model branches them from the second trunk's conv3 (same vectors, one trunk less);
    when a lower stage changed (conv2), the trunk ships whole."""
    torch.manual_seed(0)
    base = AIOModel(tiny_config(encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, **OSNET)).eval()
    tuned = add_text_alignment(base, size=8, hidden=16, trunk="tuned")
    tuned.alignment_shares.copy_(torch.tensor([0.1, 0.9, 0.5, 0.6]))
    with torch.no_grad():
        getattr(tuned.text_alignment_rgb_trunk, changed)[0].conv1.conv.weight.mul_(1.5)  # "trained"
    tuned.save_pretrained(tmp_path / "tuned")
    (tmp_path / "tuned" / "text_alignment_summary.json").write_text(json.dumps({"trunk_from": "conv4"}))
    weights, shapes = _shipped_beside_a_second_trunk(tmp_path / "tuned", base, tmp_path)
    trunk_keys = {k.split(".")[1] for k in weights if k.startswith("text_alignment_rgb_trunk.")}
    if changed == "conv4":
        assert shapes["text_alignment_trunk_from"] == "conv4" and trunk_keys == {"conv4", "conv5"}
    else:
        assert "text_alignment_trunk_from" not in shapes and {"conv1", "conv2", "fc"} <= trunk_keys
    rebuilt = AIOModel(tiny_config(encoder_config=TINY_BERT, **OSNET, **{
        k: v for k, v in shapes.items() if k != "trained_modules"})).eval()
    missing, _ = rebuilt.load_state_dict({**base.state_dict(), **{k: v.float() for k, v in weights.items()}},
                                         strict=False)
    assert not [k for k in missing if k.startswith("text_alignment_rgb_trunk.")]
    inputs = osnet_processor(rgb=[random_image(1, (20, 40))], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(rebuilt(pixel_values_rgb=inputs["pixel_values_rgb"]).embeds,
                              tuned(pixel_values_rgb=inputs["pixel_values_rgb"]).embeds, atol=2e-3)


def test_a_shipped_whole_tuned_trunk_branches_from_a_stage_of_the_second_trunk(tmp_path, osnet_processor):
    """`branch_tuned_trunk(conv3)` on a tuned trunk trained whole: its stages from conv3 up stay and read the
    second trunk's conv2 map; the built model equals the tuned one with the second trunk's lower stages."""
    torch.manual_seed(0)
    base = AIOModel(tiny_config(encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, **OSNET)).eval()
    tuned = add_text_alignment(base, size=8, hidden=16, trunk="tuned")
    tuned.alignment_shares.copy_(torch.tensor([0.1, 0.9, 0.5, 0.6]))
    with torch.no_grad():  # "trained" below and above the branch
        tuned.text_alignment_rgb_trunk.conv2[0].conv1.conv.weight.mul_(1.5)
        tuned.text_alignment_rgb_trunk.conv4[0].conv1.conv.weight.mul_(1.5)
    tuned.save_pretrained(tmp_path / "tuned")
    _, shapes = _shipped_beside_a_second_trunk(tmp_path / "tuned", base, tmp_path)
    assert "text_alignment_trunk_from" not in shapes
    trainable = tmp_path / "weights" / "aio-reid-trainable.safetensors"
    summary = trainable.parent / "training_summary.json"
    summary.write_text(json.dumps({"text_alignment_heads": {"epochs": 2}}))
    dropped = branch_tuned_trunk(trainable, "conv3")
    weights, shapes = load_file(str(trainable)), json.loads(trainable.with_suffix(".json").read_text())
    assert dropped > 0 and shapes["text_alignment_trunk_from"] == "conv3"
    assert {k.split(".")[1] for k in weights if k.startswith("text_alignment_rgb_trunk.")} == {"conv3", "conv4", "conv5"}
    assert json.loads(summary.read_text())["text_alignment_heads"]["branched_from"] == "conv3"
    rebuilt = AIOModel(tiny_config(encoder_config=TINY_BERT, **OSNET, **{
        k: v for k, v in shapes.items() if k != "trained_modules"})).eval()
    missing, _ = rebuilt.load_state_dict({**base.state_dict(), **{k: v.float() for k, v in weights.items()}},
                                         strict=False)
    assert not [k for k in missing if k.startswith("text_alignment_rgb_trunk.")]
    expected = tuned
    with torch.no_grad():  # the tuned trunk with the plain second trunk below conv3
        for name in ("in_first", "conv1", "conv2"):
            getattr(expected.text_alignment_rgb_trunk, name).load_state_dict(
                getattr(expected.second_rgb_trunk, name).state_dict())
    pixels = osnet_processor(rgb=[random_image(1, (20, 40))], return_tensors="pt")["pixel_values_rgb"]
    with torch.no_grad():
        assert torch.allclose(rebuilt(pixel_values_rgb=pixels).embeds, expected(pixel_values_rgb=pixels).embeds,
                              atol=2e-3)
    before = trainable.read_bytes(), trainable.with_suffix(".json").read_text()
    with pytest.raises(ValueError, match="already branches from conv3"):
        branch_tuned_trunk(trainable, "conv2")
    with pytest.raises(ValueError, match="must be one of"):
        branch_tuned_trunk(trainable, "conv9")
    assert (trainable.read_bytes(), trainable.with_suffix(".json").read_text()) == before  # nothing written
    branch_tuned_trunk(trainable, "conv4")  # a higher stage drops conv3 too
    assert {k.split(".")[1] for k in load_file(str(trainable)) if k.startswith("text_alignment_rgb_trunk.")} == {
        "conv4", "conv5"}


def test_branching_needs_a_tuned_trunk_and_a_second_trunk(tmp_path):
    trainable = tmp_path / "aio-reid-trainable.safetensors"
    save_file({"projection.weight": torch.zeros(2, 2)}, str(trainable))
    with pytest.raises(ValueError, match="is missing"):
        branch_tuned_trunk(trainable, "conv3")
    trainable.with_suffix(".json").write_text(json.dumps({"text_alignment_size": 8, "text_alignment_trunk": "shared"}))
    with pytest.raises(ValueError, match="no tuned trunk"):
        branch_tuned_trunk(trainable, "conv3")
    trainable.with_suffix(".json").write_text(json.dumps({"text_alignment_size": 8, "text_alignment_trunk": "tuned"}))
    with pytest.raises(ValueError, match="second RGB trunk"):
        branch_tuned_trunk(trainable, "conv3")
