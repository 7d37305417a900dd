"""The Reservoir module: construction, state, saving and loading, frozen evaluation, the
capacity study's bookkeeping, and the errors a user can cause (SPEC §4)."""
from __future__ import annotations

import math

import pytest
import torch

from biohsic.errors import CheckpointError, ConfigError, DivergenceError
from biohsic.data import Dataset
from biohsic.network import Network
from biohsic.reservoir import DeltaRule, Reservoir, ReservoirConfig, study
from biohsic.reservoir.study import fit_gaussian_inputs
from biohsic.reservoir.study import (LearnSettings, StreamSettings, capacity_study, evaluate_frozen,
                                     reservoir_memory_capacity, train_apriori, write_capacity)

SMALL = dict(d_x=4, d_y=3, d_z=5, units=30, window=3, steps_per_sample=2)


def small_config(**changes) -> ReservoirConfig:
    return ReservoirConfig(**{**SMALL, **changes})


def inputs(k: int, seed: int = 0, dims=(4, 3, 5)):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(k, d, generator=gen) for d in dims)


def trained(**changes) -> Reservoir:
    reservoir, _ = train_apriori(small_config(**changes), StreamSettings(samples=64, streams=4, washout=3),
                                 LearnSettings(learner="force", alphas=(1.0,)))
    return reservoir


@pytest.mark.parametrize("field,value,flag", [("units", 0, "--units"), ("units", -5, "--units"),
                                              ("window", 1, "--window"), ("connectivity", 0.0, "--connectivity"),
                                              ("steps_per_sample", 0, "--steps-per-sample"),
                                              ("sigmas", (1.0, 0.0, 1.0), "--sigmas"), ("tau", 0.0, "--tau"),
                                              ("nonlinearity", "relu", "--nonlinearity")])
def test_bad_config_raises_one_line_config_error(field, value, flag):
    with pytest.raises(ConfigError) as info:
        small_config(**{field: value})
    message = str(info.value)
    assert flag in message and "\n" not in message


def test_matrices_follow_spec_statistics_and_are_reproducible():
    cfg = ReservoirConfig(d_x=3, d_y=2, d_z=4, units=400, connectivity=0.1, input_scale=0.5, seed=7)
    res = Reservoir(cfg)
    dense = res.w_rec.to_dense()
    nonzero = dense[dense != 0]
    assert abs(nonzero.numel() / 400**2 - 0.1) < 0.005
    assert abs(float(nonzero.var()) * 0.1 * 400 - 1.0) < 0.05  # variance 1/(pM)
    assert res.w_in.shape == (400, 9) and float(res.w_in.abs().max()) <= 0.5
    assert float(res.w_fb.abs().max()) <= 1.0 and res.w_fb.shape == (400, 4)
    assert torch.count_nonzero(res.w_out) == 0
    again, other = Reservoir(cfg), Reservoir(cfg.replace(seed=8))
    assert torch.equal(again.w_rec.to_dense(), dense) and torch.equal(again.w_in, res.w_in)
    assert not torch.equal(other.w_in, res.w_in)
    torch.testing.assert_close(Reservoir(cfg, dtype=torch.float64).w_in.float(), res.w_in, rtol=0, atol=0)


def test_models_are_independent_copies_of_one_reservoir():
    res = trained()
    x, y, z = inputs(3)
    x[2], y[2], z[2] = x[0], y[0], z[0]
    res.reset()
    out = res.step_sample(x, y, z)
    assert out.shape == (3, 5) and res.u.shape == (3, 30)
    torch.testing.assert_close(out[2], out[0], rtol=0, atol=0)
    assert not torch.equal(out[1], out[0])
    single = trained()
    single.reset()
    torch.testing.assert_close(single.step_sample(x[1:2], y[1:2], z[1:2])[0], out[1], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="reset"):
        res.step_sample(*inputs(2))


def test_reset_restarts_state_and_noise():
    res = Reservoir(small_config(rate_noise=0.1, output_noise=0.1))
    res.w_out.normal_()
    x, y, z = inputs(2)
    first = [res.step_sample(x, y, z).clone() for _ in range(3)]
    res.reset()
    second = [res.step_sample(x, y, z).clone() for _ in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])


def test_saved_reservoir_reloads_to_identical_outputs(tmp_path):
    res = trained(rate_noise=0.01, input_projection=2)
    path = tmp_path / "res.pt"
    res.save(path, info={"note": "test"})
    loaded = Reservoir.load(path, expect_window=3, expect_dims=(4, 3, 5))
    assert loaded.config == res.config and loaded.info["note"] == "test"
    def dense(t):
        return t.to_dense() if t.is_sparse_csr else t

    for name, buf in res.named_buffers():
        assert torch.equal(dense(dict(loaded.named_buffers())[name]), dense(buf))
    res.reset()
    loaded.reset()
    for t in range(4):
        x, y, z = inputs(2, seed=t)
        assert torch.equal(res.step_sample(x, y, z), loaded.step_sample(x, y, z))
    assert [p.name for p in tmp_path.iterdir()] == ["res.pt"]  # the atomic write left no temporary file


