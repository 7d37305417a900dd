"""The CIFAR-10 path end to end on tiny batches written here: random crop and flip against a
loop written from their definition, seeded per model and epoch, applied to training samples
only; a conv network trained on the batches; the test set never augmented."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biohsic.config import TrainConfig
from biohsic.data.augment import CROP_PADDING, Augmentation, crop_and_flip, draw_augmentation
from biohsic.errors import BiohsicError
from biohsic.train import Trainer, evaluate, sample_order
from test_data import cifar_batches, write_cifar  # the CIFAR-10 batch writer of the data tests

SHAPE = (3, 32, 32)


def reference_crop_and_flip(image: torch.Tensor, row: int, col: int, flip: bool, pad: int) -> torch.Tensor:
    """One image (C, H, W): zero-pad by ``pad``, crop H×W at (row, col), mirror left-right if ``flip``."""
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * pad, width + 2 * pad, dtype=image.dtype)
    padded[:, pad:pad + height, pad:pad + width] = image
    out = torch.empty_like(image)
    for i in range(height):
        for j in range(width):
            source = width - 1 - j if flip else j
            out[:, i, j] = padded[:, row + i, col + source]
    return out


@pytest.mark.parametrize("shape,pad", [((3, 6, 5), 2), ((1, 4, 4), 1), ((2, 5, 7), 4)])
def test_crop_and_flip_follows_its_definition(shape, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, int(np.prod(shape)), generator=gen)
    draws = Augmentation(torch.randint(2 * pad + 1, (2, 5, 2), generator=gen), torch.rand(2, 5, generator=gen) < 0.5)
    out = crop_and_flip(x, shape, draws, pad)
    for k in range(2):
        for s in range(5):
            row, col = draws.offsets[k, s].tolist()
            expected = reference_crop_and_flip(x[k, s].reshape(shape), row, col, bool(draws.flips[k, s]), pad)
            torch.testing.assert_close(out[k, s].reshape(shape), expected, rtol=0, atol=0)


def test_a_centred_unflipped_crop_is_the_image():
    x = torch.randn(3, int(np.prod(SHAPE)))
    centred = Augmentation(torch.full((3, 2), CROP_PADDING), torch.zeros(3, dtype=torch.bool))
    assert torch.equal(crop_and_flip(x, SHAPE, centred), x)


def test_draws_are_seeded_per_model_and_epoch():
    both = draw_augmentation([3, 4], epoch=1, n=200)
    alone = draw_augmentation([4], epoch=1, n=200)
    assert torch.equal(both.offsets[1], alone.offsets[0]) and torch.equal(both.flips[1], alone.flips[0])
    assert not torch.equal(both.offsets[0], both.offsets[1])
    again = draw_augmentation([3, 4], epoch=1, n=200)
    assert torch.equal(again.offsets, both.offsets) and torch.equal(again.flips, both.flips)
    assert not torch.equal(draw_augmentation([3], epoch=2, n=200).offsets[0], both.offsets[0])
    assert both.offsets.min() == 0 and both.offsets.max() == 2 * CROP_PADDING
    assert 0.3 < both.flips.double().mean() < 0.7


def cifar_config(tmp_path: Path, **fields) -> TrainConfig:
    write_cifar(tmp_path / "cifar-10-batches-py", cifar_batches(n=6))
    values = dict(task="cifar10", data_dir=str(tmp_path), arch="conv2-pool4-conv3s2-pool2-fc", window=3, epochs=2,
                  seeds=2, val_fraction=0.0, lr=1e-3, batch_size=4)
    values.update(fields)
    return TrainConfig(**values)


@pytest.mark.parametrize("rule", ["biohsic", "bp"])
def test_cifar10_trains_on_augmented_training_images_and_tests_on_plain_ones(tmp_path, rule):
    trainer = Trainer(cifar_config(tmp_path, rule=rule))
    assert trainer.config.augment and trainer.data.input_shape == SHAPE
    seen: list[torch.Tensor] = []
    train_chunk = trainer.engine.train_chunk

    def recording(x, y):
        seen.append(x.clone())
        return train_chunk(x, y)

    trainer.engine.train_chunk = recording
    summary = trainer.run()
    assert summary["status"] == "completed"
    steps = trainer.steps_per_epoch * trainer.rule.batch_size
    assert len(seen) == 2  # one chunk per epoch
    for epoch, got in enumerate(seen):
        order = torch.stack([sample_order(s, epoch, len(trainer.x_train), trainer.device) for s in trainer.seeds])
        plain = trainer.x_train[order[:, :steps]]
        expected = crop_and_flip(plain, SHAPE, draw_augmentation(trainer.seeds, epoch, steps))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert not torch.equal(got, plain)
    accuracy, _ = evaluate(trainer.network, trainer.x_test, trainer.y_test)
    assert summary["per_model"]["test_accuracy"] == accuracy.tolist()


def test_the_same_seed_gives_the_same_run_and_no_augment_another(tmp_path):
    first = Trainer(cifar_config(tmp_path, rule="biohsic"))
    first.run()
    second = Trainer(cifar_config(tmp_path, rule="biohsic"))
    second.run()
    plain = Trainer(cifar_config(tmp_path, rule="biohsic", augment=False))
    plain.run()
    for a, b, c in zip(first.network.parameters(), second.network.parameters(), plain.network.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(first.network.parameters(), plain.network.parameters()))


def test_augmenting_inputs_that_are_not_images_is_refused(tmp_path):
    with pytest.raises(BiohsicError, match="--augment crops and flips images"):
        Trainer(TrainConfig(task="xor", augment=True, epochs=1))
