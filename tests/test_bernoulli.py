"""Exact Bernoulli draws (``ebm.ops.bernoulli``): the probability the algorithm implies is p
exactly (computed by enumerating every value of the random bits, not by sampling), the bits
are uniform in every position, and seeded draws do not depend on the thread count. Each on
both paths: the compiled kernel (``ebm.ops.kernels``, skipped where it cannot be built) and
the eager torch fallback (``EBM_KERNELS=0``)."""

import warnings
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
import torch

from ebm.ops import bernoulli, kernels
from ebm.ops.bernoulli import BITS, bernoulli_, decide, sigmoid_bernoulli_

ALL_BITS = 2**BITS


@pytest.fixture(params=["kernel", "eager"])
def path(request, monkeypatch):
    """Run the test on the compiled kernel, then on the eager fallback; yields the path's
    one-level ``decide`` (probabilities, bits) -> clamp(2^16 p - bits, 0, 1), in place."""
    if request.param == "eager":
        monkeypatch.setenv(kernels.ENV, "0")
        assert kernels.kernels() is None
        return decide
    compiled = kernels.kernels()
    if compiled is None:
        pytest.skip("the compiled kernels are unavailable here")
    return compiled.decide_


def implied_probability(p: torch.Tensor, decide=decide) -> Fraction:
    """P(on) that ``bernoulli_`` gives the 0-d probability ``p``, exactly: every ``B`` of a
    level through ``decide``, a tie's residual through the next level (recursively)."""
    probability, weight = Fraction(0), Fraction(1)
    level = p.reshape(1)
    while True:
        out = decide(level.expand(ALL_BITS).clone(), torch.arange(ALL_BITS, dtype=p.dtype))
        on = out == 1
        tie = (out > 0) & ~on
        assert ((out == 0) | on | tie).all()
        assert int(tie.sum()) <= 1, "at most one B value can tie with p"
        weight /= ALL_BITS
        probability += weight * int(on.sum())
        if not tie.any():
            return probability
        level = out[tie]


