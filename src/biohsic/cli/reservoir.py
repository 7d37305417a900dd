"""The ``biohsic reservoir`` command: train the working-memory reservoir a priori, evaluate
it frozen, run the capacity study and measure its memory capacity (SPEC §4).

:func:`add_reservoir_commands` adds the command to the ``biohsic`` parser; each sub-command
sets ``func(args) -> int``. Errors a user can cause raise :class:`biohsic.errors.BiohsicError`,
which the ``biohsic`` entry point prints as one line (exit code 2).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

from ..config import DTYPES, TrainConfig
from ..data import load_task
from ..errors import ConfigError
from ..reservoir import FORCE_ALPHA, Reservoir, ReservoirConfig
from ..reservoir.closed_loop import layer_file
from ..reservoir.study import (CAPACITY_UNITS, CAPACITY_WINDOWS, RIDGE_ALPHAS, STREAM_KINDS, TASK_STREAMS, CapacityRow,
                               LearnSettings, StreamSettings, capacity_study, evaluate_frozen,
                               reservoir_memory_capacity, train_apriori, write_capacity)
from ..runs import OutputFileLock, RunFolderLock
from ..train import layer_widths
from .options import device_name, number_list


def _add_sizes(p: argparse.ArgumentParser, layer_dim_required: bool) -> None:
    g = p.add_argument_group("sizes and target")
    g.add_argument("--input-dim", type=int, default=64, help="network input size d_x (default 64, the digits task)")
    g.add_argument("--classes", type=int, default=10, help="number of classes d_y (default 10)")
    g.add_argument("--layer-dim", type=int, required=layer_dim_required, default=None if layer_dim_required else 128,
                   help="layer width d_z = the reservoir's output size"
                        + ("" if layer_dim_required else " (default 128)"))
    g.add_argument("--gamma", type=float, default=2.0, help="γ of the target g_N (default 2)")
    g.add_argument("--sigmas", type=number_list(float, "--sigmas"), default=(0.5, 0.1, 1.0),
                   help="σx,σy,σz of the target (default .5,.1,1)")


def _add_dynamics(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reservoir dynamics (defaults: SPEC §4, except feedback)")
    g.add_argument("--connectivity", type=float, default=0.1, help="connection probability p of W_r (default 0.1)")
    g.add_argument("--gain", type=float, default=1.2, help="spectral scaling λ of W_r (default 1.2)")
    g.add_argument("--tau", type=float, default=5.0, help="time constant τ in ms (default 5)")
    g.add_argument("--dt", type=float, default=1.0, help="Euler step dt in ms (default 1)")
    g.add_argument("--steps-per-sample", type=int, default=20, help="steps T each sample is presented (default 20)")
    g.add_argument("--input-scale", type=float, default=1.0, help="W_in ~ U(-1,1) times this (default 1)")
    g.add_argument("--feedback-scale", type=float, default=0.0,
                   help="W_fb ~ U(-1,1) times this (SPEC §4: 1). Default 0: g_N is O(1e-3), so the fed-back "
                        "output barely moves the reservoir (force with feedback 1 and ridge without give the same "
                        "fit), --learner ridge needs none, and without it one run serves several windows")
    g.add_argument("--rate-noise", type=float, default=0.0, help="uniform noise ±this on the rates (default 0)")
    g.add_argument("--output-noise", type=float, default=0.0, help="uniform noise ±this on the readout (default 0)")
    g.add_argument("--input-projection", type=int, default=None,
                   help="project x to this many dimensions by a fixed random Gaussian matrix first (default: none)")
    g.add_argument("--nonlinearity", choices=("tanh", "linear"), default="tanh", help="rate function (default tanh)")
    g.add_argument("--seed", type=int, default=0, help="seed of the reservoir's matrices and of the data (default 0)")


def _add_stream(p: argparse.ArgumentParser, samples: int, streams: int, kind: str = "random") -> None:
    g = p.add_argument_group("a priori stream")
    g.add_argument("--samples", type=int, default=samples, help=f"samples learned from / scored (default {samples})")
    g.add_argument("--streams", type=int, default=streams,
                   help=f"parallel streams, one reservoir copy each (default {streams})")
    g.add_argument("--washout", type=int, default=20,
                   help="unscored samples per stream before the window fills (default 20)")
    g.add_argument("--stream", choices=STREAM_KINDS, default=kind,
                   help=f"random: x ~ N(0, I); clusters: x around a random centre per class; task-gaussian "
                        f"(train-task only): a low-rank Gaussian per class fitted on the task's validation split, z "
                        f"from a random network of the task's shape (default {kind})")


def _add_learning(p: argparse.ArgumentParser) -> None:
    default = LearnSettings()
    alphas = ",".join(f"{a:g}" for a in RIDGE_ALPHAS)
    g = p.add_argument_group("readout learning")
    g.add_argument("--learner", choices=("ridge", "force", "delta"), default="ridge",
                   help="ridge: batch least squares, α chosen on a validation stream; the readout force reaches "
                        "when the readout does not feed back (needs --feedback-scale 0); force: recursive least "
                        "squares, learning in the closed loop (use it with feedback); delta: the paper's delta rule "
                        "(default ridge)")
    g.add_argument("--lr", type=float, default=default.lr, help=f"delta-rule learning rate η (default {default.lr:g})")
    g.add_argument("--alpha", type=number_list(float, "--alpha"), default=None,
                   help=f"force/ridge penalty α (P0 = I/α); several comma-separated values (ridge only) are tried on "
                        f"a validation stream and the best is kept (default: {alphas} for ridge, {FORCE_ALPHA:g} "
                        f"for force)")
    g.add_argument("--validation", type=float, default=default.validation,
                   help=f"validation stream for choosing α, as a fraction of --samples "
                        f"(default {default.validation:g})")
    g.add_argument("--every-step", action="store_true",
                   help="learn at each of the T steps of a sample (default: once, at its last step)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device_name, default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="reservoir precision (default float32)")


def _add_training_options(p: argparse.ArgumentParser, samples: int, kind: str = "random") -> None:
    """What every command that trains a readout takes: dynamics, stream, learning, device."""
    _add_dynamics(p)
    _add_stream(p, samples=samples, streams=32, kind=kind)
    _add_learning(p)
    _add_device(p)


def _dynamics(args: argparse.Namespace) -> dict:
    """The dynamics options of :func:`_add_dynamics` as ReservoirConfig fields."""
    return dict(connectivity=args.connectivity, gain=args.gain, tau=args.tau, dt=args.dt,
                steps_per_sample=args.steps_per_sample, input_scale=args.input_scale,
                feedback_scale=args.feedback_scale, rate_noise=args.rate_noise, output_noise=args.output_noise,
                input_projection=args.input_projection, nonlinearity=args.nonlinearity, seed=args.seed)


def _config(args: argparse.Namespace, units: int, window: int) -> ReservoirConfig:
    if len(args.sigmas) != 3:
        raise ConfigError(f"--sigmas takes three values σx,σy,σz, got {len(args.sigmas)}")
    return ReservoirConfig(d_x=args.input_dim, d_y=args.classes, d_z=args.layer_dim, units=units, window=window,
                           gamma=args.gamma, sigmas=args.sigmas, **_dynamics(args))


def _stream(args: argparse.Namespace, data_seed: int, task_seed: int, kind: str | None = None,
            **task: Any) -> StreamSettings:
    """The stream options as :class:`StreamSettings`; ``task``: the task-stream fields."""
    return StreamSettings(samples=args.samples, streams=args.streams, washout=args.washout, kind=kind or args.stream,
                          data_seed=data_seed, task_seed=task_seed, **task)


def _learn(args: argparse.Namespace) -> LearnSettings:
    return LearnSettings(learner=args.learner, lr=args.lr, alphas=args.alpha, every_step=args.every_step,
                         validation=args.validation)


def _command_line() -> str:
    return "biohsic " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_train(args: argparse.Namespace) -> int:
    config = _config(args, args.units, args.window)
    stream, learn = _stream(args, args.seed, args.seed), _learn(args)
    start = time.perf_counter()
    with OutputFileLock(args.out):
        reservoir, summary = train_apriori(config, stream, learn, dtype=DTYPES[args.dtype], device=args.device)
        reservoir.save(args.out, info=summary)
    print(f"saved {args.out}: units={config.units} window={config.window} dims={config.d_x}/{config.d_y}/{config.d_z} "
          f"learner={args.learner} samples={args.samples} online_r2={summary['online_r2']:.4f} "
          f"seconds={time.perf_counter() - start:.1f}")
    return 0


def task_reservoir_configs(args: argparse.Namespace) -> list[ReservoirConfig]:
    """One reservoir config per hidden layer of the network ``biohsic train`` builds for
    ``args.task`` (its defaults, or --hidden, --arch, --window, --gamma, --sigmas as given): sizes
    (d_x, classes, d_ℓ), the run's window and target; reservoir ℓ has seed --seed + ℓ."""
    run = _task_run(args)
    data = load_task(run.task, data_dir=run.data_dir)
    dynamics = _dynamics(args)
    widths, _ = layer_widths(run, data)
    return [ReservoirConfig(d_x=data.n_features, d_y=data.n_classes, d_z=width, units=args.units, window=run.window,
                            gamma=run.gamma, sigmas=run.sigmas, **{**dynamics, "seed": args.seed + layer})
            for layer, width in enumerate(widths)]


