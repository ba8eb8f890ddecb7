"""int8 inference quantises only the linears large enough to gain from it."""

from __future__ import annotations

import torch
from torch import nn

from pockettts.models.quantize import INT8_MIN_WEIGHTS, quantize_linears_int8


def test_only_linears_above_the_size_threshold_become_int8():
    side = int(INT8_MIN_WEIGHTS**0.5)
    model = nn.Sequential(nn.Linear(side, side), nn.GELU(), nn.Linear(side, 32), nn.Linear(32, side))
    x = torch.randn(2, side)
    with torch.no_grad():
        exact = model(x)
        quantize_linears_int8(model, INT8_MIN_WEIGHTS)
        approx = model(x)
    assert isinstance(model[0], torch.ao.nn.quantized.dynamic.Linear)
    assert type(model[2]) is nn.Linear and type(model[3]) is nn.Linear
    assert (approx - exact).abs().max() < 0.05 * exact.abs().max()
    everything = quantize_linears_int8(nn.Sequential(nn.Linear(4, 4)))  # no threshold: all of them
    assert isinstance(everything[0], torch.ao.nn.quantized.dynamic.Linear)
