"""The working memory's ring buffers and O(N·d) kernel updates against full recomputation."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from biohsic.functional import gaussian_kernel
from biohsic.memory import Stream, WorkingMemory

F64 = torch.float64
SIGMAS = (0.7, 0.4, 1.3)


def make_memory(capacity=6, k=2, layer_dims=(3,), dtype=F64):
    return WorkingMemory(capacity, input_dim=5, label_dim=2, layer_dims=layer_dims, sigmas=SIGMAS, n_models=k,
                         dtype=dtype)


def random_sample(gen, k=2, layer_dims=(3,)):
    return (torch.randn(k, 5, generator=gen, dtype=F64), torch.randn(k, 2, generator=gen, dtype=F64),
            [torch.randn(k, d, generator=gen, dtype=F64) for d in layer_dims])


def test_each_stream_has_its_own_width():
    memory = make_memory(layer_dims=(3, 4))
    assert [s.sigma for s in (memory.inputs, memory.labels, *memory.layers)] == [0.7, 0.4, 1.3, 1.3]
    assert [s.values.shape[-1] for s in memory.streams().values()] == [5, 2, 3, 4]
    assert list(memory.streams()) == ["x", "y", "z0", "z1"]


@pytest.mark.parametrize("layer_dims", [(), (3,), (3, 4)])
def test_incremental_kernels_equal_full_recomputation_after_100_slides(layer_dims):
    gen = torch.Generator().manual_seed(0)
    memory = make_memory(layer_dims=layer_dims)
    for _ in range(100 + memory.capacity):
        memory.push(*random_sample(gen, layer_dims=layer_dims))
        if not memory.full:  # a slot's kernel entries are written when its first sample arrives
            continue
        for name, stream in memory.streams().items():
            full = gaussian_kernel(stream.values, sigma=stream.sigma)
            assert (stream.kernel - full).abs().max() < 1e-12, name


@settings(max_examples=25, deadline=None)
@given(capacity=st.integers(2, 9), pushes=st.integers(1, 30))
def test_ring_buffer_holds_the_last_n_samples(capacity, pushes):
    memory = WorkingMemory(capacity, input_dim=1, label_dim=1, layer_dims=[1], sigmas=(1.0, 1.0, 1.0), dtype=F64)
    for t in range(pushes):
        value = torch.full((1, 1), float(t), dtype=F64)
        memory.push(value, -value, [2 * value])
    assert memory.full == (pushes >= capacity)
    assert memory.inputs.values[0, memory.newest, 0] == pushes - 1
    assert memory.labels.values[0, memory.newest, 0] == -(pushes - 1)
    assert memory.layers[0].values[0, memory.newest, 0] == 2 * (pushes - 1)
    if memory.full:
        assert sorted(memory.inputs.values[0, :, 0].tolist()) == list(map(float, range(pushes - capacity, pushes)))


def test_refresh_layers_rewrites_only_the_newest_slot_of_the_layer_streams():
    gen = torch.Generator().manual_seed(1)
    memory = make_memory(layer_dims=(3, 4))
    for _ in range(8):
        memory.push(*random_sample(gen, layer_dims=(3, 4)))
    before = {name: s.values.clone() for name, s in memory.streams().items()}
    new = [torch.randn(2, 3, generator=gen, dtype=F64), torch.randn(2, 4, generator=gen, dtype=F64)]
    memory.refresh_layers(new)
    assert memory.count == 8
    for name in ("x", "y"):
        assert torch.equal(memory.streams()[name].values, before[name])
    for stream, z, name in zip(memory.layers, new, ("z0", "z1")):
        expected = before[name].clone()
        expected[:, memory.newest] = z
        assert torch.equal(stream.values, expected)
        torch.testing.assert_close(stream.kernel, gaussian_kernel(stream.values, sigma=stream.sigma), rtol=0,
                                   atol=1e-14)
    with pytest.raises(ValueError):
        memory.refresh_layers(new[:1])


def test_stream_write_does_not_touch_other_slots_of_the_kernel():
    gen = torch.Generator().manual_seed(2)
    stream = Stream.empty(1, 4, 3, 0.9, F64, "cpu")
    stream.replace(torch.randn(1, 4, 3, generator=gen, dtype=F64))
    before = stream.kernel.clone()
    stream.write(2, torch.randn(1, 3, generator=gen, dtype=F64))
    others = [0, 1, 3]
    assert torch.equal(stream.kernel[:, others][:, :, others], before[:, others][:, :, others])
    assert not torch.equal(stream.kernel[:, 2], before[:, 2])
    assert stream.kernel[0, 2, 2] == 1.0


def test_replace_recomputes_the_kernel_and_reset_forgets():
    memory = make_memory(k=1)
    values = torch.randn(1, memory.capacity, 3, dtype=F64)
    memory.layers[0].replace(values)
    assert torch.allclose(memory.layers[0].kernel, gaussian_kernel(values, sigma=1.3))
    memory.push(torch.ones(1, 5, dtype=F64), torch.ones(1, 2, dtype=F64), [torch.ones(1, 3, dtype=F64)])
    memory.reset()
    assert memory.count == 0 and not memory.full
    assert all(float(s.values.abs().sum()) == 0 and float(s.kernel.abs().sum()) == 0
               for s in memory.streams().values())


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(3)
    memory, copy = make_memory(), make_memory()
    for _ in range(8):
        memory.push(*random_sample(gen))
    copy.load_state_dict(memory.state_dict())
    assert copy.count == memory.count and copy.newest == memory.newest
    for (name, stream), twin in zip(memory.streams().items(), copy.streams().values()):
        assert torch.equal(twin.values, stream.values), name
        assert torch.equal(twin.kernel, stream.kernel), name


def test_capacity_below_two_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        WorkingMemory(1, input_dim=2, label_dim=2, layer_dims=[], sigmas=(1.0, 1.0, 1.0))
