"""Inference precisions: exact ``float32``; ``int8`` dynamic quantisation (CPU); ``bfloat16`` or
``float16`` autocast (GPU).

A generation step reads every backbone weight to produce one frame (a matrix-vector product per
layer), so on a CPU it is bound by memory bandwidth: int8 weights move a quarter of the bytes.
``int8`` quantises the ``nn.Linear`` layers of the backbone transformer, the head's MLP and the
codec decoder's transformer (one scale per weight matrix, activations quantised per call), keeping
embeddings, norms, convolutions and everything feeding RoPE in float32. Only linears with at least
``INT8_MIN_WEIGHTS`` weights are quantised: a dynamic int8 product costs a fixed extra (quantising
its input, the int8 kernel's set-up) that a small float32 product does not, so below about
512 x 512 weights float32 is faster (the small 2026-10 models then keep most or all of their
linears in float32). Quantisation is applied in place to a model used only for inference; PyTorch
has no CUDA kernels for it.

On a GPU the half precisions run the FlowLM under ``torch.autocast`` (``generation_context``):
matrix products and attention in half precision, norms and the sampled latents in float32, the
weights unchanged. The codec always decodes in float32. ``float32`` is the exact path, the one every
parity test checks.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

PRECISIONS = ("float32", "int8", "bfloat16", "float16")
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


# Measured on 2-core x86 CPUs (fbgemm): at 512 x 512 weights and one token the two precisions cost
# about the same per call, below it float32 wins, above it int8 (a step then reads a quarter of the bytes).
INT8_MIN_WEIGHTS = 512 * 512


def quantize_linears_int8(module: nn.Module, min_weights: int = 0) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` with at least ``min_weights`` weights by a
    dynamically quantised int8 one, in place."""
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    chosen = {
        name: qconfig
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and child.weight.numel() >= min_weights
    }
    with warnings.catch_warnings():  # torch.ao's eager quantisation is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        engines = torch.backends.quantized.supported_engines
        if "fbgemm" in engines:
            torch.backends.quantized.engine = "fbgemm"
        elif "qnnpack" in engines:
            torch.backends.quantized.engine = "qnnpack"
        return torch.ao.quantization.quantize_dynamic(module, chosen, dtype=torch.qint8, inplace=True)


def set_precision(flow_lm: nn.Module, vae: nn.Module, precision: str) -> None:
    """Put a FlowLM and its codec in ``precision`` (``"int8"``: quantise the backbone, head and
    decoder-transformer linears of at least ``INT8_MIN_WEIGHTS`` weights, on the CPU only; the others
    leave the weights as they are)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    device = next(flow_lm.parameters()).device
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"precision int8 runs on the CPU only (dynamic int8 quantisation has no {device.type} "
            "kernels); on a GPU use float32, bfloat16 or float16"
        )
    if precision == "int8":
        for part in (flow_lm.transformer, flow_lm.head, vae.decoder_transformer):
            quantize_linears_int8(part, INT8_MIN_WEIGHTS)


def generation_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What the FlowLM's computations run inside: autocast to the half precision, or nothing."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