def _task_run(args: argparse.Namespace) -> TrainConfig:
    """The run of ``biohsic train`` the reservoirs of ``train-task`` serve."""
    return TrainConfig(task=args.task, hidden=args.hidden, arch=args.arch, window=args.window, gamma=args.gamma,
                       sigmas=args.sigmas, data_dir=args.data_dir, val_fraction=args.val_fraction,
                       data_seed=args.data_seed).resolved()


def _task_stream(args: argparse.Namespace, run: TrainConfig, layer: int, seed: int) -> StreamSettings:
    """Layer ``layer``'s a priori stream: a task stream is modelled on the run's validation
    split and its z comes from a random network of the run's widths up to the layer."""
    if args.stream not in TASK_STREAMS:
        return _stream(args, seed, seed)
    return _stream(args, seed, seed, task=run.task, data_dir=run.data_dir, hidden=run.hidden[:layer + 1],
                   fit_fraction=run.val_fraction, fit_seed=run.data_seed, network_seed=args.network_seed)


def cmd_train_task(args: argparse.Namespace) -> int:
    configs = task_reservoir_configs(args)  # validates every layer's config before the first run
    run = _task_run(args)
    if args.network_seed is not None and args.stream not in TASK_STREAMS:
        raise ConfigError(f"--network-seed needs a task stream (--stream {' or '.join(TASK_STREAMS)})")
    if run.arch is not None and args.stream in TASK_STREAMS:
        raise ConfigError(f"--stream {args.stream} models dense networks (--hidden); for --arch choose another "
                          f"--stream ({', '.join(k for k in STREAM_KINDS if k not in TASK_STREAMS)})")
    learn = _learn(args)
    start = time.perf_counter()
    with RunFolderLock(args.out):
        for layer, config in enumerate(configs):
            reservoir, summary = train_apriori(config, _task_stream(args, run, layer, config.seed), learn,
                                               dtype=DTYPES[args.dtype], device=args.device)
            summary["layer"] = layer
            path = layer_file(args.out, layer)
            reservoir.save(path, info=summary)
            print(f"saved {path}: units={config.units} window={config.window} "
                  f"dims={config.d_x}/{config.d_y}/{config.d_z} online_r2={summary['online_r2']:.4f} "
                  f"alpha={summary['alpha']:g}")
    print(f"trained {len(configs)} reservoir(s) in {time.perf_counter() - start:.1f} s; use them with "
          f"`biohsic train --task {args.task} --modulator reservoir --reservoir {args.out}` and the same "
          f"--hidden/--arch/--window/--gamma/--sigmas")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    reservoir = Reservoir.load(args.file, expect_window=args.window, device=args.device)
    cfg = reservoir.config
    reservoir.check_fits(args.file, expect_dims=tuple(
        default if given is None else given
        for given, default in ((args.input_dim, cfg.d_x), (args.classes, cfg.d_y), (args.layer_dim, cfg.d_z))))
    info, seed = reservoir.info, reservoir.config.seed
    data_seed = args.data_seed if args.data_seed is not None else int(info.get("stream_data_seed", seed)) + 1
    task_seed = args.task_seed if args.task_seed is not None else int(info.get("stream_task_seed", seed))
    kind = args.stream or str(info.get("stream_kind", "random"))
    task = {}
    if kind in TASK_STREAMS:
        if info.get("stream_task") is None:
            raise ConfigError(f"{args.file} was not trained on a task stream, so --stream {kind} has no task; "
                              f"score it on its own stream (no --stream)")
        task = dict(task=info["stream_task"], data_dir=info.get("stream_data_dir"),
                    hidden=tuple(info.get("stream_hidden", ())), fit_fraction=float(info["stream_fit_fraction"]),
                    fit_seed=int(info["stream_fit_seed"]), network_seed=info.get("stream_network_seed"))
    result = evaluate_frozen(reservoir, _stream(args, data_seed, task_seed, kind, **task), ceiling=args.ceiling)
    print(f"r2={result.r2:.4f} cosine={result.cosine:.4f} update_r2={result.update_r2:.4f} "
          f"update_cosine={result.update_cosine:.4f} update_cosine_100={result.update_cosine_100:.4f} "
          f"samples={result.samples}")
    if args.ceiling:
        print(f"ceiling E[g_N | current sample]: r2={result.ceiling_r2:.4f} cosine={result.ceiling_cosine:.4f} "
              f"update_r2={result.ceiling_update_r2:.4f} update_cosine={result.ceiling_update_cosine:.4f} "
              f"update_cosine_100={result.ceiling_update_cosine_100:.4f}")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    base = _config(args, max(args.units), max(args.windows))

    def progress(row: CapacityRow) -> None:
        print(f"N={row.window} M={row.units}: r2={row.r2:.3f} update_cosine={row.update_cosine:.3f} "
              f"({row.seconds:.1f} s)", file=sys.stderr, flush=True)

    train = _stream(args, args.seed, args.seed)
    evaluation = StreamSettings(samples=args.eval_samples, streams=args.streams, washout=args.washout,
                                kind=args.stream, data_seed=args.seed + 1, task_seed=args.seed)
    learn = _learn(args)
    start = time.perf_counter()
    with RunFolderLock(args.out):
        rows = capacity_study(base, train, evaluation, learn, windows=args.windows, units=args.units,
                              dtype=DTYPES[args.dtype], device=args.device, progress=progress)
        markdown = write_capacity(rows, args.out, command=_command_line())
    print(markdown, end="")
    print(f"wrote {args.out}/capacity.csv, capacity.md, capacity.png in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_memory_capacity(args: argparse.Namespace) -> int:
    if args.samples_per_unit <= 0 or args.max_delay < 1:
        raise ConfigError(f"--samples-per-unit must be positive and --max-delay at least 1, "
                          f"got {args.samples_per_unit} and {args.max_delay}")
    if args.reservoir:
        reservoirs = [Reservoir.load(args.reservoir, device=args.device)]
    else:
        configs = [_config(args, m, 2) for m in args.units]  # validate all sizes first
        reservoirs = (Reservoir(cfg, dtype=DTYPES[args.dtype], device=args.device) for cfg in configs)
    print(f"| units | MC (delays 1..{args.max_delay}) | r² at delays 0..5 |")
    print("|---|---|---|")
    for reservoir in reservoirs:
        units = reservoir.config.units
        mc = reservoir_memory_capacity(reservoir, samples=args.samples_per_unit * units, streams=args.streams,
                                       max_delay=args.max_delay, seed=args.seed, driven=args.driven)
        print(f"| {units} | {mc.total:.3f} | " + " ".join(f"{v:.3f}" for v in mc.profile[:6].tolist()) + " |",
              flush=True)
    return 0


def add_reservoir_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``reservoir`` with the sub-commands ``train``, ``train-task``, ``eval``, ``capacity`` and
    ``memory-capacity`` to the ``biohsic`` parser's sub-parsers; returns its parser."""
    parser = subparsers.add_parser("reservoir", help="the working-memory reservoir (SPEC §4)",
                                   description="Train, evaluate and study the reservoir that outputs g_N.")
    sub = parser.add_subparsers(dest="reservoir_command", required=True)

    p = sub.add_parser("train", help="train the readout a priori on an unrelated stream and save it",
                       description="Train the reservoir's readout a priori to output the exact g_N of a window, "
                                   "on random samples of the right sizes; save it with its config.")
    p.add_argument("--window", type=int, required=True, help="window N of the target g_N")
    p.add_argument("--units", type=int, required=True, help="reservoir size M")
    p.add_argument("--out", required=True, help="file to write (weights only, torch.save)")
    _add_sizes(p, layer_dim_required=True)
    _add_training_options(p, samples=4096)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-task", help="train one reservoir per hidden layer of a task's network, a priori",
                       description="Train, a priori on an unrelated stream, the reservoirs `biohsic train --modulator "
                                   "reservoir` needs for a task: one per hidden layer, with the task's input size, "
                                   "classes, layer width, window and target (γ, σ), written to --out/layer0.pt, "
                                   "layer1.pt, …; pass --out as --reservoir. The default stream is label-"
                                   "correlated (clusters): in the closed loop, readouts trained on it fit g_N far "
                                   "better than readouts trained on x ~ N(0, I) (docs/reservoir.md).")
    p.add_argument("--task", default="digits", help="the task whose network the reservoirs serve (default digits)")
    p.add_argument("--hidden", type=number_list(int, "--hidden"), default=None, help="hidden widths (default: the task's)")
    p.add_argument("--arch", default=None, help="the --arch of a convolutional network instead of --hidden "
                                                "(each reservoir's output is its layer's whole flattened map)")
    p.add_argument("--window", type=int, default=None, help="window N (default: the task's)")
    p.add_argument("--gamma", type=float, default=None, help="γ of the target g_N (default: the task's)")
    p.add_argument("--sigmas", type=number_list(float, "--sigmas"), default=None, help="σx,σy,σz of the target (default: the task's)")
    p.add_argument("--data-dir", default=None, help="folder of the task's files (file-based tasks)")
    p.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction,
                   help=f"the run's --val-fraction: a task stream is modelled on that validation split, never on "
                        f"training data (default {TrainConfig.val_fraction:g})")
    p.add_argument("--data-seed", type=int, default=TrainConfig.data_seed,
                   help=f"the run's --data-seed (default {TrainConfig.data_seed})")
    p.add_argument("--network-seed", type=int, default=None,
                   help="task streams: z from the initial network of the run's model of this --seed (then the "
                        "circuit serves that model only: `biohsic train --seed S --seeds 1`), not from a random "
                        "network of the task's shape (default)")
    p.add_argument("--units", type=int, required=True, help="reservoir size M of every layer's reservoir")
    p.add_argument("--out", required=True, help="folder for layer0.pt, layer1.pt, …")
    _add_training_options(p, samples=4096, kind="clusters")
    p.set_defaults(func=cmd_train_task)

    p = sub.add_parser("eval", help="score a saved reservoir, frozen, on unseen windows",
                       description="Report R² and mean cosine of the frozen reservoir's output against the exact "
                                   "g_N, and of the update J_Nᵀo against J_Nᵀg_N, on samples it never saw.")
    p.add_argument("file", help="a file written by `biohsic reservoir train`")
    p.add_argument("--window", type=int, default=None, help="fail unless the file was trained for this window")
    p.add_argument("--input-dim", type=int, default=None, help="fail unless the file has this input size")
    p.add_argument("--classes", type=int, default=None, help="fail unless the file has this many classes")
    p.add_argument("--layer-dim", type=int, default=None, help="fail unless the file has this layer width")
    p.add_argument("--samples", type=int, default=2048, help="samples scored (default 2048)")
    p.add_argument("--streams", type=int, default=32, help="parallel streams (default 32)")
    p.add_argument("--washout", type=int, default=20, help="unscored samples per stream (default 20)")
    p.add_argument("--stream", choices=STREAM_KINDS, default=None, help="stream kind (default: the training's)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of the samples (default: the training's + 1)")
    p.add_argument("--task-seed", type=int, default=None,
                   help="seed of the random layer (default: the training's, the same layer)")
    p.add_argument("--ceiling", action="store_true",
                   help="also score the ceiling E[g_N | current sample] (g_N averaged over random histories)")
    p.add_argument("--device", type=device_name, default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("capacity", help="frozen fit over windows N × reservoir sizes M: table and heatmap",
                       description="Train (a priori) and evaluate (frozen) a reservoir for every window N and "
                                   "size M; write capacity.csv, capacity.md and capacity.png into --out. Without "
                                   "feedback (the default) one run per size serves every window.")
    p.add_argument("--out", required=True, help="folder for capacity.csv, capacity.md, capacity.png")
    p.add_argument("--windows", type=number_list(int, "--windows"), default=CAPACITY_WINDOWS, help="windows N (default 2,4,8,16,32)")
    p.add_argument("--units", type=number_list(int, "--units"), default=CAPACITY_UNITS,
                   help="reservoir sizes M (default 250,500,1000,2000,4000)")
    p.add_argument("--eval-samples", type=int, default=2048, help="samples scored per cell (default 2048)")
    _add_sizes(p, layer_dim_required=False)
    _add_training_options(p, samples=8192)
    p.set_defaults(func=cmd_capacity)

    p = sub.add_parser("memory-capacity", help="Jaeger's linear memory capacity of the reservoir",
                       description="Jaeger's linear memory capacity: how much of a scalar i.i.d. input the "
                                   "reservoir's state still holds k samples later, summed over k = 1..max delay.")
    p.add_argument("--units", type=number_list(int, "--units"), default=(250, 500, 1000, 2000),
                   help="reservoir sizes (default 250,500,1000,2000)")
    p.add_argument("--reservoir", default=None, help="measure this saved reservoir instead")
    p.add_argument("--samples-per-unit", type=int, default=4, help="input samples per unit (default 4)")
    p.add_argument("--streams", type=int, default=32, help="parallel input streams (default 32)")
    p.add_argument("--max-delay", type=int, default=40, help="largest delay k, in samples (default 40)")
    p.add_argument("--driven", action="store_true",
                   help="add the scalar probe to the drive of a random a priori stream [x, y, z] (memory under load)")
    _add_sizes(p, layer_dim_required=False)
    _add_dynamics(p)
    _add_device(p)
    p.set_defaults(func=cmd_memory_capacity)
    return parser
