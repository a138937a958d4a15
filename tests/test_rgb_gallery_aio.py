"""`modeling_aio.rgb_gallery_aio`: the fast RGB gallery encoder is configuration data, computes exactly what the
distilled student it is shipped from computes, lives in the model's search space, survives save/load, and refuses
pixels of another size or a model without one."""

from __future__ import annotations

import pytest
import torch

from modeling_aio import AIOConfig, AIOModel
from modeling_aio.rgb_gallery_aio import OSNET_X1_CHANNELS, AIORGBGalleryEncoder

from conftest import tiny_config


@pytest.mark.parametrize("size", [(48, 20), (64,), (0, 16), (64.0, 32), (True, 16)])
def test_a_gallery_size_that_is_not_two_multiples_of_16_is_refused(size):
    with pytest.raises(ValueError, match="rgb_gallery_image_size"):
        AIOConfig(rgb_gallery_image_size=size)


@pytest.mark.parametrize("blocks, size", [(["conv3.0"], (64, 32)), (["conv5"], (64, 32)), (["conv3.1"], None)])
def test_skipped_blocks_must_be_skippable_and_need_a_gallery_encoder(blocks, size):
    with pytest.raises(ValueError, match="rgb_gallery_skipped_blocks"):
        AIOConfig(rgb_gallery_image_size=size, rgb_gallery_skipped_blocks=blocks)


def test_the_config_knows_the_blocks_osnet_can_skip():
    from modeling_aio.configuration_aio import RGB_GALLERY_SKIPPABLE_BLOCKS
    from modeling_aio.osnet import OSNet

    assert RGB_GALLERY_SKIPPABLE_BLOCKS == OSNet.skippable_blocks


def test_a_model_has_a_gallery_encoder_only_when_its_config_gives_a_size():
    assert AIOConfig().rgb_gallery_image_size is None
    assert not hasattr(AIOModel(tiny_config()), "rgb_gallery_encoder")
    with pytest.raises(ValueError, match="no RGB gallery encoder"):
        AIOModel(tiny_config()).get_rgb_gallery_features(torch.randn(1, 3, 32, 16))


def test_the_encoder_computes_what_the_distilled_student_computes():
    """The student's weights (`experiments.low_resolution_student`, 0277's OSNet at a smaller size) load into the
    encoder by name, and both give the same unit vectors of the same pixels."""
    from modeling_aio.experiments.low_resolution_student import LowResolutionStudent
    from modeling_aio.osnet import OSNet

    torch.manual_seed(0)
    config = tiny_config(rgb_gallery_image_size=(64, 32))
    student = LowResolutionStudent(OSNet(channels=OSNET_X1_CHANNELS), config.search_embedding_size, (64, 32)).eval()
    encoder = AIORGBGalleryEncoder(config).eval()
    encoder.load_state_dict(student.state_dict())
    pixels = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), student(pixels).embeds)


def test_the_model_embeds_rgb_photos_into_its_search_space_and_keeps_the_encoder_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = AIOModel(tiny_config(rgb_gallery_image_size=(64, 32))).eval()
    assert not any(p.requires_grad for p in model.rgb_gallery_encoder.parameters())  # trained apart, by distillation
    pixels = torch.randn(2, 3, 64, 32)
    embeds = model.get_rgb_gallery_features(pixels)
    assert embeds.shape == (2, model.config.search_embedding_size)
    torch.testing.assert_close(embeds.norm(dim=1), torch.ones(2))
    model.save_pretrained(tmp_path / "model")
    loaded = AIOModel.from_pretrained(tmp_path / "model").eval()  # strict: the encoder's weights are all there
    assert loaded.config.rgb_gallery_image_size == (64, 32)
    torch.testing.assert_close(loaded.get_rgb_gallery_features(pixels), embeds)
    with pytest.raises(ValueError, match=r"reads \(B, 3, 64, 32\) pixel values, got \(2, 3, 32, 16\)"):
        model.get_rgb_gallery_features(torch.randn(2, 3, 32, 16))


def test_an_encoder_without_some_blocks_is_the_student_without_them_and_survives_save_and_load(tmp_path):
    from modeling_aio.experiments.low_resolution_student import LowResolutionStudent
    from modeling_aio.osnet import OSNet

    torch.manual_seed(0)
    config = tiny_config(rgb_gallery_image_size=(64, 32), rgb_gallery_skipped_blocks=["conv2.1", "conv4.1"])
    trunk = OSNet(channels=OSNET_X1_CHANNELS, skipped_blocks=("conv2.1", "conv4.1"))
    student = LowResolutionStudent(trunk, config.search_embedding_size, (64, 32)).eval()
    model = AIOModel(config).eval()
    model.rgb_gallery_encoder.load_state_dict(student.state_dict())  # strict: no weights of the skipped blocks
    pixels = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.get_rgb_gallery_features(pixels), student(pixels).embeds)
    model.save_pretrained(tmp_path / "model")
    loaded = AIOModel.from_pretrained(tmp_path / "model").eval()
    assert loaded.config.rgb_gallery_skipped_blocks == ("conv2.1", "conv4.1")
    torch.testing.assert_close(loaded.get_rgb_gallery_features(pixels), model.get_rgb_gallery_features(pixels))