def test_frozen_evaluation_never_changes_the_readout():
    res = trained()
    before = res.w_out.clone()
    result = evaluate_frozen(res, StreamSettings(samples=32, streams=4, washout=2, data_seed=1))
    assert torch.equal(res.w_out, before)
    assert result.samples == 32 and all(math.isfinite(v) for v in result[:4])
    assert -1.0 <= result.cosine <= 1.0 and -1.0 <= result.update_cosine <= 1.0


def test_step_without_target_never_learns_and_target_needs_a_learner():
    res = trained()
    before = res.w_out.clone()
    x, y, z = inputs(2)
    res.step_sample(x, y, z)
    assert torch.equal(res.w_out, before)
    with pytest.raises(ValueError, match="learner"):
        res.step_sample(x, y, z, torch.zeros(2, 5))
    learner = DeltaRule(lr=0.1)
    res.step_sample(x, y, z, None, learner)  # a learner without a target learns nothing
    assert torch.equal(res.w_out, before)
    res.step_sample(x, y, z, torch.ones(2, 5), learner)
    assert not torch.equal(res.w_out, before)


def test_missing_file_raises_one_line_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError) as info:
        Reservoir.load(tmp_path / "absent.pt")
    assert "not found" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"not a torch file", b""])
def test_corrupt_file_raises_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable"):
        Reservoir.load(path)


def test_other_torch_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a reservoir file"):
        Reservoir.load(path)


def test_file_with_damaged_tensors_raises_checkpoint_error(tmp_path):
    path = tmp_path / "res.pt"
    Reservoir(small_config()).save(path)
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["w_out"] = torch.zeros(2, 2)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="w_out"):
        Reservoir.load(path)


def test_file_for_another_window_or_layer_raises_checkpoint_error(tmp_path):
    path = tmp_path / "res.pt"
    Reservoir(small_config()).save(path)
    with pytest.raises(CheckpointError, match="window N=3.*N=8") as info:
        Reservoir.load(path, expect_window=8)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="4/3/5.*4/3/64"):
        Reservoir.load(path, expect_dims=(4, 3, 64))


def test_diverging_reservoir_raises_divergence_error():
    cfg = small_config(nonlinearity="linear", gain=3.0, connectivity=1.0, tau=1.0, feedback_scale=0)
    with pytest.raises(DivergenceError, match="gain"):
        reservoir_memory_capacity(Reservoir(cfg), samples=2000, streams=1, max_delay=2)


def test_one_run_for_all_windows_equals_one_run_per_window():
    """Without feedback the capacity study trains all windows in one run; the scores must
    be those of separate a priori trainings."""
    base = small_config(feedback_scale=0.0, window=2)
    train = StreamSettings(samples=48, streams=4, washout=2)
    evaluation = StreamSettings(samples=24, streams=4, washout=2, data_seed=1)
    learn = LearnSettings(learner="ridge")
    rows = capacity_study(base, train, evaluation, learn, windows=(2, 4), units=(20,), dtype=torch.float64)
    assert [(r.window, r.units) for r in rows] == [(2, 20), (4, 20)]
    skip_all = train.washout + 4 - 1
    for row in rows:
        # a separate run for this window, with the joint run's washout so that both see the same samples
        single, _ = train_apriori(base.replace(window=row.window, units=20),
                                  StreamSettings(samples=48, streams=4, washout=skip_all - row.window + 1),
                                  learn, dtype=torch.float64)
        score = evaluate_frozen(single, StreamSettings(samples=24, streams=4, washout=skip_all - row.window + 1,
                                                       data_seed=1))
        assert math.isclose(score.r2, row.r2, rel_tol=1e-6, abs_tol=1e-9)
        assert math.isclose(score.update_cosine, row.update_cosine, rel_tol=1e-6, abs_tol=1e-9)


def test_capacity_study_writes_table_and_heatmap(tmp_path):
    rows = capacity_study(small_config(), StreamSettings(samples=32, streams=4, washout=2),
                          StreamSettings(samples=16, streams=4, washout=2, data_seed=1),
                          LearnSettings(learner="force", alphas=(1.0,)), windows=(2, 3), units=(10, 20))
    assert len(rows) == 4 and all(math.isfinite(r.online_r2) for r in rows)
    markdown = write_capacity(rows, tmp_path / "out", command="biohsic reservoir capacity")
    assert (tmp_path / "out" / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "out" / "capacity.csv").read_text().splitlines()
    assert lines[0].startswith("window,units,r2") and len(lines) == 5
    assert "| N \\ M | 10 | 20 |" in markdown and (tmp_path / "out" / "capacity.md").read_text() == markdown


