"""Feedback alignment and direct feedback alignment: the output error reaches the hidden layers
through fixed random matrices instead of the transposed forward weights.

FA's hallmark is that the forward weights come to align with the feedback: this example prints,
for the top hidden layer, the angle between the readout's weights W and its feedback matrix B
before and after training (90° is no alignment).

    python examples/feedback_alignment.py       # ~15 s
"""
import math
import sys

import torch

from biohsic import TrainConfig, Trainer
from biohsic.data import load_task


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle in degrees between two matrices seen as vectors."""
    cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    return math.degrees(math.acos(cosine.clamp(-1, 1).item()))


def main(quick: bool = False) -> dict[str, float]:
    data = load_task("digits")
    if quick:
        data = data.first_training_samples(200)
    accuracies = {}
    for rule in ("fa", "dfa"):
        trainer = Trainer(TrainConfig(task="digits", rule=rule, lr=3e-3, epochs=1 if quick else 15), dataset=data)
        readout, feedback = trainer.network.readout.weight, trainer.rule.feedback[len(trainer.network.hidden) - 1]
        before = angle(readout, feedback[0])   # both (classes, top width): e B replaces e W
        accuracies[rule] = trainer.run()["test_accuracy"]
        after = angle(readout, feedback[0])
        print(f"{rule}: test accuracy {accuracies[rule]:.3f}; angle(W, B) of the top layer {before:.0f}° → {after:.0f}°")
    return accuracies


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
