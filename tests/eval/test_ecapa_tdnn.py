"""The ECAPA-TDNN head: shapes, and Res2Net's hierarchy of channel groups."""

from __future__ import annotations

import pytest
import torch

from pockettts.eval.ecapa_tdnn import RES2_SCALE, EcapaTdnn, Res2Conv


def test_frame_features_become_one_embedding_per_clip():
    torch.manual_seed(0)
    head = EcapaTdnn(feature_dim=40, channels=64, merged_channels=96, embedding_dim=24).eval()
    assert head(torch.randn(3, 40, 50)).shape == (3, 24)
    assert head(torch.randn(1, 40, 7)).shape == (1, 24)  # any length
    with pytest.raises(ValueError, match="multiple of 8"):
        EcapaTdnn(feature_dim=40, channels=60)


def test_res2_groups_see_only_earlier_groups_and_the_last_passes_through():
    torch.manual_seed(0)
    res2 = Res2Conv(channels=8 * RES2_SCALE, kernel_size=3, dilation=2).eval()
    x = torch.randn(2, 8 * RES2_SCALE, 30)
    changed = x.clone()
    changed[:, 8:16] += 1.0  # the second group
    with torch.no_grad():
        before, after = res2(x), res2(changed)
    torch.testing.assert_close(before[:, :8], after[:, :8])  # the first group does not see the second
    assert not torch.allclose(before[:, 8:16], after[:, 8:16])
    assert not torch.allclose(before[:, 16:24], after[:, 16:24])  # the third does, through the second
    torch.testing.assert_close(before[:, -8:], x[:, -8:])
