"""scripts/low_resolution_student.py: the resized pooling kernel keeps its scale, the student reads only its own
size and learns from a loss with gradients, the fitted map reproduces a linear target, a saved student loads whole,
the collator pairs each mirrored photo with the teacher's mirrored embedding and draws a repeatable bank of teacher
rows, and a distillation run checkpoints and resumes; a student trained from a stage reads that stage's cached input
maps as it reads pixels, and only the layers from that stage on learn. The same for its OSNet trunks (0277 converted,
0267), whose BatchNorm statistics stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aio.checkpoint.openvino_port import load_port
from modeling_aio.evaluation.embedder import Embedder
from modeling_aio.experiments import low_resolution_student as lrs

from conftest import REPO


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


def _photos(tmp_path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = tmp_path / f"p{index}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _first_convolution_weight(port) -> str:
    node = port.nodes[next(n for n in port.nodes if n["op"] == "Convolution")["inputs"][1][0]]
    while node["op"] != "Constant":  # the weight may pass through a Convert
        node = port.nodes[node["inputs"][0][0]]
    return node["attrs"]["name"]


@pytest.mark.slow
def test_a_student_trained_from_a_stage_reads_its_cached_input_maps_as_it_reads_pixels(tmp_path):
    pixels = torch.randn(3, 3, 192, 96)
    shapes = {"conv2": (64, 48, 24), "conv3": (256, 24, 12), "conv4": (384, 12, 6)}
    for stage, shape in shapes.items():
        student = lrs.LowResolutionStudent(load_port("omz-0277"), 8, (192, 96), train_from=stage).eval()
        maps = student.stage_inputs(pixels)
        assert maps.shape == (3, *shape)
        with torch.no_grad():
            torch.testing.assert_close(student(stage_inputs=maps).embeds, student(pixels).embeds)
    out = student(stage_inputs=maps, teacher_embeds=torch.randn(3, 8))
    out.loss.backward()
    assert student.port.weights[student.pooling_kernel].grad.abs().sum() > 0
    assert student.port.weights[_first_convolution_weight(student.port)].grad is None
    with pytest.raises(ValueError, match="either `pixel_values` or `stage_inputs`"):
        student(pixels, stage_inputs=maps)
    with pytest.raises(ValueError, match="either `pixel_values` or `stage_inputs`"):
        student()
    with pytest.raises(ValueError, match="2 rows for 3 images"):
        student(stage_inputs=maps, teacher_embeds=torch.randn(2, 8))
    with pytest.raises(ValueError, match="need a student made with `train_from`"):
        lrs.LowResolutionStudent(load_port("omz-0277"), 8, (192, 96))(stage_inputs=maps)
    with pytest.raises(ValueError, match="`train_from` is 'conv5'"):
        lrs.LowResolutionStudent(load_port("omz-0277"), 8, (192, 96), train_from="conv5")


@pytest.mark.slow
def test_stage_maps_are_cached_whole_and_train_only_the_layers_from_that_stage(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 32)
    student = lrs.LowResolutionStudent(load_port("omz-0277"), 8, (32, 16), train_from="conv3")
    plain_maps, mirrored_maps = lrs.stage_input_cache(student, paths, tmp_path / "maps", batch_size=10)
    assert plain_maps.shape == mirrored_maps.shape == (32, 256, 4, 2) and plain_maps.dtype == np.float16
    assert sorted(f.name.rsplit("-", 1)[-1] for f in (tmp_path / "maps").iterdir()) == ["mirrored.npy", "plain.npy"]
    processor = lrs.AIOImageProcessor(size={"height": 32, "width": 16})
    first = processor([Image.open(paths[0]).convert("RGB")], modality="rgb", return_tensors="pt")["pixel_values"]
    expected = student.stage_inputs(first.flip(-1))[0].numpy()  # mirrored photo: its pixels flipped
    assert np.abs(mirrored_maps[0] - expected).max() <= 0.02 * np.abs(expected).max() + 1e-3  # bf16 autocast
    monkeypatch.setattr(student, "stage_inputs", lambda pixels: pytest.fail("the cache was not reused"))
    again = lrs.stage_input_cache(student, paths, tmp_path / "maps")
    assert np.array_equal(again[0], plain_maps)
    monkeypatch.undo()

    rng = np.random.default_rng(0)
    plain, mirrored = rng.standard_normal((32, 8)).astype(np.float16), rng.standard_normal((32, 8)).astype(np.float16)
    collator = lrs.StudentCollator(paths, plain, mirrored, (32, 16), instances_per_identity=2,
                                   stage_maps=(plain_maps, mirrored_maps))
    batch = collator([{"indices": [0, 1]}])
    assert "pixel_values" not in batch and batch["stage_inputs"].shape == (2, 256, 4, 2)
    for maps, row in zip(batch["stage_inputs"], batch["teacher_embeds"]):
        index = next(i for i in (0, 1) if torch.equal(row, torch.from_numpy(plain[i]).float())
                     or torch.equal(row, torch.from_numpy(mirrored[i]).float()))
        source = plain_maps if torch.equal(row, torch.from_numpy(plain[index]).float()) else mirrored_maps
        assert np.array_equal(maps.numpy(), source[index].astype(np.float32))
    with pytest.raises(ValueError, match="32 photos, 3 plain and 32 mirrored stage maps"):
        lrs.StudentCollator(paths, plain, mirrored, (32, 16), stage_maps=(plain_maps[:3], mirrored_maps))

    before = {name: value.detach().clone() for name, value in student.named_parameters()}
    examples = lrs.identity_examples([f"id{i // 2}" for i in range(32)])
    lrs.distil_student(student, collator, examples, tmp_path / "trainer", steps=2, warmup_steps=1)
    changed = {name for name, value in student.named_parameters() if not torch.equal(value, before[name])}
    assert f"port.weights.{student.pooling_kernel}" in changed and "to_search_space.weight" in changed
    assert f"port.weights.{_first_convolution_weight(student.port)}" not in changed


@pytest.mark.slow
def test_a_0267_student_keeps_its_batchnorm_statistics_and_reads_stage_maps_as_pixels(tmp_path):
    torch.manual_seed(0)
    student = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, (256, 128), train_from="conv3")
    assert not student.osnet.training  # from the start: fitting the map leaves the BatchNorm statistics alone
    pixels = torch.randn(4, 3, 256, 128)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(student.to_search_space(student.osnet(pixels)[1]), dim=-1)
        torch.testing.assert_close(student.eval()(pixels).embeds, reference)
        maps = student.stage_inputs(pixels)
        assert maps.shape == (4, 128, 32, 16)
        torch.testing.assert_close(student(stage_inputs=maps).embeds, reference)
    statistics = student.osnet.conv4[0].conv1.bn.running_mean.clone()
    student.train()
    assert student.training and not student.osnet.training  # BatchNorm keeps its running statistics
    student(stage_inputs=maps, teacher_embeds=torch.randn(4, 8)).loss.backward()
    assert torch.equal(student.osnet.conv4[0].conv1.bn.running_mean, statistics)
    assert student.osnet.conv1.conv.weight.grad is None and student.osnet.conv2[0].conv1.conv.weight.grad is None
    assert student.osnet.conv3[0].conv1.conv.weight.grad.abs().sum() > 0
    below = [k for k in student.osnet.state_dict() if k.split(".")[0] in ("in_first", "conv1", "conv2")]
    assert len(student.frozen_tensors()) == len(below) > 0  # what a stage-input cache's digest covers

    student.save_pretrained(tmp_path, {"teacher": "test"})
    assert lrs.json.loads((tmp_path / lrs.CONFIG_NAME).read_text())["trunk"] == "osnet-0267"
    loaded = lrs.load_student(tmp_path)
    assert loaded.trunk_name == "osnet-0267"
    torch.testing.assert_close(loaded(pixels).embeds, student.eval()(pixels).embeds)
    paths = _photos(tmp_path, 32)
    rng = np.random.default_rng(0)
    plain, mirrored = rng.standard_normal((32, 8)).astype(np.float16), rng.standard_normal((32, 8)).astype(np.float16)
    tiny = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, (32, 16))
    collator = lrs.StudentCollator(paths, plain, mirrored, (32, 16), instances_per_identity=2)
    examples = lrs.identity_examples([f"id{i // 2}" for i in range(32)])
    lrs.distil_student(tiny, collator, examples, tmp_path / "trainer", steps=2, warmup_steps=1, save_steps=1)
    assert (tmp_path / "trainer" / "checkpoint-2" / "model.safetensors").is_file()  # a checkpoint that loads
    maps = []
    tiny.osnet.conv5.register_forward_hook(lambda module, inputs, output: maps.append(output))
    tiny(torch.randn(2, 3, 32, 16))
    assert maps[0].dtype == torch.float32  # trained under bf16 autocast, it runs in float32 afterwards
    smaller = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, (192, 96))
    assert smaller.osnet.global_avgpool.weight.shape[-2:] == (12, 6)
    assert smaller(torch.randn(2, 3, 192, 96)).embeds.shape == (2, 8)
    with pytest.raises(ValueError, match="the student's trunk is 'osnet-9999'"):
        lrs.load_trunk("osnet-9999")


@pytest.mark.slow
def test_0277_as_an_osnet_student_computes_what_its_port_does_and_round_trips(tmp_path):
    pixels = torch.randn(3, 3, 256, 128)
    student = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0277"), 8, (256, 128))
    assert student.trunk_name == "osnet-0277" and student.osnet.channels[0] == 64
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(student.embed(pixels), load_port("omz-0277").embed(pixels))
    assert float(cosine.min()) > 0.9999
    smaller = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0277"), 8, (224, 112), train_from="conv3")
    assert smaller.stage_inputs(torch.randn(2, 3, 224, 112)).shape == (2, 256, 28, 14)
    smaller.osnet.skip_blocks(["conv4.1"])  # `--skip-blocks`: a shallower student, and so it is saved
    smaller.save_pretrained(tmp_path, {})
    assert lrs.json.loads((tmp_path / lrs.CONFIG_NAME).read_text())["skipped_blocks"] == ["conv4.1"]
    loaded = lrs.load_student(tmp_path)
    assert loaded.trunk_name == "osnet-0277" and loaded.image_size == (224, 112)
    assert loaded.osnet.skipped_blocks == ("conv4.1",)
    small_pixels = torch.randn(2, 3, 224, 112)
    torch.testing.assert_close(loaded(small_pixels).embeds, smaller.eval()(small_pixels).embeds)


@pytest.mark.slow
def test_the_int8_graph_is_written_whole_and_scores_as_a_peer(tmp_path):
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    student = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, (64, 32))
    photos = [torch.from_numpy(np.asarray(Image.open(path).convert("RGB").resize((32, 64)), np.float32))
              for path in _photos(tmp_path, 16)]
    pixels = (torch.stack(photos).permute(0, 3, 1, 2) / 255 - 0.45) / 0.225
    student.save_pretrained(tmp_path / "student", {})
    written = lrs.export_int8(student, [pixels[:8], pixels[8:]], tmp_path / "student")
    assert written == tmp_path / "student" / lrs.INT8_NAME and written.with_suffix(".bin").is_file()
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == sorted(
        [lrs.WEIGHTS_NAME, lrs.CONFIG_NAME, lrs.INT8_NAME, "student-int8.bin"])  # no partial file left
    import openvino as ov

    graph = ov.Core().read_model(str(written))
    quantised = {op.get_friendly_name() for op in graph.get_ops() if op.get_type_name() == "FakeQuantize"}
    assert quantised and any("to_search_space" in name for name in quantised)  # int8 up to the map
    embedder = Embedder(f"low-res-student-int8:{tmp_path / 'student'}", 4, tmp_path / "cache")
    assert embedder.image_processor.size == {"height": 64, "width": 32}
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(embedder.baseline(pixels), student.eval()(pixels).embeds)
    assert float(cosine.mean()) > 0.9  # int8, on the photos it was calibrated on
    written.unlink()
    with pytest.raises(SystemExit, match="no student-int8.xml"):
        Embedder(f"low-res-student-int8:{tmp_path / 'student'}", 4, tmp_path / "cache")


def test_balanced_part_scales_give_every_part_the_same_energy_and_fold_back_into_the_map():
    """The scales make each part of the targets (here 4 + 2 + 2 dimensions holding 90%, 7% and 3% of the energy)
    weigh alike; scaling the map into that space and back leaves the student's embedding as it was."""
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((64, 4)) * np.sqrt(0.9 / 4), rng.standard_normal((64, 2)) * np.sqrt(0.07 / 2),
             rng.standard_normal((64, 2)) * np.sqrt(0.03 / 2)]
    targets = np.concatenate(parts, axis=1).astype(np.float16)
    scales = lrs.balanced_part_scales(targets, [4, 2, 2])
    balanced = targets.astype(np.float32) * scales
    energies = [np.square(balanced[:, a:b]).sum(1).mean() for a, b in ((0, 4), (4, 6), (6, 8))]
    np.testing.assert_allclose(energies, [1 / 3] * 3, rtol=1e-4)
    weighted = targets.astype(np.float32) * lrs.balanced_part_scales(targets, [4, 2, 2], [1, 2, 1])
    energies = [np.square(weighted[:, a:b]).sum(1).mean() for a, b in ((0, 4), (4, 6), (6, 8))]
    np.testing.assert_allclose(energies, [0.25, 0.5, 0.25], rtol=1e-4)  # `--part-weights 1,2,1`
    with pytest.raises(ValueError, match="do not add up"):
        lrs.balanced_part_scales(targets, [4, 2])
    with pytest.raises(ValueError, match="one positive weight for each of the 3 parts"):
        lrs.balanced_part_scales(targets, [4, 2, 2], [1, 2])
    torch.manual_seed(0)
    student = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, (64, 32)).eval()
    pixels = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        before = student(pixels).embeds
        student.scale_search_map(torch.from_numpy(scales))
        student.scale_search_map(torch.from_numpy(1 / scales))
        torch.testing.assert_close(student(pixels).embeds, before)


def test_part_weights_without_balanced_parts_are_refused_before_any_work():
    import argparse

    with pytest.raises(ValueError, match="--part-weights sets the ratio of --balance-parts"):
        lrs.run(argparse.Namespace(part_weights=[1.0, 2.0, 1.0], balance_parts=False))


@pytest.mark.slow
def test_the_script_names_part_weights_that_are_not_numbers():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "low_resolution_student.py"), "--part-weights",
                             "1,two,1"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "--part-weights takes comma-separated numbers" in result.stderr
