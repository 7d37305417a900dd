"""The three-factor rule from Python, one sample at a time (exact modulatory signal).

Each hidden layer learns from its own HSIC-bottleneck objective on a working memory of the
last N samples: the rule writes the local term J_Nᵀ g_N of the newest sample into ``.grad``,
and any ``torch.optim`` optimiser applies it. Nothing is propagated between layers.

    python examples/biohsic_exact.py            # 64-32-16-10 on the bundled 8×8 digits, ~20 s
"""
import sys

import torch
import torch.nn.functional as F

from biohsic import Network, TrainConfig
from biohsic.data import load_task
from biohsic.rules import build_rule
from biohsic.train import evaluate


def main(quick: bool = False) -> float:
    torch.set_num_threads(1)                                     # one sample per step: tiny ops, one thread is fastest
    data = load_task("digits")                                   # scikit-learn's digits, 80/20 split
    config = TrainConfig(task="digits", rule="biohsic", window=8, gamma=10.0, sigmas=(0.5, 0.1, 1.0),
                         lr=1e-3).resolved()
    network = Network([data.n_features, 32, 16, data.n_classes], seeds=[0])
    rule = build_rule(network, config)                           # owns the working memory of N samples
    optimizer = torch.optim.AdamW(rule.trainable_parameters(), lr=config.lr, weight_decay=0.0)
    labels = F.one_hot(data.y_train, data.n_classes).float()
    samples = 200 if quick else len(data.x_train)
    for epoch in range(1 if quick else 4):
        for i in torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(epoch))[:samples]:
            x, y = data.x_train[i].view(1, 1, -1), labels[i].view(1, 1, -1)   # (models, batch, features)
            rule.predict_and_write_grads(x, y)                   # J_Nᵀ g_N per hidden layer, delta rule for the readout
            optimizer.step()
        accuracy, _ = evaluate(network, data.x_test, data.y_test)
        print(f"epoch {epoch + 1}: test accuracy {accuracy.item():.3f}")
    return accuracy.item()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
