import pytest
import torch

import ebm


@pytest.mark.parametrize(
    ("domain", "bad", "message"),
    [
        (ebm.Binary(3), [0.0, 0.5, 1.0], "takes only the values 0 and 1"),
        (ebm.Spin(3), [1.0, 0.0, -1.0], "takes only the values -1 and 1"),
        (ebm.Binary(3), [0.0, float("nan"), 1.0], "NaN"),
        (ebm.Real(3), [0.0, float("nan"), 1.0], "NaN"),
        (ebm.Real(3), [0.0, float("inf"), 1.0], "inf"),
    ],
)
def test_validation_names_block_and_problem(domain, bad, message):
    with pytest.raises(ValueError, match=message) as err:
        domain.validate("v", torch.tensor([bad]))
    assert "'v'" in str(err.value)


@pytest.mark.parametrize("domain", [ebm.Binary(2, 3), ebm.Spin(2, 3), ebm.Real(2, 3)])
def test_random_init_has_shape_and_support(domain):
    g = torch.Generator().manual_seed(0)
    x = domain.random(500, generator=g, dtype=torch.float64)
    assert x.shape == (500, 2, 3) and x.dtype == torch.float64
    domain.validate("x", x)
    if domain.discrete:
        assert set(x.unique().tolist()) == set(domain.values)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError):
        ebm.Binary(0)
    with pytest.raises(ValueError):
        ebm.Real()
    assert ebm.Spin((4, 4)).shape == ebm.Spin(4, 4).shape == (4, 4)
    assert ebm.Spin(4, 4).size == 16


def test_flip_and_from_bits():
    s = ebm.Spin(2)
    assert s.flip(torch.tensor([1.0, -1.0])).tolist() == [-1.0, 1.0]
    assert ebm.Binary(2).flip(torch.tensor([1.0, 0.0])).tolist() == [0.0, 1.0]
    assert s.from_bits(torch.tensor([True, False])).tolist() == [1.0, -1.0]
