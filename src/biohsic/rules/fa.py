r"""Feedback alignment (Lillicrap et al. 2016) and direct feedback alignment (Nøkland 2016),
on minibatches of ``config.batch_size`` samples (SPEC §6).

Both send the output error :math:`e_n = (\mathrm{softmax}(o_n) - y_n)/B` of the mean
cross-entropy back through *fixed random* matrices instead of the transposed forward
weights; each hidden layer turns the signal :math:`g_n` it receives for its output
:math:`z_n` into its local term :math:`\sum_n J_n^\top g_n` (LayerNorm and rectifier
derivatives applied inside the layer, :func:`biohsic.functional.layers.hidden_local_grad`).
The readout learns by its own delta rule.

- ``fa``: layer by layer. The top hidden layer receives :math:`g = e B_L`, and layer ℓ
  receives :math:`g_\ell = \delta_{\ell+1} B_{\ell+1}`, where :math:`\delta_{\ell+1} = \partial L/\partial u_{\ell+1}`
  is layer ℓ+1's post-synaptic factor (its own signal through its own LayerNorm and
  rectifier). :math:`B_{\ell+1}` has the shape of the forward weight :math:`W_{\ell+1}` it
  replaces (back-propagation would use :math:`W_{\ell+1}` here); the layer above sends
  :math:`\delta` down through it as through its own weight (``input_grad``: a product for a
  dense layer, a transposed convolution with fixed random kernels for a convolutional one,
  then the transpose of the layer's input pooling).
- ``dfa``: every hidden layer receives the output error directly, :math:`g_\ell = e B_\ell`,
  with :math:`B_\ell` of shape (classes, :math:`d_\ell`) (:math:`d_\ell`: the size of the
  layer's z, a whole flattened map for a convolutional layer).

Each matrix is drawn like the forward weight of the same shape, U(-1/√n, 1/√n) with n its
fan-in (the width of the layer it feeds back to; channels × kernel area for kernels), from a
generator seeded by the model's seed (so K models side by side get the matrices each would
get alone). The forward weights never enter the hidden updates.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..functional.layers import HiddenCache, output_error
from ..network import Network, init_uniform
from .base import Rule, register, write_hidden_grads
from .readout import readout_step


class FeedbackMatrices(nn.Module):
    """Fixed random feedback matrices, buffers ``b0``, ``b1``, … (one per hidden layer).

    Matrix l has shape ``(K, *shapes[l])``, a weight's shape (out, in, …): a dense one
    ``(K, n_from, n_to)`` maps an error ``(K, B, n_from)`` to hidden layer l's signal
    ``(K, B, n_to)``. Drawn U(-1/√fan_in, 1/√fan_in) (:func:`~biohsic.network.init_uniform`),
    one generator per model seed (seeded from the seed and ``salt + l``).
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], seeds: Sequence[int], salt: int,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        for l, shape in enumerate(shapes):
            matrix, _ = init_uniform(seeds, shape, salt + l, torch.float64)
            self.register_buffer(f"b{l}", matrix.to(dtype=dtype, device=device))

    def __getitem__(self, layer: int) -> Tensor:
        return self.get_buffer(f"b{layer}")

    def project(self, layer: int, error: Tensor) -> Tensor:
        """Hidden layer ``layer``'s signal :math:`g = e B_l` for an error ``(K, B, n_from)``."""
        return error @ self[layer]


@register
class FeedbackAlignment(Rule):
    """Feedback alignment: the error travels down layer by layer through fixed random matrices."""

    name = "fa"
    salt = 1000

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        weight = network.readout.weight
        self.feedback = FeedbackMatrices(self.feedback_shapes(network), network.seeds, self.salt,
                                         weight.dtype, weight.device)

    @staticmethod
    def feedback_shapes(network: Network) -> list[tuple[int, ...]]:
        """Hidden layer l's matrix has the shape of the forward weight above it (of layer l+1,
        or of the readout for the top layer)."""
        above = [*network.hidden[1:], network.readout]
        return [tuple(layer.weight.shape[1:]) for layer in above]

    def hidden_signals(self, caches: list[HiddenCache], error: Tensor) -> list[Tensor]:
        """Each hidden layer's signal ``(K, B, d_l)`` from the output error ``(K, B, classes)``:
        the error of the layer above sent down through that layer's feedback matrix."""
        signals: list[Tensor] = []
        upstream, above = error, self.network.readout
        for l in reversed(range(len(caches))):
            signals.insert(0, above.input_grad(upstream, self.feedback[l]))
            if l > 0:
                above = self.network.hidden[l]
                upstream = above.drive_grad(caches[l], signals[0])
        return signals

    @torch.no_grad()
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        caches, logits = readout_step(self.network, x, y)
        write_hidden_grads(self.network, caches, self.hidden_signals(caches, output_error(logits, y)), watch=self.watch)
        return logits

    def state_dict(self) -> dict[str, Any]:
        return {"feedback": self.feedback.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feedback.load_state_dict(state["feedback"])


@register
class DirectFeedbackAlignment(FeedbackAlignment):
    """Direct feedback alignment: the output error reaches every hidden layer through its own
    fixed random matrix."""

    name = "dfa"
    salt = 2000

    @staticmethod
    def feedback_shapes(network: Network) -> list[tuple[int, ...]]:
        """Hidden layer l's matrix is (classes, d_l), d_l the size of its z."""
        return [(network.sizes[-1], layer.width) for layer in network.hidden]

    def hidden_signals(self, caches: list[HiddenCache], error: Tensor) -> list[Tensor]:
        return [self.feedback.project(l, error) for l in range(len(caches))]
