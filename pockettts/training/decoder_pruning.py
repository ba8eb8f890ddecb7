"""A light decoder started from a trained one: channel pruning with least-squares reconstruction.

A narrower decoder (fewer SEANet filters, a narrower transformer with fewer attention heads and a
smaller feed-forward layer, any kernel sizes) is initialised from a trained codec's decoder, so that
light-decoder training starts near its teacher instead of from noise. The encoder side is copied, so
the latents (and every cache and backbone trained on them) stay the source's.

* Channel selection. Every stream of the decoder keeps the channels that matter most to what reads it,
  measured on calibration latents: the channel's mean square activation times the squared norm of
  the weights that read it (a first-order estimate of what dropping it changes). Attention heads are
  kept whole (the narrow model's head dimension is the source's), ranked by the energy they send
  through ``out_proj``.
* Least-squares reconstruction (He, Zhang & Sun 2017, "Channel Pruning for Accelerating Very Deep
  Neural Networks", arXiv 1707.06168, the reconstruction step of §3.1). Layer by layer, in order,
  every linear map that can be refit in closed form (each conv and transposed conv, the feed-forward
  layers, the attention's output projection) is solved by ridge regression: fed with the narrow
  decoder's own activations so far, it reproduces the source's pre-activation output at the kept
  channels. At the end of a residual branch the target is the source's stream minus the narrow
  decoder's own skip input, and the last conv's target is the source's waveform, so errors of
  earlier layers are compensated rather than compounded.

Only the attention's query/key/value projections and the layer norms are copied as selected.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pockettts.models.vae import AudioVAE
from pockettts.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from pockettts.modules.seanet import SEANetResnetBlock

# The SEANet settings a narrow decoder must share with its source (its widths and kernels may differ).
SHARED_SEANET = ("channels", "ratios", "n_residual_layers", "dilation_base", "compress")


def _check_shapes(source: dict[str, Any], seanet: dict[str, Any], transformer: dict[str, Any]) -> None:
    """Refuse a narrow decoder that is not a sub-network of ``source``'s (an ``AudioVAE`` config)."""
    source_seanet, source_transformer = source["decoder_seanet"], source["decoder_transformer"]
    for key in SHARED_SEANET:
        if seanet[key] != source_seanet[key]:
            raise ValueError(
                f"decoder_seanet.{key} {seanet[key]} differs from the source's {source_seanet[key]}"
            )
    for key in ("n_filters", "dimension"):
        if seanet[key] > source_seanet[key]:
            raise ValueError(
                f"decoder_seanet.{key} {seanet[key]} is wider than the source's {source_seanet[key]}"
            )
    if transformer["d_model"] != seanet["dimension"]:
        raise ValueError(
            f"decoder_transformer.d_model {transformer['d_model']} must equal decoder_seanet.dimension "
            f"{seanet['dimension']} (its residual stream is pruned as the SEANet input)"
        )
    source_head = source_transformer["d_model"] // source_transformer["num_heads"]
    head = transformer["d_model"] // transformer["num_heads"]
    if head != source_head or transformer["num_heads"] > source_transformer["num_heads"]:
        raise ValueError(
            f"decoder_transformer keeps whole heads of the source's dimension {source_head}: "
            f"d_model {transformer['d_model']} / num_heads {transformer['num_heads']} = {head}"
        )
    for key in ("num_layers", "max_period"):
        if transformer[key] != source_transformer[key]:
            raise ValueError(f"decoder_transformer.{key} {transformer[key]} differs from the source's")
    if transformer["dim_feedforward"] > source_transformer["dim_feedforward"]:
        raise ValueError("decoder_transformer.dim_feedforward is wider than the source's")


