"""The working memory's ring buffers and O(N·d) kernel updates against full recomputation."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from biohsic.functional import gaussian_kernel
from biohsic.memory import WorkingMemory


def make_memory(capacity=6, k=2, dtype=torch.float64):
    return WorkingMemory(capacity, {"x": (5, 0.7), "z0": (3, 1.3)}, n_models=k, dtype=dtype)


def test_incremental_kernels_equal_full_recomputation_after_100_slides():
    gen = torch.Generator().manual_seed(0)
    memory = make_memory()
    for _ in range(100 + memory.capacity):
        memory.push({"x": torch.randn(2, 5, generator=gen, dtype=torch.float64),
                     "z0": torch.randn(2, 3, generator=gen, dtype=torch.float64)})
    for name, sigma in memory.sigmas.items():
        full = gaussian_kernel(memory.values[name], sigma=sigma)
        assert (memory.kernels[name] - full).abs().max() < 1e-12


@settings(max_examples=25, deadline=None)
@given(capacity=st.integers(2, 9), pushes=st.integers(1, 30))
def test_ring_buffer_holds_the_last_n_samples(capacity, pushes):
    memory = WorkingMemory(capacity, {"x": (1, 1.0)}, n_models=1, dtype=torch.float64)
    for t in range(pushes):
        memory.push({"x": torch.full((1, 1), float(t), dtype=torch.float64)})
    assert memory.full == (pushes >= capacity)
    assert memory.values["x"][0, memory.newest, 0] == pushes - 1
    if memory.full:
        assert sorted(memory.values["x"][0, :, 0].tolist()) == list(map(float, range(pushes - capacity, pushes)))


def test_replace_recomputes_the_kernel_and_reset_forgets():
    memory = make_memory(k=1)
    values = torch.randn(1, memory.capacity, 3, dtype=torch.float64)
    memory.replace("z0", values)
    assert torch.allclose(memory.kernels["z0"], gaussian_kernel(values, sigma=1.3))
    memory.push({"x": torch.ones(1, 5, dtype=torch.float64), "z0": torch.ones(1, 3, dtype=torch.float64)})
    memory.reset()
    assert memory.count == 0 and not memory.full
    assert all(float(v.abs().sum()) == 0 for v in memory.values.values())


def test_state_dict_round_trip():
    memory, copy = make_memory(), make_memory()
    for _ in range(8):
        memory.push({"x": torch.randn(2, 5, dtype=torch.float64), "z0": torch.randn(2, 3, dtype=torch.float64)})
    copy.load_state_dict(memory.state_dict())
    assert copy.count == memory.count and copy.newest == memory.newest
    for name in memory.values:
        assert torch.equal(copy.values[name], memory.values[name])
        assert torch.equal(copy.kernels[name], memory.kernels[name])


def test_capacity_below_two_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        WorkingMemory(1, {"x": (2, 1.0)})
