"""Readout only: the hidden layers stay at their random initialisation and only the readout
learns. Any rule that claims its hidden layers learn must beat this baseline, with the readout's
learning rate tuned as carefully as the rule's.

The learning rate is chosen on a validation set carved from the training data (never on the
test set), then the chosen setting is retrained on the whole training set and scored on test.

    python examples/readout_only.py             # ~20 s
"""
import dataclasses
import sys

import torch

from biohsic import TrainConfig, Trainer
from biohsic.data import load_task


def main(quick: bool = False) -> float:
    data = load_task("digits")
    if quick:
        data = data.first_training_samples(200)
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(1))
    fit, held_out = order[len(order) // 5:], order[:len(order) // 5]
    tuning = dataclasses.replace(data, x_train=data.x_train[fit], y_train=data.y_train[fit],
                                 x_test=data.x_train[held_out], y_test=data.y_train[held_out])
    epochs = 1 if quick else 15
    scores = {}
    for lr in (1e-3, 1e-2, 3e-2):
        scores[lr] = Trainer(TrainConfig(task="digits", rule="readout", lr=lr, epochs=epochs), dataset=tuning).run()[
            "test_accuracy"]  # the tuning set's "test" split is the validation set
        print(f"lr {lr:g}: validation accuracy {scores[lr]:.3f}")
    best = max(scores, key=scores.get)
    accuracy = Trainer(TrainConfig(task="digits", rule="readout", lr=best, epochs=epochs), dataset=data).run()[
        "test_accuracy"]
    print(f"readout only, lr {best:g} (chosen on validation): test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