def _top(importance: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` most important indices, in increasing order."""
    return importance.topk(count).indices.sort().values


class _Recorder:
    """Forward hooks that keep each watched module's last input and output."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str) -> Callable:
        def hook(module, args, output):
            self.inputs[name], self.outputs[name] = args[0].detach(), output.detach()

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _watched(vae: AudioVAE) -> dict[str, nn.Module]:
    """The decoder's refit-able layers (and its residual blocks, whose skips are targets), by name."""
    names = {}
    for name, module in vae.named_modules():
        in_seanet = isinstance(module, (StreamingConv1d, StreamingConvTranspose1d, SEANetResnetBlock))
        in_transformer = isinstance(module, nn.Linear)
        if (
            name.startswith("decoder.")
            and in_seanet
            or name.startswith("decoder_transformer.")
            and in_transformer
        ):
            names[name] = module
    return names


def _record(vae: AudioVAE, latents: torch.Tensor) -> _Recorder:
    """Every watched layer's input and output when ``vae`` decodes ``latents`` ``[B, F, latent_dim]``."""
    recorder = _Recorder(_watched(vae))
    try:
        vae.decode(latents)
    finally:
        recorder.close()
    return recorder


def _solve(gram: torch.Tensor, cross: torch.Tensor, ridge: float) -> torch.Tensor:
    """Ridge regression from its normal equations ``G = XᵀX``, ``C = XᵀY``, on standardised columns: each
    column of ``X`` is scaled to unit norm before the penalty ``ridge * I`` is added, so the
    regularisation treats quiet and loud inputs (and the bias column) alike."""
    scale = gram.diagonal().clamp_min(1e-30).sqrt()  # sqrt(N) times each column's RMS
    standardised = gram / (scale[:, None] * scale[None, :])
    penalty = ridge * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(standardised + penalty, cross / scale[:, None]) / scale[:, None]


def _relative_residual(output: torch.Tensor, target: torch.Tensor) -> float:
    """``|output - target| / |target|``."""
    return float((output - target).double().norm() / target.double().norm().clamp_min(1e-12))


def _one_hot_probe(layer: nn.Module) -> nn.Module:
    """A copy of the (transposed) conv ``layer`` with ``C_in * K`` bias-free outputs, output ``c * K + k``
    the response to a kernel that is 1 at input channel ``c``, tap ``k``: run on ``x``, it gives the
    columns of the layer's design matrix, its own padding and trimming included."""
    probe = copy.deepcopy(layer)
    conv = probe.conv if isinstance(layer, StreamingConv1d) else probe.convtr
    channels, kernel = conv.in_channels, conv.kernel_size[0]
    one_hot = torch.eye(channels * kernel)
    if isinstance(layer, StreamingConv1d):  # weight [C_out, C_in, K]
        weight = one_hot.reshape(channels * kernel, channels, kernel)
    else:  # weight [C_in, C_out, K]
        weight = one_hot.reshape(channels, kernel, channels * kernel).transpose(1, 2)
    conv.out_channels = channels * kernel
    conv.weight = nn.Parameter(weight.contiguous())
    conv.bias = None
    return probe


def _conv_design(probe: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, C_in, T]`` -> the design matrix ``[B * T_out, C_in * K + 1]`` of the layer ``probe``
    was made from (``_one_hot_probe``), the last column 1 (the bias)."""
    columns = probe(x)  # [B, C_in * K, T_out]
    columns = columns.transpose(1, 2).reshape(-1, columns.shape[1])
    return torch.cat([columns, columns.new_ones(len(columns), 1)], dim=1)


def _refit_conv(
    layer: nn.Module, x: torch.Tensor, target: torch.Tensor, ridge: float, chunk: int = 4
) -> float:
    """Solve ``layer``'s weight and bias so that ``layer(x)`` ≈ ``target`` ``[B, C_out, T_out]`` (the normal
    equations summed over ``chunk`` items at a time, so the design never exists whole); returns the
    relative residual of the fit."""
    conv = layer.conv if isinstance(layer, StreamingConv1d) else layer.convtr
    probe = _one_hot_probe(layer)
    gram = cross = None
    for start in range(0, len(x), chunk):
        design = _conv_design(probe, x[start : start + chunk]).double()
        part = target[start : start + chunk]
        flat = part.transpose(1, 2).reshape(-1, part.shape[1]).double()
        gram = design.T @ design if gram is None else gram + design.T @ design
        cross = design.T @ flat if cross is None else cross + design.T @ flat
    solution = _solve(gram, cross, ridge)  # [C_in * K + 1, C_out]
    kernel = conv.kernel_size[0]
    taps = solution[:-1].float().reshape(conv.in_channels, kernel, -1)  # [C_in, K, C_out]
    with torch.no_grad():
        if isinstance(layer, StreamingConv1d):
            conv.weight.copy_(taps.permute(2, 0, 1))
        else:
            conv.weight.copy_(taps.permute(0, 2, 1))
        conv.bias.copy_(solution[-1].float())
    return _relative_residual(layer(x), target)


def _refit_linear(layer: nn.Linear, x: torch.Tensor, target: torch.Tensor, ridge: float) -> float:
    """Solve a bias-free ``layer`` so that ``layer(x)`` ≈ ``target`` (``[..., D_in]`` -> ``[..., D_out]``)."""
    design = x.reshape(-1, x.shape[-1]).double()
    flat = target.reshape(-1, target.shape[-1]).double()
    solution = _solve(design.T @ design, design.T @ flat, ridge)
    with torch.no_grad():
        layer.weight.copy_(solution.T.float())
    return _relative_residual(layer(x), target)


def _energy(activation: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Mean square per channel of ``activation`` along ``channel_dim``."""
    dims = [d for d in range(activation.dim()) if d != channel_dim % activation.dim()]
    return activation.double().square().mean(dim=dims)


class _Pruner:
    """Carries the source and narrow codecs through the selection and the refits, in decoding order."""

    def __init__(self, source: AudioVAE, narrow: AudioVAE, latents: torch.Tensor, ridge: float):
        self.source, self.narrow, self.latents, self.ridge = source, narrow, latents, ridge
        self.teacher = _record(source, latents)
        self.fits: dict[str, float] = {}

    def student(self) -> _Recorder:
        """The narrow decoder's activations with every layer refit so far."""
        return _record(self.narrow, self.latents)

    def refit_conv(self, name: str, target: torch.Tensor) -> None:
        layer = self.narrow.get_submodule(name)
        self.fits[name] = _refit_conv(layer, self.student().inputs[name], target, self.ridge)

    def refit_linear(self, name: str, target: torch.Tensor) -> None:
        layer = self.narrow.get_submodule(name)
        self.fits[name] = _refit_linear(layer, self.student().inputs[name], target, self.ridge)


def _reading_norm(weight: torch.Tensor, input_dim: int) -> torch.Tensor:
    """Squared norm of the weights that read each input channel (``input_dim`` indexes the inputs:
    1 for a conv or linear weight, 0 for a transposed conv's)."""
    weight = weight.detach().double()
    return weight.square().sum(dim=[d for d in range(weight.dim()) if d != input_dim])


def _prune_transformer(pruner: _Pruner, settings: dict[str, Any]) -> torch.Tensor:
    """Select the decoder transformer's residual stream, heads and feed-forward units; copy what is
    selected and refit ``out_proj``, ``linear1`` and ``linear2``. Returns the kept stream channels
    (the SEANet's input) as source indices."""
    source, narrow, teacher = pruner.source, pruner.narrow, pruner.teacher
    first_conv = source.decoder.model[0].conv.weight
    # the stream the SEANet reads: the transformer's output, read by the first conv
    stream_energy = _energy(teacher.inputs["decoder.model.0"], 1) * _reading_norm(first_conv, 1)
    stream = _top(stream_energy, settings["d_model"])
    narrow.quantizer.output_proj.weight.copy_(source.quantizer.output_proj.weight[stream])
    narrow.upsample.convtr.convtr.weight.copy_(source.upsample.convtr.convtr.weight[stream])
    prefix = "decoder_transformer.transformer.layers"
    for index, (wide, thin) in enumerate(
        zip(source.decoder_transformer.transformer.layers, narrow.decoder_transformer.transformer.layers)
    ):
        name = f"{prefix}.{index}"
        attention = wide.self_attn
        head_dim, heads = attention.head_dim, attention.num_heads
        # energy each head sends through out_proj
        head_inputs = teacher.inputs[f"{name}.self_attn.out_proj"]  # [B, T, heads * head_dim]
        per_channel = _energy(head_inputs, -1) * _reading_norm(attention.out_proj.weight, 1)
        kept_heads = _top(per_channel.view(heads, head_dim).sum(dim=1), thin.self_attn.num_heads)
        head_channels = (kept_heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
        d_model = attention.out_proj.weight.shape[0]
        packed_rows = torch.cat([head_channels + part * d_model for part in range(3)])  # q, k, v
        thin.self_attn.in_proj.weight.copy_(attention.in_proj.weight[packed_rows][:, stream])
        for norm in ("norm1", "norm2"):
            getattr(thin, norm).weight.copy_(getattr(wide, norm).weight[stream])
            getattr(thin, norm).bias.copy_(getattr(wide, norm).bias[stream])
        for scale in ("layer_scale_1", "layer_scale_2"):
            if isinstance(getattr(wide, scale), nn.Identity):
                continue
            getattr(thin, scale).scale.copy_(getattr(wide, scale).scale[stream])
        # The branch outputs are fit to the source's own (no skip compensation: dividing the stream's
        # error by a small layer scale would ask the branch for what its input cannot explain).
        out_proj = f"{name}.self_attn.out_proj"
        pruner.refit_linear(out_proj, teacher.outputs[out_proj][..., stream])
        units = _energy(nn.functional.gelu(teacher.outputs[f"{name}.linear1"], approximate="tanh"), -1)
        units = _top(units * _reading_norm(wide.linear2.weight, 1), thin.linear1.out_features)
        pruner.refit_linear(f"{name}.linear1", teacher.outputs[f"{name}.linear1"][..., units])
        pruner.refit_linear(f"{name}.linear2", teacher.outputs[f"{name}.linear2"][..., stream])
    return stream


def _stage_readers(model: nn.ModuleList, index: int) -> tuple[int, list[torch.Tensor]]:
    """For the conv at ``index``: the index of the last residual block of its stage (whose output is
    the stage's stream) and the reading weights (as ``(weight, input_dim)``) of that stream."""
    end = index
    readers = []
    while end + 1 < len(model) and isinstance(model[end + 1], SEANetResnetBlock):
        end += 1
        readers.append((model[end].block[1].conv.weight, 1))
    convs = (StreamingConv1d, StreamingConvTranspose1d)
    following = next((layer for layer in model[end + 1 :] if isinstance(layer, convs)), None)
    if isinstance(following, StreamingConv1d):
        readers.append((following.conv.weight, 1))
    elif following is not None:
        readers.append((following.convtr.weight, 0))
    return end, readers


def _prune_seanet(pruner: _Pruner, stream: torch.Tensor) -> None:
    """Select each SEANet stage's channels and each residual block's hidden units, and refit every
    conv in order (``stream``: the kept input channels, source indices)."""
    wide_layers, thin_layers = pruner.source.decoder.model, pruner.narrow.decoder.model
    teacher = pruner.teacher
    for index, (wide, thin) in enumerate(zip(wide_layers, thin_layers)):
        name = f"decoder.model.{index}"
        if isinstance(wide, (StreamingConv1d, StreamingConvTranspose1d)):
            out_channels = (thin.conv if isinstance(thin, StreamingConv1d) else thin.convtr).out_channels
            end, readers = _stage_readers(wide_layers, index)
            if readers:
                end_name = f"decoder.model.{end}"
                energy = _energy(nn.functional.elu(teacher.outputs[end_name]), 1)
                stream = _top(energy * sum(_reading_norm(w, dim) for w, dim in readers), out_channels)
            else:  # the waveform
                stream = torch.arange(out_channels)
            pruner.refit_conv(name, teacher.outputs[name][:, stream])
        elif isinstance(wide, SEANetResnetBlock):
            first, last = f"{name}.block.1", f"{name}.block.3"
            hidden = _energy(nn.functional.elu(teacher.outputs[first]), 1)
            hidden *= _reading_norm(wide.block[3].conv.weight, 1)
            hidden = _top(hidden, thin.block[1].conv.out_channels)
            pruner.refit_conv(first, teacher.outputs[first][:, hidden])
            skip = pruner.student().inputs[name]
            pruner.refit_conv(last, teacher.outputs[name][:, stream] - skip)


@torch.no_grad()
def prune_decoder(
    source: AudioVAE,
    latents: torch.Tensor,
    decoder_seanet: dict[str, Any],
    decoder_transformer: dict[str, Any],
    ridge: float = 1e-4,
) -> tuple[AudioVAE, dict[str, float]]:
    """A codec with ``source``'s encoder and a narrower decoder initialised from ``source``'s.

    Args:
        source: the trained codec (eval mode, plain weights as ``load_vae`` gives them).
        latents: calibration latents ``[B, F, latent_dim]`` in ``source``'s latent space.
        decoder_seanet, decoder_transformer: the narrow decoder's settings (overrides of ``source``'s).
        ridge: the regularisation of every least-squares fit, relative to the design's mean energy.

    Returns the narrow codec (eval mode) and the relative residual of each refit layer's fit.
    """
    config = copy.deepcopy(source.config)
    config["decoder_seanet"] = {**config["decoder_seanet"], **decoder_seanet}
    config["decoder_transformer"] = {**config["decoder_transformer"], **decoder_transformer}
    config["weight_norm"] = False
    _check_shapes(source.config, config["decoder_seanet"], config["decoder_transformer"])
    narrow = AudioVAE(**config).eval()
    narrow.load_inference_state_dict(source.inference_state_dict(), encoder_only=True)
    pruner = _Pruner(source.eval(), narrow, latents, ridge)
    stream = _prune_transformer(pruner, config["decoder_transformer"])
    _prune_seanet(pruner, stream)
    return narrow, pruner.fits