def test_capacity_study_validates_every_cell_first():
    with pytest.raises(ConfigError, match="--units"):
        capacity_study(small_config(), StreamSettings(samples=8, streams=2), StreamSettings(samples=8, streams=2),
                       LearnSettings(), windows=(2,), units=(10, 0))


@pytest.mark.parametrize("settings,flag", [(dict(samples=0), "--samples"), (dict(washout=-1), "--washout"),
                                           (dict(kind="mnist"), "--stream")])
def test_bad_stream_settings_raise_config_error(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        StreamSettings(**settings)


def test_ridge_with_feedback_is_refused():
    with pytest.raises(ConfigError, match="feedback-scale 0"):
        train_apriori(small_config(feedback_scale=1.0), StreamSettings(samples=8, streams=2),
                      LearnSettings(learner="ridge"))


def test_several_alphas_keep_the_one_best_on_the_validation_stream():
    cfg = small_config(feedback_scale=0.0, units=40)
    train = StreamSettings(samples=64, streams=4, washout=2)
    alphas = (1e-4, 1e4)
    chosen, _ = train_apriori(cfg, train, LearnSettings(learner="ridge", alphas=alphas, validation=0.5))
    validation = StreamSettings(samples=32, streams=4, washout=2, data_seed=1_000_000)
    scores = {}
    for alpha in alphas:
        single, _ = train_apriori(cfg, train, LearnSettings(learner="ridge", alphas=(alpha,)))
        scores[alpha] = (evaluate_frozen(single, validation).r2, single.w_out)
    best = max(alphas, key=lambda a: scores[a][0])
    assert chosen.info["alpha"] == best
    torch.testing.assert_close(chosen.w_out, scores[best][1], rtol=0, atol=0)
    assert scores[alphas[0]][0] != scores[alphas[1]][0]


def test_the_task_input_model_recovers_class_means_and_a_low_rank_covariance():
    gen = torch.Generator().manual_seed(0)
    d, rank, classes = 12, 3, 4
    means = torch.randn(classes, d, generator=gen, dtype=torch.float64) * 3
    basis = torch.randn(d, rank, generator=gen, dtype=torch.float64)
    labels = torch.randint(classes, (40000,), generator=gen)
    x = means[labels] + torch.randn(40000, rank, generator=gen, dtype=torch.float64) @ basis.T \
        + 0.2 * torch.randn(40000, d, generator=gen, dtype=torch.float64)
    model = fit_gaussian_inputs(x, labels, classes, rank=rank)
    torch.testing.assert_close(model.means, means, atol=0.05, rtol=0)
    cov = model.basis @ model.basis.T + model.residual ** 2 * torch.eye(d, dtype=torch.float64)
    torch.testing.assert_close(cov, basis @ basis.T + 0.04 * torch.eye(d, dtype=torch.float64), atol=0.15, rtol=0.05)
    samples = model.sample(labels[:20000], gen)
    centred = samples - means[labels[:20000]]
    torch.testing.assert_close(centred.T @ centred / 20000, cov, atol=0.2, rtol=0.05)


def test_a_stream_on_the_runs_own_network_uses_its_initial_layers(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    data = Dataset("toy", torch.randn(200, 6, generator=gen), torch.randint(3, (200,), generator=gen),
                   torch.randn(10, 6), torch.randint(3, (10,)), 3, (6,))
    monkeypatch.setattr(study, "load_task", lambda *args, **kwargs: data)
    study.task_inputs.cache_clear()
    config = ReservoirConfig(d_x=6, d_y=3, d_z=4, units=5, window=3)
    settings = StreamSettings(samples=8, streams=2, washout=0, kind="task-gaussian", task="toy", hidden=(5, 4),
                              network_seed=7)
    stream = study.make_stream(config, settings, 4)
    net = Network((6, 5, 4, 3), seeds=(7,))
    with torch.no_grad():
        torch.testing.assert_close(stream.a, net.hidden[0](stream.x))
        torch.testing.assert_close(stream.z, net.hidden[1](stream.a))
    other = study.make_stream(config, StreamSettings(samples=8, streams=2, washout=0, kind="task-gaussian",
                                                     task="toy", hidden=(5, 4)), 4)
    assert not torch.allclose(other.z, stream.z)  # by default a random network, never a run's
    study.task_inputs.cache_clear()
