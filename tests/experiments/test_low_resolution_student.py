"""scripts/low_resolution_student.py: the resized pooling kernel keeps its scale, the student reads only its own
size and learns from a loss with gradients, the fitted map reproduces a linear target, a saved student loads whole,
the collator pairs each mirrored photo with the teacher's mirrored embedding and draws a repeatable bank of teacher
rows, and a distillation run checkpoints and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aio.checkpoint.openvino_port import load_port
from modeling_aio.evaluation.embedder import Embedder
from modeling_aio.experiments import low_resolution_student as lrs


def test_resized_kernel_keeps_each_channels_sum_and_takes_the_new_size():
    kernel = torch.rand(4, 1, 1, 16, 8)
    for size in ((11, 5), (12, 6), (20, 10)):
        resized = lrs.resize_pooling_kernel(kernel, size)
        assert resized.shape == (4, 1, 1, *size)
        torch.testing.assert_close(resized.sum((-2, -1)), kernel.sum((-2, -1)))
    assert torch.equal(lrs.resize_pooling_kernel(kernel, (16, 8)), kernel)


def test_identity_examples_keep_people_with_two_photos():
    assert lrs.identity_examples(["b", "a", "b", "c", "a", "a"]) == [{"indices": [1, 4, 5]}, {"indices": [0, 2]}]


def test_collator_pairs_a_mirrored_photo_with_the_mirrored_teacher_row(tmp_path):
    paths = []
    for index in range(3):
        path = tmp_path / f"p{index}.png"
        pixels = np.zeros((64, 32, 3), np.uint8)
        pixels[:, :16] = 60 * (index + 1)  # left half bright: mirroring moves it right
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    plain = np.arange(3, dtype=np.float16)[:, None].repeat(4, 1)
    mirrored = -plain - 1
    collator = lrs.StudentCollator(paths, plain, mirrored, (32, 16), instances_per_identity=8, seed=3)
    batch = collator([{"indices": [0, 1]}, {"indices": [2]}])
    assert batch["pixel_values"].shape == (16, 3, 32, 16) and batch["teacher_embeds"].shape == (16, 4)
    left, right = batch["pixel_values"][..., :8].mean((1, 2, 3)), batch["pixel_values"][..., 8:].mean((1, 2, 3))
    is_mirrored = right > left
    assert 0 < int(is_mirrored.sum()) < 16
    assert bool(((batch["teacher_embeds"][:, 0] < 0) == is_mirrored).all())
    again = lrs.StudentCollator(paths, plain, mirrored, (32, 16), instances_per_identity=8, seed=3)
    assert torch.equal(again([{"indices": [0, 1]}, {"indices": [2]}])["teacher_embeds"], batch["teacher_embeds"])
    with pytest.raises(ValueError, match="3 photos, 2 plain"):
        lrs.StudentCollator(paths, plain[:2], mirrored, (32, 16))


def test_collator_draws_a_repeatable_bank_of_plain_and_mirrored_teacher_rows(tmp_path):
    paths = []
    for index in range(20):
        Image.new("RGB", (32, 64)).save(tmp_path / f"p{index}.png")
        paths.append(str(tmp_path / f"p{index}.png"))
    plain = np.arange(20, dtype=np.float16)[:, None].repeat(4, 1) + 1
    mirrored = -plain
    batch = lrs.StudentCollator(paths, plain, mirrored, (32, 16), seed=5, bank_size=30)([{"indices": [0, 1]}])
    bank = batch["bank_embeds"]
    assert bank.shape == (30, 4) and len(set(bank[:, 0].tolist())) == 30  # drawn without replacement
    assert (bank[:, 0] > 0).any() and (bank[:, 0] < 0).any()
    again = lrs.StudentCollator(paths, plain, mirrored, (32, 16), seed=5, bank_size=30)([{"indices": [0, 1]}])
    assert torch.equal(again["bank_embeds"], bank)
    assert "bank_embeds" not in lrs.StudentCollator(paths, plain, mirrored, (32, 16))([{"indices": [0]}])
    with pytest.raises(ValueError, match="`bank_size` is 41; it takes 0 to 40"):
        lrs.StudentCollator(paths, plain, mirrored, (32, 16), bank_size=41)


@pytest.mark.slow
def test_student_learns_at_its_size_fits_a_linear_map_and_round_trips(tmp_path):
    torch.manual_seed(0)
    student = lrs.LowResolutionStudent(load_port("omz-0277"), 8, (176, 88))
    pixels = torch.randn(6, 3, 176, 88)
    out = student(pixels, teacher_embeds=torch.randn(6, 8))
    assert out.embeds.shape == (6, 8) and torch.isfinite(out.loss)
    out.loss.backward()
    assert student.port.weights[student.pooling_kernel].grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"this student reads \(176, 88\)"):
        student(torch.randn(2, 3, 256, 128))
    with pytest.raises(ValueError, match="2 rows for 6 images"):
        student(pixels, teacher_embeds=torch.randn(2, 8))

    student.zero_grad()
    features = student.port.embed(pixels).detach()
    mixing = torch.randn(256, 8)
    assert student.fit_search_map([pixels[:3], pixels[3:]], features @ mixing, ridge=1e-6) > 0.999
    with pytest.raises(ValueError, match="6 images for 5 targets"):
        student.fit_search_map([pixels], torch.randn(5, 8))

    student.save_pretrained(tmp_path, {"teacher": "test"})
    loaded = lrs.load_student(tmp_path)
    torch.testing.assert_close(loaded(pixels).embeds, student.eval()(pixels).embeds)
    wider = lrs.load_student(tmp_path, (192, 96))
    assert wider(torch.randn(2, 3, 192, 96)).embeds.shape == (2, 8)

    embedder = Embedder(f"low-res-student:{tmp_path}", 4, tmp_path / "cache")
    assert embedder.image_processor.size == {"height": 176, "width": 88}
    (tmp_path / lrs.WEIGHTS_NAME).unlink()
    with pytest.raises(SystemExit, match="no student.safetensors"):
        Embedder(f"low-res-student:{tmp_path}", 4, tmp_path / "cache")


@pytest.mark.slow
def test_sizes_pool_to_one_embedding_and_a_size_below_one_map_cell_is_refused():
    for size in ((192, 96), (200, 100), (260, 130)):  # the map is (h // 16, w // 16) whether 16 divides or not
        student = lrs.LowResolutionStudent(load_port("omz-0277"), 8, size)
        assert student(torch.randn(1, 3, *size)).embeds.shape == (1, 8)
    with pytest.raises(ValueError, match="24x12"):
        lrs.LowResolutionStudent(load_port("omz-0277"), 8, (24, 12))


@pytest.mark.slow
def test_distillation_trains_the_port_and_the_map_through_trainer(tmp_path):
    paths = []
    for index in range(32):
        path = tmp_path / f"p{index}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    rng = np.random.default_rng(0)
    plain, mirrored = rng.standard_normal((32, 8)).astype(np.float16), rng.standard_normal((32, 8)).astype(np.float16)
    student = lrs.LowResolutionStudent(load_port("omz-0277"), 8, (32, 16))
    before = {name: value.detach().clone() for name, value in student.named_parameters()}
    collator = lrs.StudentCollator(paths, plain, mirrored, (32, 16), instances_per_identity=2, bank_size=24)
    examples = lrs.identity_examples([f"id{i // 2}" for i in range(32)])
    log = lrs.distil_student(student, collator, examples, tmp_path / "trainer", steps=3, warmup_steps=1,
                             save_steps=2)
    assert log[-1]["step"] == 3 and all(np.isfinite(entry["loss"]) for entry in log)
    changed = {name for name, value in student.named_parameters() if not torch.equal(value, before[name])}
    assert "to_search_space.weight" in changed and f"port.weights.{student.pooling_kernel}" in changed
    assert not student.training
    assert sorted(p.name for p in (tmp_path / "trainer").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]

    resumed = lrs.LowResolutionStudent(load_port("omz-0277"), 8, (32, 16))  # fresh: checkpoint-3 restores it
    lrs.distil_student(resumed, collator, examples, tmp_path / "trainer", steps=3, warmup_steps=1, resume=True)
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, student.state_dict()[name])
    with pytest.raises(ValueError, match="16 identities"):
        lrs.distil_student(student, collator, examples[:3], tmp_path / "trainer", steps=1)
