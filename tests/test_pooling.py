import pytest
import torch

from sktransfer.frozen import pool


def test_spatial_pooling():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(pool(x, "avg"), x.mean((2, 3)))
    assert torch.equal(pool(x, "max"), x.amax((2, 3)))
    assert torch.equal(pool(x, "avgmax"), torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))
    assert pool(x, None).shape == (2, 12)


def test_tokens_are_averaged_and_vectors_pass_through():
    tokens = torch.randn(2, 5, 4)
    assert torch.allclose(pool(tokens, "avg"), tokens.mean(1))
    vectors = torch.randn(2, 4)
    assert pool(vectors, "avgmax") is vectors


def test_unknown_pooling():
    with pytest.raises(ValueError, match="Unknown pooling 'median'"):
        pool(torch.zeros(1, 2, 2, 2), "median")
