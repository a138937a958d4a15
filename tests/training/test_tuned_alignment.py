"""Towers fine-tuned by `experiments.text_finetune`, installed into a model's text-aligned part."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from modeling_aio import AIOModel
from modeling_aio.training.text_alignment import add_text_alignment
from modeling_aio.training.tuned_alignment import install_tuned_towers, run_tuned_alignment

from conftest import OSNET, TINY_BERT, random_image, tiny_config


def test_the_tuned_part_reads_a_caption_as_minilm_does_and_takes_the_experiment_towers(tmp_path, osnet_processor):
    """A model with its own trunk and a tuned top layer computes, after `install_tuned_towers`, exactly what the
    experiment's towers compute, as long as its text embeddings and lower layers are MiniLM's (as built)."""
    from modeling_aio.experiments.text_finetune import ImageTower, TextTower, Variant, save_towers

    torch.manual_seed(0)
    base = AIOModel(tiny_config(encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, **OSNET)).eval()
    model = add_text_alignment(base, size=8, hidden=16, trunk="tuned", tuned_layers=1)
    assert model.config.text_alignment_channels == 256 and hasattr(model, "text_alignment_rgb_trunk")
    assert torch.equal(model.text_alignment_rgb_trunk.conv1.conv.weight, model.second_rgb_trunk.conv1.conv.weight)
    assert torch.equal(model.text_alignment_text.tuned_layers[0].output.dense.weight,
                       model.encoder.layers.layer[1].output.dense.weight)
    image, text = ImageTower((32, 128, 192, 256), hidden=16, size=8).eval(), TextTower(
        {**TINY_BERT, "vocab_size": model.config.vocab_size}, hidden=16, size=8).eval()
    # the towers' MiniLM is the model's: its embeddings (as build_checkpoint.init_text_tokenizer sets them) and layer 0
    embeddings = text.encoder.embeddings
    tokenizer = model.embeddings.text_tokenizer
    embeddings.word_embeddings.weight.data.copy_(tokenizer.word_embeddings.weight)
    embeddings.position_embeddings.weight.data.copy_(tokenizer.position_embeddings[0])
    embeddings.token_type_embeddings.weight.data.zero_()
    embeddings.LayerNorm.load_state_dict(tokenizer.layer_norm.state_dict())
    embeddings.LayerNorm.eps = tokenizer.layer_norm.eps  # MiniLM's 1e-12 against 1e-5: ~1e-4 on a unit vector
    text.encoder.encoder.layer[0].load_state_dict(model.encoder.layers.layer[0].state_dict())
    for parameter in [*image.parameters(), *text.encoder.encoder.layer[1].parameters(), *text.output.parameters()]:
        parameter.data.add_(0.01 * torch.randn_like(parameter))  # "trained": differs from the model's start
    saved = [image, text.encoder.encoder.layer[1], text.norm, text.expand, text.output]
    for tensor in [t for module in saved for t in module.state_dict().values()]:
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())  # the towers file holds these in fp16
    towers = tmp_path / "towers.safetensors"
    save_towers(image, text, Variant("0267-top1", True, 1), towers, {"rank-1": 1.0})
    assert install_tuned_towers(model, towers)["variant"]["text_layers_trained"] == 1

    photos = [random_image(n, (20, 40)) for n in range(2)]
    inputs = osnet_processor(rgb=photos, text=["a man in a red shirt", "blue jacket"], return_tensors="pt")
    with torch.no_grad():
        model_image = model(pixel_values_rgb=inputs["pixel_values_rgb"]).aligned_embeds
        model_text = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).aligned_embeds
        tower_image = F.normalize(image(inputs["pixel_values_rgb"]), dim=-1)
        tower_text = F.normalize(text(inputs["input_ids"], inputs["attention_mask"].bool()), dim=-1)
    assert torch.allclose(model_image, tower_image, atol=1e-5)
    assert torch.allclose(model_text, tower_text, atol=1e-5)

    other = add_text_alignment(base, size=8, hidden=16, trunk="tuned", tuned_layers=2)
    with pytest.raises(ValueError, match="does not fit"):
        install_tuned_towers(other, towers)  # a file of one tuned layer, a model of two
    with pytest.raises(ValueError, match="own trunk"):
        install_tuned_towers(add_text_alignment(base, size=8, hidden=16, trunk="second_rgb"), towers)


def test_a_file_without_towers_is_refused_before_any_work(tmp_path):
    stray = tmp_path / "stray.safetensors"
    save_file({"x": torch.zeros(1)}, str(stray))
    with pytest.raises(ValueError, match="not a towers file"):
        run_tuned_alignment(tmp_path / "no-checkpoint", stray, tmp_path / "out", tmp_path / "no-split.json")


def test_the_towers_training_is_read_from_its_run_and_a_missing_variant_is_named(tmp_path):
    import json

    from modeling_aio.training.tuned_alignment import towers_run_record

    run = tmp_path / "run.json"
    variant = {"name": "0267-top3-ship", "epochs": 15, "train_captions": 13689, "train_identities": 1937,
               "seconds": 148, "scores": [{"epoch": 15, "rank-1": 36.4}]}
    run.write_text(json.dumps({"device": "NVIDIA H200", "bundle": {"webp_quality": 75},
                               "variants": [{"name": "heads-only", "skipped": "time budget"}, variant]}))
    record = towers_run_record(run, "0267-top3-ship")
    assert record == {"variant_name": "0267-top3-ship", "epochs": 15, "captions": 13689, "identities": 1937,
                      "seconds": 148, "hardware": "NVIDIA H200", "seed": 0, "webp_quality": 75,
                      "scores": [{"epoch": 15, "rank-1": 36.4}]}  # a run from before the seed was written: 0
    with pytest.raises(ValueError, match="no finished variant 'heads-only'"):
        towers_run_record(run, "heads-only")  # skipped, never trained
