"""The head network's hand-written norms."""

from __future__ import annotations

import pytest
import torch

from pockettts.modules.mlp import LayerNorm


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_inference_path_equals_the_written_out_one(affine):
    """Without grad (inference) LayerNorm takes F.layer_norm; it computes what the jvp-friendly
    written-out form computes, and a forward-mode derivative through it still matches."""
    torch.manual_seed(0)
    norm = LayerNorm(24, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    x, tangent = torch.randn(5, 24) * 3 + 1, torch.randn(5, 24)
    written_out = norm(x)  # grad enabled: the written-out form
    _, written_out_jvp = torch.func.jvp(norm, (x,), (tangent,))
    with torch.no_grad():
        torch.testing.assert_close(norm(x), written_out)
        _, fused_jvp = torch.func.jvp(norm, (x,), (tangent,))
    torch.testing.assert_close(fused_jvp, written_out_jvp)
