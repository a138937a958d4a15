"""Per-modality OSNet trunks (`AIOConfig.osnet_modality_trunks`) and the stage that binds them to photo embeddings."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modeling_aio import AIOForReIdentification, AIOModel
from modeling_aio import MODALITIES
from modeling_aio.training.calibration import choose_skip_scale
from modeling_aio.training.data import TrainingItem, hold_out_identities, hold_out_sketches
from modeling_aio.training.trainer import set_trainable, trainable_state_dict
from modeling_aio.training.trunk_binding import (
    TrunkBindingCollator, TrunkBindingModel, bind_modality_trunk, binding_examples, photo_prototypes,
    trunk_anchor_loss,
)
from processing_aio import AIOImageProcessor, AIOProcessor

from conftest import REPO, tiny_config

SHIPPED = REPO / "weights" / "osnet-0267.safetensors"


def osnet_config(**overrides):
    return tiny_config(**{"image_tokenizer": "osnet", "image_size": (256, 128), "patch_size": 16,
                          "embedding_size": 256, "osnet_embedding_skip": True, "osnet_modality_trunks": ["sketch"],
                          **overrides})


def with_shipped_trunks(model: AIOModel) -> AIOModel:
    weights = load_file(str(SHIPPED))
    model.embeddings.image_backbone.load_state_dict(weights)
    for trunk in model.embeddings.modality_backbones.values():
        trunk.load_state_dict(weights)
    return model


def striped(person: int, seed: int, colour: bool = True) -> Image.Image:
    """A person stand-in whose photos and sketch share horizontal stripes of a per-person period."""
    rows = (np.arange(80)[:, None, None] // (4 * (person + 1))) % 2
    rng = np.random.default_rng(seed)
    tint = rng.integers(60, 255, 3) if colour else np.full(3, 255)
    pixels = rows * tint + rng.integers(0, 40, (80, 40, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture
def sketch_items(tmp_path) -> list[TrainingItem]:
    items = []
    for person in range(3):
        sketch = tmp_path / f"sketch_{person}.png"
        striped(person, 100 + person, colour=False).save(sketch)
        for shot in range(2):
            photo = tmp_path / f"{person}_{shot}.jpg"
            striped(person, person * 10 + shot).save(photo)
            items.append(TrainingItem(str(photo), person + 5, [], str(sketch)))
    return items


def test_modality_trunks_are_validated():
    with pytest.raises(ValueError, match="osnet_modality_trunks"):
        osnet_config(osnet_modality_trunks=["rgb"])
    with pytest.raises(ValueError, match="osnet_modality_trunks"):
        tiny_config(osnet_modality_trunks=["sketch"])  # the conv-stem tokenizer has no trunk to copy


def test_sketch_reads_its_own_trunk_and_the_other_modalities_the_shared_one():
    torch.manual_seed(0)
    model = with_shipped_trunks(AIOModel(osnet_config())).eval()
    assert not any(p.requires_grad for p in model.embeddings.modality_backbones.parameters())
    pixels = torch.randn(2, 3, 256, 128)
    before = {m: model.get_features(**{f"pixel_values_{m}": pixels}) for m in ("rgb", "ir", "sketch")}
    with torch.no_grad():
        model.embeddings.modality_backbones["sketch"].fc[0].weight.mul_(-1.0)
    after = {m: model.get_features(**{f"pixel_values_{m}": pixels}) for m in ("rgb", "ir", "sketch")}
    assert torch.equal(before["rgb"], after["rgb"]) and torch.equal(before["ir"], after["ir"])
    assert (before["sketch"] - after["sketch"]).abs().max() > 1e-2


def test_binding_examples_of_sketch_and_ir(sketch_items):
    examples, photos = binding_examples(sketch_items, "sketch")
    assert [e["labels"] for e in examples] == [0, 1, 2] and not any(e["synthesize"] for e in examples)
    assert [len(p) for p in photos] == [2, 2, 2] and photos[1][0].endswith("1_0.jpg")
    examples, photos = binding_examples(sketch_items, "ir")
    assert len(examples) == 6 and all(e["synthesize"] for e in examples) and len(photos) == 3
    with pytest.raises(ValueError, match="modality"):
        binding_examples(sketch_items, "rgb")


def test_collator_is_repeatable_from_its_seed(sketch_items):
    examples, _ = binding_examples(sketch_items, "ir")
    processor = AIOImageProcessor()
    first = TrunkBindingCollator(processor, "ir", seed=3)(examples)
    again = TrunkBindingCollator(processor, "ir", seed=3)(examples)
    other = TrunkBindingCollator(processor, "ir", seed=4)(examples)
    assert first["pixel_values"].shape == (6, 3, 256, 128) and first["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    with pytest.raises(ValueError, match="modality"):
        TrunkBindingCollator(processor, "text")


def test_binding_model_checks_its_inputs():
    with pytest.raises(ValueError, match="prototypes"):
        TrunkBindingModel(torch.nn.Identity(), torch.randn(4))
    model = with_shipped_trunks(AIOModel(osnet_config())).eval()
    binder = TrunkBindingModel(model.embeddings.modality_backbones["sketch"], torch.randn(3, 256))
    with pytest.raises(ValueError, match="labels"):
        binder(torch.randn(2, 3, 256, 128), labels=torch.tensor([0, 1, 2]))


def test_binding_lowers_the_loss_and_moves_only_that_trunk(sketch_items, tmp_path):
    torch.manual_seed(0)
    model = with_shipped_trunks(AIOModel(osnet_config()))
    processor = AIOImageProcessor()
    examples, photos = binding_examples(sketch_items, "sketch")
    shared_before = {k: v.clone() for k, v in model.embeddings.image_backbone.state_dict().items()}
    prototypes = photo_prototypes(model.embeddings.image_backbone, processor, photos)
    pixels = processor([e["image"] for e in examples], modality="sketch")["pixel_values"]  # the sketches it binds on
    labels = torch.arange(3)
    trunk = model.embeddings.modality_backbones["sketch"]

    def loss() -> float:
        with torch.no_grad():
            return TrunkBindingModel(trunk, prototypes).eval()(pixels, labels).loss.item()

    start = loss()
    log = bind_modality_trunk(model, processor, "sketch", examples, photos, tmp_path / "bind", steps=30,
                              learning_rate=1e-4, batch_size=3, seed=0)
    end = loss()
    assert end < start and log and log[-1]["step"] == 30
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    for name, value in model.embeddings.image_backbone.state_dict().items():
        assert torch.equal(value, shared_before[name]), name
    with pytest.raises(ValueError, match="no trunk of its own"):
        bind_modality_trunk(model, processor, "ir", examples, photos, tmp_path / "ir", steps=1)
    with pytest.raises(ValueError, match="no photos"):
        bind_modality_trunk(model, processor, "sketch", [{**examples[0], "labels": 7}], photos, tmp_path / "x", steps=1)


def test_anchor_loss_is_zero_only_where_the_trunks_agree():
    feature_map, embedding = torch.randn(2, 8, 4, 2), torch.randn(2, 16)
    assert trunk_anchor_loss(feature_map, embedding, feature_map, embedding).abs().item() < 1e-6
    assert trunk_anchor_loss(feature_map + 0.5, embedding, feature_map, embedding).item() > 0.1
    assert trunk_anchor_loss(feature_map, -embedding, feature_map, embedding).item() == pytest.approx(2.0)


@pytest.mark.parametrize("thermal_share, expected", [(0.0, True), (1.0, False)])
def test_collator_marks_the_near_infrared_views_it_anchors(sketch_items, thermal_share, expected):
    examples, _ = binding_examples(sketch_items, "ir")
    real = {**examples[0], "synthesize": False}
    batch = TrunkBindingCollator(AIOImageProcessor(), "ir", seed=1, thermal_share=thermal_share,
                                 anchor_near_infrared=True)(examples + [real])
    assert batch["anchored"].tolist() == [expected] * len(examples) + [False]
    assert "anchored" not in TrunkBindingCollator(AIOImageProcessor(), "ir", seed=1)(examples)
    with pytest.raises(ValueError, match="anchor_near_infrared"):
        TrunkBindingCollator(AIOImageProcessor(), "sketch", anchor_near_infrared=True)
    with pytest.raises(ValueError, match="thermal_style"):
        TrunkBindingCollator(AIOImageProcessor(), "ir", thermal_style="lwir")


def test_anchored_binding_keeps_the_near_infrared_reading_closer_to_the_shared_trunk(sketch_items, tmp_path):
    from processing_aio.synthesis import channel_augment_ir

    processor = AIOImageProcessor()
    examples, photos = binding_examples(sketch_items, "ir")
    views = [channel_augment_ir(Image.open(e["image"]).convert("RGB"), 5) for e in examples]
    pixels = processor(views, modality="ir")["pixel_values"]
    drift = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = with_shipped_trunks(AIOModel(osnet_config(osnet_modality_trunks=["ir", "sketch"])))
        bind_modality_trunk(model, processor, "ir", examples, photos, tmp_path / f"bind-{weight}", steps=8,
                            learning_rate=1e-3, batch_size=6, seed=0, thermal_share=0.5, anchor_weight=weight)
        with torch.no_grad():
            drift[weight] = trunk_anchor_loss(*model.embeddings.modality_backbones["ir"](pixels),
                                              *model.embeddings.image_backbone(pixels)).item()
    assert drift[10.0] < drift[0.0]
    with pytest.raises(ValueError, match="anchor_weight"):
        bind_modality_trunk(model, processor, "ir", examples, photos, tmp_path / "bad", steps=1, anchor_weight=-1)


def test_the_bound_trunk_stays_frozen_in_training_and_is_exported():
    model = AIOForReIdentification(osnet_config(num_identities=3))
    set_trainable(model, "all")
    assert not any(p.requires_grad for p in model.aio.embeddings.modality_backbones.parameters())
    state = trainable_state_dict(model)
    trunk_keys = [k for k in state if k.startswith("embeddings.modality_backbones.sketch.")]
    assert "embeddings.modality_backbones.sketch.fc.1.running_mean" in trunk_keys
    assert len(trunk_keys) == len(model.aio.embeddings.modality_backbones["sketch"].state_dict())
    assert not any(k.startswith("embeddings.image_backbone.") for k in state)
    merged = AIOModel(osnet_config())
    missing, unexpected = merged.load_state_dict(state, strict=False)  # unexpected: the training heads
    assert not set(trunk_keys) & set(unexpected) and not [k for k in missing if ".modality_backbones." in k]


def test_skip_scale_multiplies_only_its_modality_skip():
    model = with_shipped_trunks(AIOModel(osnet_config())).eval()
    pixels = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        model.skip_log_scales[MODALITIES.index("sketch")] = math.log(2.0)
        sketch = model(pixel_values_sketch=pixels)
        rgb = model(pixel_values_rgb=pixels)
        raw = {m: model.embeddings.trunk(m)(pixels)[1] for m in ("rgb", "sketch")}
    assert torch.allclose(sketch.features - sketch.projected_cls, 2.0 * raw["sketch"], atol=1e-4)
    assert torch.allclose(rgb.features - rgb.projected_cls, raw["rgb"], atol=1e-4)


def test_hold_out_sketches_keeps_photos_and_returns_whole_identities(tmp_path):
    items = [TrainingItem(f"p{k}_{s}.jpg", k, [], f"s{k}.png" if k < 10 else None) for k in range(12) for s in range(2)]
    kept, held = hold_out_sketches(items, 0.2, seed=0)
    held_ids = {item.label for item in held}
    assert len(held_ids) == 2 and len(held) == 4 and all(item.real_sketch for item in held)
    assert len(kept) == len(items) and all(i.real_sketch is None for i in kept if i.label in held_ids)
    assert sum(i.real_sketch is not None for i in kept) == 16
    assert hold_out_sketches(items, 0.05, seed=0) == (items, [])  # fewer than two identities: nothing held


@pytest.mark.parametrize("modality", ["sketch", "rgb"])
def test_choose_skip_scale_picks_by_rank1_and_prefers_the_smallest(modality, sketch_items, tokenizer):
    torch.manual_seed(0)
    model = with_shipped_trunks(AIOModel(osnet_config()))
    processor = AIOProcessor(AIOImageProcessor(), tokenizer)
    with torch.no_grad():  # no [CLS] contribution: every scale ranks alike, so the tie goes to 1
        model.projection.weight.zero_()
        model.projection.bias.zero_()
    chosen = choose_skip_scale(model, processor, sketch_items, modality=modality)
    queries = {"sketch": 3, "rgb": 6}[modality]  # rgb: every photo queries the others, and as grayscale IR
    assert chosen["scale"] == 1.0 and chosen["queries"] == queries and chosen["photos"] == 6
    assert chosen["modality"] == modality and chosen["identities"] == 3
    assert model.skip_log_scales.abs().sum() == 0
    with torch.no_grad():  # a loud, random [CLS] drowns the trunk: its skip has to be scaled up to be heard
        torch.nn.init.normal_(model.projection.weight, std=5.0)
    chosen = choose_skip_scale(model, processor, sketch_items, modality=modality)
    index = MODALITIES.index(modality)
    assert chosen["scale"] > 1.0 and chosen["rank1"] >= chosen["rank1_unscaled"]  # > 1: better Rank-1 or mAP
    assert math.isclose(model.skip_log_scales[index].exp().item(), chosen["scale"], rel_tol=1e-3)
    assert model.skip_log_scales.abs().sum() == model.skip_log_scales[index].abs()  # only this scale moved


def test_choose_skip_scale_refuses_other_modalities_and_a_single_person(sketch_items, tokenizer):
    model = with_shipped_trunks(AIOModel(osnet_config()))
    processor = AIOProcessor(AIOImageProcessor(), tokenizer)
    with pytest.raises(ValueError, match="'ir'"):
        choose_skip_scale(model, processor, sketch_items, modality="ir")
    one_person = [item for item in sketch_items if item.label == sketch_items[0].label]
    with pytest.raises(ValueError, match="two identities"):
        choose_skip_scale(model, processor, one_person, modality="rgb")


def test_hold_out_identities_prefers_spare_people_and_never_marked_ones():
    def people(labels, shots=2, captioned=(), sketched=()):
        return [TrainingItem(f"p{k}_{s}.jpg", k, ["a man"] if k in captioned else [],
                             f"s{k}.png" if k in sketched else None) for k in labels for s in range(shots)]
    items = people(range(20), captioned={0, 1}, sketched={2})
    spare = people(range(100, 110)) + people(range(110, 115), shots=1)
    kept, held = hold_out_identities(items, 4, seed=0, spare=spare)
    assert kept is items and len(held) == 8 and {i.label for i in held} <= set(range(100, 110))
    assert hold_out_identities(items, 4, seed=0, spare=spare)[1] == held  # seeded
    kept, held = hold_out_identities(items, 30, seed=0, spare=spare)  # too few spare: a tenth of the training people
    held_ids = {i.label for i in held}
    assert len(held_ids) == 2 and not held_ids & {0, 1, 2} and held_ids <= set(range(20))
    assert len(kept) == len(items) - 4 and not {i.label for i in kept} & held_ids
    assert hold_out_identities(people(range(12)), 30, seed=0) == (people(range(12)), [])  # a tenth is one: nothing
    marked = people(range(20), sketched=set(range(19)))  # one unmarked person: too few to choose on
    assert hold_out_identities(marked, 30, seed=0) == (marked, [])


def write_training_fixture(tmp_path, tokenizer, people: int, sketched: int) -> list[str]:
    """A tiny OSNet-tokenizer checkpoint (`tmp_path/init`) and a PKU-Sketch layout of `people` persons, two photos
    each, the first `sketched` with a sketch (`tmp_path/pku`); returns the `scripts/train.py` arguments for them."""
    torch.manual_seed(0)
    with_shipped_trunks(AIOModel(osnet_config(num_identities=0))).save_pretrained(tmp_path / "init")
    AIOProcessor(AIOImageProcessor(), tokenizer, max_text_length=16).save_pretrained(tmp_path / "init")
    (tmp_path / "pku" / "photo").mkdir(parents=True)
    (tmp_path / "pku" / "sketch").mkdir()
    for pid in range(1, people + 1):
        for camera in ("04", "06"):
            striped(pid % 5, pid * 7 + int(camera)).save(tmp_path / "pku" / "photo" / f"{pid}_{camera}_1.jpg")
        if pid <= sketched:
            striped(pid % 5, pid, colour=False).save(tmp_path / "pku" / "sketch" / f"{pid}.jpg")
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--init", str(tmp_path / "init"),
            "--output-dir", str(tmp_path / "out"), "--dataset", "pku-sketch", "--root", str(tmp_path / "pku"),
            "--max-steps", "1", "--identities-per-batch", "2", "--instances-per-identity", "2", "--trunk-steps", "0"]


@pytest.mark.slow
def test_train_script_chooses_the_rgb_scale_on_people_it_kept_out(tokenizer, tmp_path):
    """`scripts/train.py` with an OSNet skip: a tenth of a 20-person fixture (people with a real sketch are never
    kept out) is kept out of training and chooses the RGB skip's scale, which the exported weights carry."""
    command = write_training_fixture(tmp_path, tokenizer, people=20, sketched=4)
    result = subprocess.run(command + ["--sketch-holdout", "0", "--align-text-steps", "0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 identities no head trains on kept for choosing the RGB skip's scale" in result.stdout
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    chosen = summary["rgb_skip_scale"]
    assert chosen["modality"] == "rgb" and chosen["photos"] == 4 and summary["skip_scale"] is None
    exported = load_file(str(tmp_path / "out" / "aio-reid-trainable.safetensors"))
    assert math.isclose(exported["skip_log_scales"][MODALITIES.index("rgb")].exp().item(), chosen["scale"],
                        rel_tol=1e-2)


def test_sketch_scale_is_chosen_against_distractor_photos_of_other_people(sketch_items, tokenizer, tmp_path):
    """Other people's photos join the sketch gallery (they make the choice harder, and therefore more telling), with
    labels of their own even where the numbers coincide; a held-out photo cannot be one."""
    torch.manual_seed(0)
    model = with_shipped_trunks(AIOModel(osnet_config()))
    processor = AIOProcessor(AIOImageProcessor(), tokenizer)
    distractors = []
    for person in range(3, 5):
        photo = tmp_path / f"other_{person}.jpg"
        striped(person, 50 + person).save(photo)
        distractors.append(TrainingItem(str(photo), person + 4, [], None))  # label 5 or 6: its own label space
    plain = choose_skip_scale(model, processor, sketch_items)
    harder = choose_skip_scale(model, processor, sketch_items, distractors=distractors)
    assert plain["photos"] == 6 and plain["gallery_identities"] == 3
    assert harder["photos"] == 8 and harder["gallery_identities"] == 5 and harder["queries"] == 3
    assert harder["mAP"] <= plain["mAP"] + 1e-6 or harder["scale"] != plain["scale"]
    with pytest.raises(ValueError, match="distractors"):
        choose_skip_scale(model, processor, sketch_items, distractors=sketch_items[:1])
