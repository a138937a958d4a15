"""Real thermal crops (modeling_aio.evaluation.thermal_pairs): the box CSV loads and crops; bad CSVs are named."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from modeling_aio.evaluation.thermal_pairs import (
    BOXES_FILE, PersonBox, cut_pair, jittered, read_boxes, write_boxes,
)

from conftest import SHARED_DATA, random_image


@pytest.fixture
def pairs(tmp_path):
    for side in ("visible", "infrared"):
        (tmp_path / "roadscene" / side).mkdir(parents=True)
        random_image(1 if side == "visible" else 2, (200, 160)).save(tmp_path / "roadscene" / side / "f1.png")
    return tmp_path


def test_boxes_round_trip_and_crop_both_sides(pairs, tmp_path):
    boxes = [PersonBox("roadscene", "f1.png", 50, 20, 40, 80, 1.2, "test"),
             PersonBox("roadscene", "f1.png", 120, 30, 30, 60, 0.7, "train", keep=False)]
    write_boxes(boxes, tmp_path / "boxes.csv")
    assert read_boxes(tmp_path / "boxes.csv", kept_only=False) == boxes
    assert read_boxes(tmp_path / "boxes.csv") == boxes[:1]
    assert read_boxes(tmp_path / "boxes.csv", split="train") == []
    visible, thermal = cut_pair(pairs, boxes[0])
    assert visible.size == thermal.size == (40, 80)
    jittered_visible, _ = cut_pair(pairs, boxes[0], random.Random(3), jitter=0.1)
    assert jittered_visible.size != (40, 80)


def test_jitter_stays_inside_the_frame():
    box = PersonBox("vifb", "x.png", 0, 0, 30, 60, 1.0, "test")
    for seed in range(20):
        left, top, right, bottom = jittered(box, random.Random(seed), 0.2, (32, 64))
        assert 0 <= left < right <= 32 and 0 <= top < bottom <= 64


@pytest.mark.parametrize("content, message", [
    ("source,frame\n", "must have the columns"),
    ("source,frame,x,y,width,height,weight,split,keep\nroadscene,a.png,1,2,wide,40,1.0,test,1\n", r"boxes.csv:2"),
    ("source,frame,x,y,width,height,weight,split,keep\nflir,a.png,1,2,20,40,1.0,test,1\n", "unknown source"),
])
def test_a_bad_box_file_is_named(tmp_path, content, message):
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_boxes(tmp_path / "boxes.csv")


@pytest.mark.skipif(not (SHARED_DATA / "thermal-pairs").is_dir(), reason="../shared thermal pairs are absent")
def test_the_shipped_boxes_cut_real_crops():
    boxes = read_boxes(BOXES_FILE)
    assert len({b.split for b in boxes}) == 2 and len(read_boxes(BOXES_FILE, split="test")) >= 30
    visible, thermal = cut_pair(SHARED_DATA / "thermal-pairs", boxes[0])
    assert isinstance(visible, Image.Image) and visible.size == thermal.size