def probes(dtype: torch.dtype) -> list[torch.Tensor]:
    info = torch.finfo(dtype)
    one = torch.tensor(1.0, dtype=dtype)
    zero = torch.tensor(0.0, dtype=dtype)
    values = [zero, one, torch.tensor(info.tiny, dtype=dtype), torch.tensor(info.smallest_normal / 8, dtype=dtype)]
    values += [torch.tensor(x, dtype=dtype) for x in (1e-30, 3e-9, 2**-16 * 1.5, 2**-17, 0.3, 1 / 3, 0.7)]
    values += [torch.nextafter(one, zero), torch.nextafter(torch.nextafter(one, zero), zero)]
    for k in (1, 2, 77, 128, 255):
        center = torch.tensor(k / 256, dtype=dtype)
        values += [center, torch.nextafter(center, zero), torch.nextafter(center, one)]
    values += list(torch.rand(4, generator=torch.Generator().manual_seed(0), dtype=dtype))
    return values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_implied_probability_is_p_exactly(dtype, path):
    """Near 0 (down to subnormals), near 1 and on both sides of multiples of 2^-8.

    Pure arithmetic, ~1000 ops on 65536 values: on one thread, since on a loaded machine
    every op split over two threads waits for the slower one (0.4 s here became 57 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p in probes(dtype):
            assert implied_probability(p, path) == Fraction(p.item()), f"p = {p.item()!r} ({dtype})"
    finally:
        torch.set_num_threads(threads)


def test_out_of_range_and_nan(path):
    p = torch.tensor([-0.5, 1.5, float("inf"), float("-inf"), float("nan")])
    out = bernoulli_(p, torch.Generator().manual_seed(0))
    assert out[:4].tolist() == [0.0, 1.0, 1.0, 0.0] and out[4].isnan()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_match_p_in_every_bit_position(dtype, path):
    """The random words feed 4 units each: every position in a word (eager: units 4k + j;
    kernel: units j·64 to j·64 + 63 of each block of 256), and the units of two chunks (eager:
    filled by different generators; kernel: two ranges of counters), must be Bernoulli(p).
    20 z-tests at |z| < 4.5 (false alarm < 2e-4 per run)."""
    n = 400_000
    generator = torch.Generator().manual_seed(1)
    for p in (0.75, 1 / 3):
        draws = bernoulli_(torch.full((n,), p, dtype=dtype), generator)
        assert set(draws.unique().tolist()) <= {0.0, 1.0}
        blocks = draws[: n // 256 * 256].view(-1, 4, 64)  # the kernel's layout: part j // 64 of a block
        for position in range(4):
            for part in (draws[position::4], blocks[:, position]):
                z = (part.float().mean().item() - p) / (p * (1 - p) / part.numel()) ** 0.5
                assert abs(z) < 4.5, (p, position, z)
        # and across the chunks filled by different generators
        chunk_units = 4 * bernoulli.CHUNK_WORDS
        first, second = draws[:chunk_units], draws[chunk_units : 2 * chunk_units]
        assert not torch.equal(first, second), "two chunks got the same random stream"
        for chunk in (first, second):
            z = (chunk.mean().item() - p) / (p * (1 - p) / chunk.numel()) ** 0.5
            assert abs(z) < 4.5, (p, z)


@pytest.mark.parametrize("draw", [bernoulli_, sigmoid_bernoulli_])
def test_seeded_draws_do_not_depend_on_threads(path, draw):
    p = torch.rand(3 * 4 * bernoulli.CHUNK_WORDS + 5, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = draw(p.clone(), torch.Generator().manual_seed(3))
        torch.set_num_threads(3)
        three = draw(p.clone(), torch.Generator().manual_seed(3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    assert not torch.equal(one, draw(p.clone(), torch.Generator().manual_seed(4)))


def test_non_contiguous_and_bad_dtype(path):
    p = torch.full((6, 4), 1.0).t()
    assert bernoulli_(p).eq(1).all() and not p.is_contiguous()
    with pytest.raises(TypeError, match="float32 or float64"):
        bernoulli_(torch.full((3,), 0.5, dtype=torch.float16))


def ties_drawn(draws: torch.Tensor, residual: float) -> None:
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    n = draws.numel()
    z = (draws.mean().item() - residual) / (residual * (1 - residual) / n) ** 0.5
    assert abs(z) < 4.5


def test_kernel_ties_are_redrawn_with_their_residual():
    """As below, on the kernel: first-level words given as 0, ties from the generator."""
    compiled = kernels.kernels()
    if compiled is None:
        pytest.skip("the compiled kernels are unavailable here")
    n, residual = 100_001, 0.3
    for dtype in (torch.float32, torch.float64):
        p = torch.full((n,), residual / ALL_BITS, dtype=dtype)
        draws = compiled.bernoulli_words_(p, torch.zeros(-(-n // 4), dtype=torch.int64), torch.Generator().manual_seed(5))
        ties_drawn(draws, residual)


def test_kernel_failure_falls_back_with_one_warning(monkeypatch):
    """No compiler, no ninja, a failed build: one warning, then exact draws on the eager path."""

    def fail():
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setattr(kernels, "_build", fail)
    with pytest.warns(RuntimeWarning, match="kernels are unavailable"):
        first = bernoulli_(torch.full((10,), 0.5), torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = bernoulli_(torch.full((10,), 0.5), torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and set(first.tolist()) <= {0.0, 1.0}


def test_a_first_build_is_announced_once_on_the_first_rank(monkeypatch, tmp_path, capsys):
    """Tens of seconds of compiling get one line on stderr; a cached module, or a rank
    other than torchrun's first, gets none."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path / name))
    monkeypatch.delenv("RANK", raising=False)
    kernels._announce_build("k")
    assert "compiling its C++ CPU kernels once" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    kernels._announce_build("k")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / f"k{cpp_extension.LIB_EXT}").touch()
    kernels._announce_build("k")
    assert capsys.readouterr().err == ""


