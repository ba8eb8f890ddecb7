"""Causal 1-d convolutions that stream with explicit state.

Both convolutions only look at the past: ``StreamingConv1d`` pads on the left (zeros, or the first
sample repeated) and keeps the unconsumed tail of its input between chunks, so chunks may have any
length, including ones shorter than its stride; ``StreamingConvTranspose1d`` keeps the overlap-add
tail its next chunk still has to add to. Training uses weight-normalised convolutions (as Mimi and
SEANet do); ``folded_state_dict`` bakes the normalisation into plain weights for export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from pockettts.modules.streaming import State, StreamingModule

PAD_MODES = ("constant", "replicate")


def _maybe_weight_norm(conv: nn.Module, weight_norm: bool) -> nn.Module:
    if conv.bias is not None:
        # Default bias init (±1/sqrt(fan_in)) drowns quiet speech at the input of an encoder and
        # can leave the latent input-independent.
        nn.init.zeros_(conv.bias)
    return parametrizations.weight_norm(conv, dim=0) if weight_norm else conv


def folded_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with each weight-norm pair (``g``, ``v``) replaced by its ``weight``.

    Leaves ``module`` untouched (removing parametrizations from a deep copy would not: the copy
    shares the parametrized class with the original).
    """
    return fold_weight_norm(module.state_dict())


def fold_weight_norm(
    state: dict[str, torch.Tensor], where=lambda weight_name: True
) -> dict[str, torch.Tensor]:
    """``state`` with the weight-norm pairs (``g``, ``v``) whose folded ``weight`` name passes ``where``
    replaced by that weight; everything else as it is."""
    g_suffix, v_suffix = ".parametrizations.weight.original0", ".parametrizations.weight.original1"
    folded: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        stem = name.removesuffix(g_suffix).removesuffix(v_suffix)
        if stem == name or not where(f"{stem}.weight"):
            folded[name] = tensor
        elif name.endswith(g_suffix):
            folded[f"{stem}.weight"] = torch._weight_norm(state[stem + v_suffix], tensor, dim=0)
    return folded


