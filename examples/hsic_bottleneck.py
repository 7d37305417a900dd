"""The HSIC bottleneck (Ma, Lewis & Kleijn 2020): each layer descends its own objective on a
minibatch, the plain estimator or the authors' normalised one.

The per-epoch metrics hold each hidden layer's HSIC(X, Z) and HSIC(Y, Z) on fixed test windows:
the bottleneck squeezes the first and keeps the second.

    python examples/hsic_bottleneck.py          # ~30 s
"""
import sys

from biohsic import TrainConfig, Trainer
from biohsic.data import load_task


def main(quick: bool = False) -> dict[str, float]:
    data = load_task("digits")
    if quick:
        data = data.first_training_samples(200)
    accuracies = {}
    for normalized in (False, True):
        config = TrainConfig(task="digits", rule="hsic", hsic_normalized=normalized, batch_size=64,
                             lr=3e-3, epochs=1 if quick else 10)
        trainer = Trainer(config, dataset=data)
        summary = trainer.run()
        name = "normalised" if normalized else "plain"
        last = trainer.history[-1]
        print(f"{name} HSIC: test accuracy {summary['test_accuracy']:.3f}; per layer "
              f"HSIC(X,Z) {[round(v, 4) for v in last['hsic_xz']]}, HSIC(Y,Z) {[round(v, 4) for v in last['hsic_yz']]}")
        accuracies[name] = summary["test_accuracy"]
    return accuracies


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
