"""The model's input standardisation: uint8 pixels and floats give the numbers of one fused multiply-add,
and the caller's batch is left as it was."""

from __future__ import annotations

import torch

from mlptrain.model import Standardize


def test_uint8_and_float_batches_standardise_alike_and_stay_untouched():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.rand(20, generator=g) * 100, torch.rand(20, generator=g) * 50 + 1
    layer = Standardize(mean, std)
    pixels = torch.randint(0, 256, (300, 20), dtype=torch.uint8, generator=g)
    floats = pixels.float()
    kept = pixels.clone(), floats.clone()
    scale = std.reciprocal()
    fused = torch.addcmul(-mean * scale, pixels, scale)  # the promotion inside addcmul: the reference numbers
    assert torch.equal(layer(pixels), fused) and torch.equal(layer(floats), fused)
    assert torch.allclose(fused, (floats - mean) / std, atol=1e-5)
    assert torch.equal(pixels, kept[0]) and torch.equal(floats, kept[1])
    assert layer(floats.double()).dtype == torch.float32
