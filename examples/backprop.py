"""Back-propagation in the same harness: the baseline every local rule is judged against.

Every rule writes its update into ``.grad``, so the optimiser is yours to choose: here SGD with
Nesterov momentum on minibatches of 32, in a hand-written loop, then the library's trainer
(AdamW) on the same network for comparison.

    python examples/backprop.py                 # ~10 s
"""
import sys

import torch
import torch.nn.functional as F

from biohsic import Network, TrainConfig, Trainer
from biohsic.data import load_task
from biohsic.rules import build_rule
from biohsic.train import evaluate


def main(quick: bool = False) -> float:
    data = load_task("digits")
    if quick:
        data = data.first_training_samples(200)
    epochs = 1 if quick else 15
    config = TrainConfig(task="digits", rule="bp", batch_size=32, epochs=epochs).resolved()
    network = Network([data.n_features, 32, 16, data.n_classes], seeds=[0])
    rule = build_rule(network, config)
    optimizer = torch.optim.SGD(rule.trainable_parameters(), lr=0.1, momentum=0.9, nesterov=True)
    labels = F.one_hot(data.y_train, data.n_classes).float()
    for epoch in range(epochs):
        order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(config.batch_size):
            rule.predict_and_write_grads(data.x_train[batch].unsqueeze(0), labels[batch].unsqueeze(0))
            optimizer.step()
    accuracy = evaluate(network, data.x_test, data.y_test)[0].item()
    print(f"bp + SGD (Nesterov): test accuracy {accuracy:.3f}")
    adamw = Trainer(config, dataset=data).run()["test_accuracy"]
    print(f"bp + AdamW (the trainer): test accuracy {adamw:.3f}")
    return accuracy


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
