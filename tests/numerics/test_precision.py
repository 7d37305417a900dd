"""Every functional works in float32 (close to float64 on the same inputs) and on CUDA when
one is present; results keep the input's dtype and device."""
from __future__ import annotations

import pytest
import torch

from biohsic import functional as fn
from biohsic.functional import modulator
from biohsic.functional.kernels import gaussian_gram, gram_squared_distances
from biohsic.functional.layers import hidden_drive_grad, output_error, rectify_normalize
from biohsic.network import Network

from ._helpers import F64, generator, one_hot_labels

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]
SIGMAS = (0.5, 0.1, 1.0)
GAMMA = 2.0


def _inputs():
    """float32-representable float64 inputs: any difference below comes from arithmetic."""
    gen = generator(0)
    n, k = 8, 2
    t = {
        "x": torch.randn(k, n, 6, generator=gen, dtype=F64),
        "y": one_hot_labels(n, 3, gen, k),
        "a": torch.randn(k, n, 5, generator=gen, dtype=F64),
        "w": torch.randn(k, 7, 5, generator=gen, dtype=F64) / 5**0.5,
        "b": 0.1 * torch.randn(k, 7, generator=gen, dtype=F64),
        "g": torch.randn(k, n, 7, generator=gen, dtype=F64),
        "wo": torch.randn(k, 3, 7, generator=gen, dtype=F64),
        "bo": torch.randn(k, 3, generator=gen, dtype=F64),
        "state": torch.randn(k, 7, generator=gen, dtype=F64),
    }
    return {name: v.float().double() for name, v in t.items()}


def _compute(t):
    """Every public functional on the inputs ``t``, as a dict of named results."""
    sx, sy, sz = SIGMAS
    cache = fn.hidden_forward(t["a"], t["w"], t["b"])
    z = cache.out
    kx, ky, kz = (fn.gaussian_kernel(v, sigma=s) for v, s in ((t["x"], sx), (t["y"], sy), (z, sz)))
    row = fn.gaussian_kernel_row(t["x"][:, 0], t["x"], sigma=sx)
    logits = fn.dense(z, t["wo"], t["bo"])
    out = {
        "sqdist": fn.squared_distances(t["a"], t["a"][:, :4]),
        "kernel_x": kx, "kernel_z": kz, "row": row,
        "center": fn.center(kx), "hsic": fn.hsic(kx, kz),
        "objective": fn.layer_objective(kx, ky, kz, GAMMA),
        "z": z, "drive": cache.drive,
        "signal_all": modulator._exact_signals(kx, ky, kz, z, gamma=GAMMA, sigma_z=sz),
        "signal_one": modulator._signal_from_kernels(kx, ky, kz, z, 3, gamma=GAMMA, sigma_z=sz),
        "logits": logits,
        "leaky": fn.leaky_step(t["state"], cache.drive[:, 0], dt=1.0, tau=5.0),
        "gram_sqdist": gram_squared_distances(t["x"]),
        "gram_kernel": gaussian_gram(t["x"], s2=sx**2 * 6),
        "rectify_normalize": rectify_normalize(cache.drive)[0],
        "drive_grad": hidden_drive_grad(cache, t["g"]),
        "output_error": output_error(logits, t["y"]),
        "modulation_row": modulator._modulation_row(kx, ky, 2, gamma=GAMMA),
        "signal_from_row": modulator._exact_signal_from_row(modulator._modulation_row(kx, ky, 2, gamma=GAMMA),
                                                            kz[..., 2, :], z, 2, sigma_z=sz),
    }
    for kind in fn.KINDS:
        out[f"modulator_{kind}"] = fn.modulatory_signal(t["x"], t["y"], z, gamma=GAMMA, sigmas=SIGMAS, kind=kind)
        out[f"signal_from_kernels_{kind}"] = modulator._signal_from_kernels(kx, ky, kz, z, -1, gamma=GAMMA, sigma_z=sz, kind=kind)
    out["local_w"], out["local_b"] = fn.hidden_local_grad(cache, t["g"])
    out["ce_w"], out["ce_b"] = fn.cross_entropy_grad(z, logits, t["y"])
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_functionals_in_float32_and_on_device_match_float64_cpu(device, dtype):
    inputs = _inputs()
    reference = _compute(inputs)
    got = _compute({name: v.to(device=device, dtype=dtype) for name, v in inputs.items()})
    tol = 1e-5 if dtype == torch.float32 else 1e-10  # measured float32: <= 6e-7
    for name, ref in reference.items():
        value = got[name]
        assert value.dtype == dtype and value.device.type == device, name
        assert torch.isfinite(value).all(), name
        scale = float(ref.abs().max())
        assert scale > 0, name
        err = float((value.cpu().double() - ref).abs().max())
        assert err <= tol * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_network_float32_matches_float64(device):
    x = torch.randn(5, 6, generator=generator(1), dtype=F64).float()
    net32 = Network((6, 5, 4, 3), seeds=(0, 1), dtype=torch.float32).to(device)
    net64 = Network((6, 5, 4, 3), seeds=(0, 1), dtype=F64)
    with torch.no_grad():
        out32 = net32(x.to(device))
        out64 = net64(x.double())
    assert out32.dtype == torch.float32 and out32.device.type == device
    torch.testing.assert_close(out32.cpu().double(), out64, rtol=1e-4, atol=1e-5)
