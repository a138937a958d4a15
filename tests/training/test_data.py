"""Training data (modeling_aio.training.data): the P x K sampler, the attribute-masking collator, hold-outs."""

from __future__ import annotations


from modeling_aio.training.data import AIOTrainingCollator, IdentityBalancedSampler, MultimodalReIdDataset, hold_out_captions


def test_sampler_gives_p_identities_times_k_from_one_pool():
    labels = [i // 3 for i in range(30)]
    pools = [label < 4 for label in labels]
    sampler = IdentityBalancedSampler(labels, pools, identities_per_batch=2, instances_per_identity=2, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % 4 == 0
    for start in range(0, len(order), 4):
        batch = order[start:start + 4]
        batch_labels = [labels[i] for i in batch]
        assert sorted(set(batch_labels)) and all(batch_labels.count(x) == 2 for x in set(batch_labels))
        assert len({pools[i] for i in batch}) == 1
    assert order == list(IdentityBalancedSampler(labels, pools, 2, 2, seed=1))


def test_collator_masks_attribute_words(processor, training_items, config):
    collator = AIOTrainingCollator(processor, config.attribute_words)
    dataset = MultimodalReIdDataset(training_items)
    batch = collator([dataset[0], dataset[1], dataset[2]])
    assert batch["pixel_values_sketch"].shape == (3, 3, 32, 16) and "input_ids" in batch
    masked = batch["attribute_labels"] >= 0
    assert masked.any()
    assert (batch["masked_input_ids"][masked] == processor.tokenizer.mask_token_id).all()
    words = [config.attribute_words[i] for i in batch["attribute_labels"][masked].tolist()]
    assert set(words) <= {"man", "red", "shirt", "black", "pants", "woman", "long", "hair", "blue", "bag"}
    assert not set(words) & {"a", "in", "and", "with"}
    no_text = collator([dataset[4], dataset[5]])
    assert "input_ids" not in no_text and no_text["labels"].tolist() == [2, 2]


def test_hold_out_captions_keeps_photos_and_returns_the_held_identities(captioned_items):
    kept, held = hold_out_captions(captioned_items, 0.25, seed=0)
    held_ids = {item.label for item in held}
    assert len(held_ids) == 2 and len(held) == 4  # 2 of 8 identities, both of their photos
    assert [i.image for i in kept] == [i.image for i in captioned_items]  # every photo still trains the image paths
    assert all(not i.captions for i in kept if i.label in held_ids)
    assert all(i.captions for i in kept if i.label not in held_ids)
    assert hold_out_captions(captioned_items, 0.25, seed=0)[1] == held  # seeded
