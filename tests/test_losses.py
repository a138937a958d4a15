"""modeling_aio.losses: the distillation losses are zero when the student is the teacher and grow as its ranking
departs from the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modeling_aio.losses import bank_relation_distillation_loss, relation_distillation_loss


def test_relation_losses_vanish_for_the_teacher_and_grow_with_a_wrong_ranking():
    generator = torch.Generator().manual_seed(0)
    teacher = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    bank = F.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    near = F.normalize(teacher + 0.05 * torch.randn(8, 16, generator=generator), dim=-1)
    shuffled = teacher[torch.randperm(8, generator=generator)]  # every image takes another's place
    for loss in (lambda s: relation_distillation_loss(s, teacher, 0.05),
                 lambda s: bank_relation_distillation_loss(s, teacher, bank, 0.05)):
        assert float(loss(teacher)) < 1e-5
        assert 0 < float(loss(near)) < float(loss(shuffled))


def test_bank_loss_asks_each_image_to_find_its_own_teacher_row():
    """Within-batch relations cannot tell a student whose rows are all the same rotation of the teacher's (the
    batch's relations are kept); against the teacher's rows and bank they can."""
    generator = torch.Generator().manual_seed(1)
    teacher = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    bank = F.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
    rotated = teacher @ rotation
    assert float(relation_distillation_loss(rotated, teacher, 0.05)) < 1e-4
    assert float(bank_relation_distillation_loss(rotated, teacher, bank, 0.05)) > 1.0
