"""The authors' published modulatory signal beside the exact one (SPEC §3.1).

The authors' code modulates the local term with a signal ξ built from diagonal terms only; it is
not the gradient of the layer objective. This example measures, on random windows of real
digits, how well ξ points along the exact g_N, then trains the same network with each signal.

    python examples/biohsic_paper.py            # ~40 s
"""
import sys

import torch
import torch.nn.functional as F

from biohsic import Network, TrainConfig, Trainer, modulatory_signal
from biohsic.data import load_task


def main(quick: bool = False) -> dict[str, float]:
    data = load_task("digits")
    network = Network([data.n_features, 32, 16, data.n_classes], seeds=[0])
    gen = torch.Generator().manual_seed(0)
    cosines = []
    for _ in range(50):
        idx = torch.randperm(len(data.x_train), generator=gen)[:8]   # a window of N = 8 samples
        x, y = data.x_train[idx], F.one_hot(data.y_train[idx], data.n_classes).float()
        z = network.features(x)[0][0]                                # the first hidden layer's outputs
        exact, paper = (modulatory_signal(x, y, z, gamma=10.0, sigmas=(0.5, 0.1, 1.0), kind=kind)
                        for kind in ("exact", "paper"))
        cosines.append(F.cosine_similarity(exact, paper, dim=0))
    print(f"cosine(ξ, g_N) over 50 windows: median {torch.stack(cosines).median().item():.2f}")
    if quick:
        data = data.first_training_samples(200)
    accuracies = {}
    for kind in ("exact", "paper"):
        config = TrainConfig(task="digits", modulator=kind, epochs=1 if quick else 4)
        accuracies[kind] = Trainer(config, dataset=data).run()["test_accuracy"]
        print(f"modulator {kind}: test accuracy {accuracies[kind]:.3f}")
    return accuracies


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
