"""The conditional encoder, its hand-made maps, and the RRDB blocks it is built from (flowkit.models.llflow.rrdb)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowkit.models.llflow.encoder import ConditionEncoder, color_map, encoder_input, noise_map
from flowkit.models.llflow.rrdb import RRDB, ResidualDenseBlock


def test_residual_dense_block_wiring():
    block = ResidualDenseBlock(6, growth=3)
    assert [getattr(block, f"conv{k}").in_channels for k in range(1, 6)] == [6, 9, 12, 15, 18]
    assert [getattr(block, f"conv{k}").out_channels for k in range(1, 6)] == [3, 3, 3, 3, 6]
    with torch.no_grad():
        block.conv5.weight.zero_()
        block.conv5.bias.fill_(1.0)
    x = torch.randn(2, 6, 5, 5)
    assert torch.allclose(block(x), x + 0.2)  # the residual branch is scaled by 0.2


def test_rrdb_is_a_scaled_residual_of_three_dense_blocks():
    rrdb = RRDB(4, growth=2)
    x = torch.randn(1, 4, 3, 3)
    inner = rrdb.rdb3(rrdb.rdb2(rrdb.rdb1(x)))
    assert torch.allclose(rrdb(x), x + 0.2 * inner)
    with pytest.raises(ValueError, match="positive channels"):
        ResidualDenseBlock(0)


def test_color_map_sums_channels_with_the_reference_epsilon():
    x = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.allclose(color_map(x).flatten(), torch.tensor([1, 2, 5], dtype=torch.float64) / 8.0001)


def test_noise_map_uses_zero_padded_central_differences():
    x = torch.zeros(1, 1, 3, 4)
    x[0, 0, 1, 1] = 4.0
    expected = torch.tensor([[0.0, 2.0, 0.0, 0.0], [2.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    assert torch.equal(noise_map(x)[0, 0], expected)
    edge = torch.tensor([[[[3.0, 0.0, 0.0]]]])  # the value outside the image counts as 0
    assert noise_map(edge)[0, 0, 0].tolist() == [0.0, 1.5, 0.0]


def test_condition_shapes_and_in_place_activation():
    torch.manual_seed(0)
    encoder = ConditionEncoder(channels=8, blocks=3, growth=4, stack_blocks=(0, 2))
    low = torch.rand(2, 3, 16, 24) * 0.3
    out = encoder(encoder_input(low, low))
    assert encoder.cond_channels == 24
    assert [tuple(c.shape) for c in out.conditions] == [(2, 24, 8, 12), (2, 24, 4, 6), (2, 24, 2, 3)]
    assert out.color_map.shape == (2, 3, 16, 24) and out.color_map.min() > 0 and out.color_map.max() < 1
    assert len(out.blocks) == 2 and out.head.shape == out.down2.shape == (2, 8, 8, 12)
    # H/4 is conditioned on activated features (LeakyReLU 0.2): its negatives are a fifth of the
    # pre-activation, which is recomputed here from down2.
    pre = encoder.down_conv1(F.interpolate(out.down2, scale_factor=0.5, mode="bilinear", align_corners=False))
    assert torch.allclose(out.down4, torch.where(pre >= 0, pre, 0.2 * pre))
    assert torch.equal(out.conditions[1][:, :8], out.down4)
    assert torch.equal(out.conditions[0][:, :8], out.down2) and torch.equal(out.conditions[2][:, :8], out.down8)
    # the stacked block outputs are nearest-resized: every other pixel at H/4, every fourth at H/8
    assert torch.equal(out.conditions[1][:, 8:16], out.blocks[0][:, :, ::2, ::2])
    assert torch.equal(out.conditions[2][:, 16:], out.blocks[1][:, :, ::4, ::4])


def test_encoder_rejects_bad_input():
    encoder = ConditionEncoder(channels=4, blocks=1, growth=2, stack_blocks=())
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        encoder(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by 8"):
        encoder(torch.zeros(1, 6, 8, 12))
    with pytest.raises(ValueError, match="stack_blocks must index"):
        ConditionEncoder(channels=4, blocks=2, growth=2, stack_blocks=(2,))