class StreamingConv1d(StreamingModule):
    """Causal ``Conv1d``: output frame ``n`` sees input up to sample ``(n + 1) * stride - 1``.

    A full pass over ``T`` samples gives ``T // stride`` frames; so does any split into chunks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
        weight_norm: bool = False,
    ):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        if self.effective_kernel < stride:
            raise ValueError(f"kernel {self.effective_kernel} shorter than stride {stride} skips samples")
        self.left_context = self.effective_kernel - stride
        conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups, bias=bias
        )
        self.conv = _maybe_weight_norm(conv, weight_norm)
        # Few output channels and a short kernel (a decoder's last layers, at the audio rate): see _conv.
        self.shifted_products = out_channels <= 8 and kernel_size <= 3 and stride == 1 and groups == 1

    def init_own_state(self, batch_size: int, device: torch.device) -> State:
        # "pending" = input not yet consumed, left context included; replicate padding is only known
        # once the first sample arrives, so it starts empty in that mode.
        length = self.left_context if self.pad_mode == "constant" else 0
        return {
            "pending": torch.zeros(batch_size, self.conv.in_channels, length, device=device),
            "started": torch.zeros((), dtype=torch.bool, device=device),
        }

    def _left_pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_mode == "replicate":
            return x[..., :1].expand(-1, -1, self.left_context)
        return x.new_zeros(x.shape[0], x.shape[1], self.left_context)

    def _empty_output(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.conv.out_channels, 0)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """``self.conv(x)``; at inference on a CPU, a conv with few output channels and a short kernel
        (a decoder's last layers, at the audio rate) is a sum of shifted matrix products: oneDNN's
        kernel is 1.5-2.6x slower there (measured on a 2-core Xeon, 16 -> 8 and 64 -> 1 channels,
        kernel 3, 30720 samples)."""
        conv = self.conv
        if not self.shifted_products or torch.is_grad_enabled() or x.device.type != "cpu" or x.shape[0] != 1:
            return conv(x)
        weight, dilation = conv.weight, conv.dilation[0]  # [C_out, C_in, K]
        length = x.shape[-1] - self.effective_kernel + 1
        taps = [x[0, :, k * dilation : k * dilation + length] for k in range(weight.shape[-1])]
        y = (
            weight[:, :, 0] @ taps[0]
            if conv.bias is None
            else torch.addmm(conv.bias[:, None], weight[:, :, 0], taps[0])
        )
        for k in range(1, len(taps)):
            y.addmm_(weight[:, :, k], taps[k])
        return y[None]

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``x``: ``[B, C_in, T]`` -> ``[B, C_out, T_out]``."""
        if state is None:
            x = torch.cat([self._left_pad(x), x], dim=-1)
            if x.shape[-1] < self.effective_kernel:
                return self._empty_output(x)
            return self._conv(x)
        if x.shape[-1] == 0:
            return self._empty_output(x)
        pending = state["pending"].to(x.dtype)
        if not bool(state["started"]):
            if self.pad_mode == "replicate":
                pending = self._left_pad(x)
            state["started"] = torch.ones_like(state["started"])
        x = torch.cat([pending, x], dim=-1)
        n_out = (
            (x.shape[-1] - self.effective_kernel) // self.stride + 1
            if x.shape[-1] >= self.effective_kernel
            else 0
        )
        state["pending"] = x[..., n_out * self.stride :].detach()
        if n_out == 0:
            return self._empty_output(x)
        return self._conv(x[..., : (n_out - 1) * self.stride + self.effective_kernel])


class StreamingConvTranspose1d(StreamingModule):
    """Causal ``ConvTranspose1d``: ``T`` input frames give exactly ``T * stride`` samples.

    The last ``kernel - stride`` samples of each chunk are incomplete (the next frames still add to
    them): a full pass drops them, a stream carries them over.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        weight_norm: bool = False,
    ):
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel {kernel_size} shorter than stride {stride} leaves gaps")
        self.stride = stride
        self.overlap = kernel_size - stride
        convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.convtr = _maybe_weight_norm(convtr, weight_norm)

    # From this input length on, the product is taken weight-first (measured on a 2-core Xeon: 5x faster
    # for the last upsampling of 16 frames; 1.6x slower for the first upsampling of 8).
    COLUMNS_FIRST_FROM = 64

    def init_own_state(self, batch_size: int, device: torch.device) -> State:
        return {"overlap": torch.zeros(batch_size, self.convtr.out_channels, self.overlap, device=device)}

    def _transposed_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``self.convtr(x)``; at inference on a CPU, a dense one is computed as one matrix product
        followed by overlap-add (PyTorch's CPU kernel falls back to a slow path for the short inputs
        of a stream: about 4x slower for the codec's first upsampling of one frame)."""
        convtr = self.convtr
        if torch.is_grad_enabled() or x.device.type != "cpu" or convtr.groups != 1:
            return convtr(x)
        batch, channels, length = x.shape
        weight = convtr.weight  # [C_in, C_out, K]
        out_channels, kernel = weight.shape[1], weight.shape[2]
        if length >= self.COLUMNS_FIRST_FROM:
            # [C_out*K, C_in] @ [B, C_in, T] lands in fold's layout: no copy of the (large) product
            # (bmm, unlike matmul, keeps it so whatever the layout of x)
            columns = torch.bmm(weight.reshape(channels, out_channels * kernel).t().expand(batch, -1, -1), x)
        else:  # a short input: [B, T, C_in] @ [C_in, C_out*K] is the faster product, its copy cheap
            columns = x.transpose(1, 2) @ weight.reshape(channels, out_channels * kernel)
            columns = columns.view(batch, length, out_channels, kernel).permute(0, 2, 3, 1)
            columns = columns.reshape(batch, out_channels * kernel, length)  # fold's layout
        size = (length - 1) * self.stride + kernel
        y = F.fold(columns, (1, size), (1, kernel), stride=(1, self.stride)).view(batch, out_channels, size)
        return y if convtr.bias is None else y + convtr.bias[:, None]

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``x``: ``[B, C_in, T]`` -> ``[B, C_out, T * stride]``."""
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        y = self._transposed_conv(x)
        if self.overlap == 0:
            return y
        if state is not None:
            head = y[..., : self.overlap] + state["overlap"].to(y.dtype)
            y = torch.cat([head, y[..., self.overlap :]], dim=-1)
            tail = y[..., -self.overlap :]
            if self.convtr.bias is not None:
                # The bias is added once per sample, when the sample is emitted.
                tail = tail - self.convtr.bias[:, None]
            state["overlap"] = tail.detach()
        return y[..., : -self.overlap]
