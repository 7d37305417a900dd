"""pHSIC (Pogodin & Latham 2020), the plausible kernelised bottleneck, in its two forms:
minibatches (``phsic``), and one sample at a time with a memory of one previous sample and
running kernel means (``phsic-stream``), on the XOR task.

    python examples/phsic.py                    # ~20 s
"""
import sys

from biohsic import TrainConfig, Trainer
from biohsic.data import load_task


def main(quick: bool = False) -> dict[str, float]:
    data = load_task("xor")
    if quick:
        data = data.first_training_samples(120)
    accuracies = {}
    for rule, extra in (("phsic", dict(batch_size=32, lr=1e-2)), ("phsic-stream", dict(phsic_horizon=100))):
        config = TrainConfig(task="xor", rule=rule, gamma=2.0, phsic_kernel="gaussian", phsic_sigma=5.0,
                             epochs=1 if quick else 10, **extra)
        accuracies[rule] = Trainer(config, dataset=data).run()["test_accuracy"]
        print(f"{rule}: test accuracy {accuracies[rule]:.3f}")
    return accuracies


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
