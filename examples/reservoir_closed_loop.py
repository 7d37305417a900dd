"""The closed loop: reservoirs, not the working memory, supply the modulatory signal.

One reservoir per hidden layer is trained a priori, on a stream unrelated to the task
(label-dependent Gaussian clusters), to output the exact g_N of its window; frozen, it then
drives the three-factor rule on XOR. Each epoch's metrics record how well its signal, and the
update it produces, agree with the exact ones.

    python examples/reservoir_closed_loop.py    # ~30 s on a quiet machine
"""
import dataclasses
import sys
import tempfile
from pathlib import Path

from biohsic import ReservoirConfig, TrainConfig, Trainer
from biohsic.data import load_task
from biohsic.reservoir.closed_loop import layer_file
from biohsic.reservoir.study import LearnSettings, StreamSettings, train_apriori


def main(quick: bool = False) -> float:
    data = load_task("xor")
    if quick:
        data = data.first_training_samples(120)
    run = TrainConfig(task="xor", modulator="reservoir", epochs=1 if quick else 3).resolved()
    folder = Path(tempfile.mkdtemp(prefix="biohsic-reservoirs-"))
    for layer, width in enumerate(run.hidden):
        config = ReservoirConfig(d_x=data.n_features, d_y=data.n_classes, d_z=width, units=100 if quick else 500,
                                 window=run.window, gamma=run.gamma, sigmas=run.sigmas, input_scale=0.01, gain=0.8,
                                 tau=20.0, feedback_scale=0.0, seed=layer)
        stream = StreamSettings(samples=256 if quick else 4096, streams=16, kind="clusters", data_seed=layer,
                                task_seed=layer)
        reservoir, summary = train_apriori(config, stream, LearnSettings(learner="ridge"))
        reservoir.save(layer_file(folder, layer), info=summary)
        print(f"layer {layer}: reservoir of {config.units} units trained a priori (ridge α {summary['alpha']:g})")
    trainer = Trainer(dataclasses.replace(run, reservoir=str(folder)), dataset=data)
    summary = trainer.run()
    last = trainer.history[-1]
    print(f"closed loop on xor: test accuracy {summary['test_accuracy']:.3f}; cosine with the exact update per "
          f"layer {[round(c, 2) for c in last['reservoir_update_cosine']]}")
    return summary["test_accuracy"]


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