def test_ties_are_redrawn_with_their_residual(monkeypatch):
    """Eager path, all first-level bits 0: every unit with p < 2^-16 ties, and is on with
    probability 2^16 p from the next level's bits. z-test at |z| < 4.5."""
    monkeypatch.setenv(kernels.ENV, "0")
    fill = bernoulli.random_words
    calls = []

    def zero_first(words, generator=None):
        calls.append(words.numel())
        return words.zero_() if len(calls) == 1 else fill(words, generator)

    monkeypatch.setattr(bernoulli, "random_words", zero_first)
    n, residual = 100_000, 0.3
    draws = bernoulli_(torch.full((n,), residual / ALL_BITS, dtype=torch.float64), torch.Generator().manual_seed(5))
    assert len(calls) == 2
    ties_drawn(draws, residual)


def compiled_or_skip():
    compiled = kernels.kernels()
    if compiled is None:
        pytest.skip("the compiled kernels are unavailable here")
    return compiled


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_draw_is_the_exact_draw_at_its_sigmoid(dtype):
    """``sigmoid_bernoulli_`` on the kernel: the same draws as ``bernoulli_`` of the kernel's
    own sigmoid with the same generator state (so exact given that sigmoid, tested above)."""
    compiled = compiled_or_skip()
    logits = torch.randn(70_001, generator=torch.Generator().manual_seed(6), dtype=dtype) * 4
    fused = compiled.sigmoid_bernoulli_(logits.clone(), torch.Generator().manual_seed(7))
    two_pass = compiled.bernoulli_(compiled.sigmoid_(logits.clone()), torch.Generator().manual_seed(7))
    assert torch.equal(fused, two_pass)
    assert torch.equal(sigmoid_bernoulli_(logits.clone(), torch.Generator().manual_seed(7)), fused)
    ends = compiled.sigmoid_bernoulli_(torch.tensor([float("nan"), float("inf"), -float("inf"), 1e4, -1e4], dtype=dtype))
    assert ends[0].isnan() and ends[1:].tolist() == [1.0, 0.0, 1.0, 0.0]


def exact_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigmoid in 40 significant digits (``decimal``), rounded to float64."""
    with localcontext() as context:
        context.prec = 40
        return torch.tensor([float(1 / (1 + Decimal(-v).exp())) for v in x.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_sigmoid_is_as_accurate_as_torch(dtype):
    """Within 2.5 ulp of the sigmoid rounded from 40 digits where the result is a normal float
    (``torch.sigmoid``'s own error here: up to 2.5 ulp); 0 and 1 at the ends; NaN stays NaN."""
    compiled = compiled_or_skip()
    generator = torch.Generator().manual_seed(8)
    x = torch.cat([torch.linspace(-87, 87, 4001, dtype=dtype), torch.randn(4000, generator=generator, dtype=dtype) * 10])
    ours = compiled.sigmoid_(x.clone())
    spacing = (torch.nextafter(ours, torch.tensor(2.0, dtype=dtype)) - ours).double()
    ulps = (ours.double() - exact_sigmoid(x)).abs() / spacing
    assert ulps.max() <= 2.5, ulps.max()
    ends = compiled.sigmoid_(torch.tensor([-1e4, -800, 800, 1e4, float("inf"), -float("inf"), float("nan")], dtype=dtype))
    assert ends[:6].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0] and ends[6].isnan()


def test_sigmoid_bernoulli_checks_and_falls_back(monkeypatch):
    with pytest.raises(TypeError, match="float32 or float64"):
        sigmoid_bernoulli_(torch.zeros(3, dtype=torch.float16))
    monkeypatch.setenv(kernels.ENV, "0")
    logits = torch.tensor([-1e4, 1e4, 0.0]).repeat(1000)
    draws = sigmoid_bernoulli_(logits, torch.Generator().manual_seed(0))
    assert draws[0::3].eq(0).all() and draws[1::3].eq(1).all() and set(draws[2::3].tolist()) == {0.0, 1.0}
