"""``ebm.training.fused_adam``: the direct fused Adam/AdamW step is bit-identical to
``optimizer.step()`` and declines what it cannot reproduce."""

import pytest
import torch

from ebm.training.fused_adam import fused_adam_step


def setup(kind, dtype=torch.float32, **options):
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in ((6, 4), (6,), (4,))]
    return params, kind(params, lr=0.01, fused=True, **options), generator


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_step_is_bit_identical_to_the_optimizers(kind, dtype):
    runs = []
    for direct in (True, False):
        params, optimizer, generator = setup(kind, dtype, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 - e / 10)
        used = []
        for step in range(12):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
            used.append(direct and fused_adam_step(optimizer))
            if not used[-1]:
                optimizer.step()
            if step % 3 == 2:
                scheduler.step()
        assert used == [False] + [direct] * 11  # the first step initialises the state
        runs.append((params, optimizer.state_dict()))
    (fast, fast_state), (slow, slow_state) = runs
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)
    for i, state in slow_state["state"].items():
        for key, value in state.items():
            assert torch.equal(fast_state["state"][i][key], value), key


def test_declines_what_it_cannot_reproduce():
    params, optimizer, _ = setup(torch.optim.Adam)
    assert not fused_adam_step(optimizer)  # no gradients, no state yet
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert fused_adam_step(optimizer)
    params[0].grad = None
    assert not fused_adam_step(optimizer)
    params, amsgrad, _ = setup(torch.optim.Adam, amsgrad=True)
    for p in params:
        p.grad = torch.ones_like(p)
    amsgrad.step()
    assert not fused_adam_step(amsgrad)
    sgd = torch.optim.SGD(params, lr=0.1)
    assert not fused_adam_step(sgd)
    for p in optimizer.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    handle = optimizer.register_step_pre_hook(lambda *args: None)
    assert not fused_adam_step(optimizer)
    handle.remove()
    seen = []
    handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(opt))
    assert fused_adam_step(optimizer)
    assert seen == [optimizer]  # post-hooks run as after optimizer.step()
    handle.remove()
    optimizer.step = lambda closure=None: None
    assert not fused_adam_step(optimizer)


def test_a_torch_whose_kernel_takes_other_arguments_falls_back(monkeypatch):
    """A private kernel that refuses ``Adam.step``'s arguments (another torch version): the
    step count is left as it was, and this and every later step go to ``optimizer.step()``."""
    from ebm.training import fused_adam

    params, optimizer, _ = setup(torch.optim.Adam)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    before = [t.clone() for p in params for t in optimizer.state[p].values()]

    def refuses(*args, **kwargs):
        raise TypeError("_fused_adam_() got an unexpected keyword argument")

    working = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", refuses)
    monkeypatch.setattr(fused_adam, "_unsupported", set())
    assert not fused_adam_step(optimizer)
    after = [t for p in params for t in optimizer.state[p].values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    monkeypatch.setattr(torch, "_fused_adam_", working)
    assert not fused_adam_step(optimizer)  # remembered: no second try, even with a working kernel
