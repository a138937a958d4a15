"""Every training loss of aio-reid, as plain functions of tensors.

Part of the remote-code unit (it imports only torch), because `AIOForReIdentification.forward` calls the first
three. The others serve the training stages: `symmetric_info_nce` the text-skip fit, `feature_regression_loss` and
`relation_distillation_loss` the distillation of a teacher into the shared trunk (`bank_relation_distillation_loss`
that of the low-resolution student experiment), `prototype_cross_entropy` the binding of a modality's own trunk to
the photo embeddings, `cosine_identity_cross_entropy` (with `symmetric_info_nce`) the text-alignment heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_cross_entropy(features: list[torch.Tensor], bnneck: torch.nn.Module, classifier: torch.nn.Module,
                  labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Identity cross-entropy behind a BNNeck (Luo et al. 2019), averaged over the given query features."""
    return torch.stack([F.cross_entropy(classifier(bnneck(f)), labels, label_smoothing=label_smoothing)
                        for f in features]).mean()


def supervised_contrastive_binding_loss(
    anchors: torch.Tensor, rgb_features: torch.Tensor, labels: torch.Tensor, temperature: float,
    exclude_self: bool = False,
) -> torch.Tensor:
    """Multimodal feature binding: pull each anchor (an IR, sketch or text feature) toward the RGB features of the
    same identity and away from other identities (supervised contrastive, Khosla et al. 2020). `exclude_self`: the
    anchors are the RGB features themselves, so each one's pair with itself is neither a positive nor a negative."""
    logits = F.normalize(anchors, dim=-1) @ F.normalize(rgb_features, dim=-1).T / temperature
    positives = (labels[:, None] == labels[None, :]).float()
    if exclude_self:
        self_pairs = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits, positives = logits.masked_fill(self_pairs, -1e4), positives.masked_fill(self_pairs, 0.0)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -((log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)).mean()


def masked_attribute_cross_entropy(attribute_logits: torch.Tensor, attribute_labels: torch.Tensor) -> torch.Tensor:
    """Vision-guided masked attribute modelling: cross-entropy over the attribute vocabulary at the masked caption
    positions (`attribute_labels` is -100 elsewhere)."""
    return F.cross_entropy(attribute_logits.flatten(0, 1), attribute_labels.flatten(), ignore_index=-100)


def symmetric_info_nce(queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with identity-level positives: the binding loss in both directions."""
    return (supervised_contrastive_binding_loss(queries, keys, labels, temperature)
            + supervised_contrastive_binding_loss(keys, queries, labels, temperature)) / 2


def feature_regression_loss(projected_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distillation: 1 - cosine between the student's embedding mapped to the teacher's dimension and the
    teacher's embedding (`teacher` unit-length)."""
    return (1 - (F.normalize(projected_student, dim=-1) * teacher).sum(-1)).mean()


def relation_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distillation: each image's softmax over cosine similarities to the rest of the batch follows the teacher's
    (KL divergence); both inputs unit-length. The part of the teacher that retrieval uses: its ranking."""
    self_pairs = torch.eye(len(student), dtype=torch.bool, device=student.device)
    student_logits = (student @ student.T / temperature).masked_fill(self_pairs, -1e4)
    teacher_logits = (teacher @ teacher.T / temperature).masked_fill(self_pairs, -1e4)
    return _softmax_kl(student_logits, teacher_logits)


def bank_relation_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, bank: torch.Tensor,
                                    temperature: float) -> torch.Tensor:
    """Distillation against a bank of the teacher's embeddings (all unit-length): each image's softmax over its
    cosine similarities to the batch's teacher rows and `bank` follows the teacher's own (KL divergence). Unlike
    `relation_distillation_loss` it also asks the student to find its own teacher row first, among thousands of
    other photos rather than one batch."""
    keys = torch.cat([teacher, bank])
    return _softmax_kl(student @ keys.T / temperature, teacher @ keys.T / temperature)


def _softmax_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL divergence of each row's softmax over `student_logits` from the teacher's, averaged over rows."""
    return F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1), log_target=True,
                    reduction="batchmean")


def cosine_identity_cross_entropy(features: list[torch.Tensor], prototypes: torch.Tensor, labels: torch.Tensor,
                                  scale: float, label_smoothing: float) -> torch.Tensor:
    """Text alignment: identity cross-entropy of unit features (text and image sides alike) over their scaled
    cosine similarities to one learned prototype per identity, averaged over the given features. One classifier
    for both sides puts a caption and a photo of one person near the same point."""
    weights = F.normalize(prototypes, dim=-1)
    return torch.stack([F.cross_entropy(scale * f @ weights.T, labels, label_smoothing=label_smoothing)
                        for f in features]).mean()


def prototype_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Trunk binding: cross-entropy of an image's cosine similarities to fixed identity prototypes (over a
    temperature) against its identity."""
    return F.cross_entropy(logits, labels)


__all__ = ["identity_cross_entropy", "supervised_contrastive_binding_loss", "masked_attribute_cross_entropy",
           "symmetric_info_nce", "feature_regression_loss", "relation_distillation_loss", "prototype_cross_entropy",
           "cosine_identity_cross_entropy", "bank_relation_distillation_loss"]
