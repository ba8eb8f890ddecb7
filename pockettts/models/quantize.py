"""Inference precisions for CPU generation: exact float32, or int8 dynamic quantisation.

A generation step reads every backbone weight to produce one frame (a matrix-vector product per
layer), so on a CPU it is bound by memory bandwidth: int8 weights move a quarter of the bytes.
``int8`` quantises the ``nn.Linear`` layers of the backbone transformer, the head's MLP and the
codec decoder's transformer (weights per output channel, activations per call), keeping
embeddings, norms, convolutions and everything feeding RoPE in float32. Quantisation is applied
in place to a model used only for inference.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

PRECISIONS = ("float32", "int8")


def quantize_linears_int8(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` by a dynamically quantised int8 one, in place."""
    with warnings.catch_warnings():  # torch.ao's eager quantisation is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        engines = torch.backends.quantized.supported_engines
        if "fbgemm" in engines:
            torch.backends.quantized.engine = "fbgemm"
        elif "qnnpack" in engines:
            torch.backends.quantized.engine = "qnnpack"
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)


def set_precision(flow_lm: nn.Module, vae: nn.Module, precision: str) -> None:
    """Put a FlowLM and its codec in ``precision`` (``"float32"``: leave them; ``"int8"``: quantise
    the backbone, head and decoder-transformer linears)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "int8":
        for part in (flow_lm.transformer, flow_lm.head, vae.decoder_transformer):
            quantize_linears_int8(part)
