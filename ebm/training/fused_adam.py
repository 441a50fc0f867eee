"""One fused Adam/AdamW step without ``Optimizer.step``'s Python work per call.

``torch.optim.Adam(fused=True).step()`` runs one fused kernel, but around it ~30 µs of
Python per call (the profiler's record, grouping the tensors by device and dtype, reading the
state dict, the functional API's checks): more than the kernel itself on a small model,
where an RBM update takes ~0.2 ms. ``fused_adam_step`` calls the same kernel
(``torch._fused_adam_`` / ``torch._fused_adamw_``) with the same arguments as
``torch.optim.Adam.step`` does, so parameters and optimizer state come out bit-identical;
it declines (returns ``False``, call ``optimizer.step()``) whenever the optimizer is not
one it can reproduce exactly: another class, options other than plain fused Adam/AdamW,
pre-hooks or a wrapped ``step``, state not yet initialised (the first step), mixed devices or dtypes, a missing
gradient. ``tests/test_training.py`` checks the bit-identity against ``optimizer.step()``.
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as optim_base

#: private kernels this torch would not take with ``Adam.step``'s arguments (see the ``except``)
_unsupported: set = set()


def _plain(group: dict) -> bool:
    return (
        group.get("fused") is True
        and not group.get("amsgrad")
        and not group.get("maximize")
        and not group.get("capturable")
        and not group.get("differentiable")
        and not isinstance(group.get("lr"), torch.Tensor)
        and not any(isinstance(beta, torch.Tensor) for beta in group.get("betas", ()))
    )


@torch.no_grad()
def fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """Take ``optimizer``'s step by its fused kernel directly; ``False`` (nothing done) when
    it is not a plain fused ``torch.optim.Adam``/``AdamW`` ready for it (see the module)."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or _unsupported:
        return False
    step = vars(optimizer).get("step")
    if step is not None and not getattr(step, "_wrapped_by_lr_sched", False):
        return False  # someone wrapped this optimizer's step (an lr scheduler's own wrap is fine)
    if optimizer._optimizer_step_pre_hooks or optim_base._global_optimizer_pre_hooks:
        return False  # a pre-hook may rewrite the step's arguments
    jobs = []
    for group in optimizer.param_groups:
        if not _plain(group):
            return False
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(group["params"]):
            return False
        states = [optimizer.state.get(p) for p in params]
        if any(not state or "step" not in state for state in states):
            return False
        if params and len({(p.device, p.dtype) for p in params}) != 1:
            return False
        jobs.append((group, params, states))
    for group, params, states in jobs:
        if not params:
            continue
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        # AdamW carries "decoupled_weight_decay" only since it became an Adam subclass (torch 2.7)
        decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        try:
            kernel(
                params,
                [p.grad for p in params],
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        except TypeError:
            # a torch whose private kernel takes other arguments: the call was refused before
            # touching a tensor, so undo the step count and let optimizer.step() do it, for
            # this and every later step
            torch._foreach_sub_(steps, 1)
            _unsupported.add(kernel)
            return False
    # as Optimizer.step's wrapper: the post-hooks (ebm's colouring cache counts fused steps
    # with one), then what an lr scheduler's wrap records (its check that the optimizer stepped)
    args = (optimizer,)
    for hook in (*optimizer._optimizer_step_post_hooks.values(), *optim_base._global_optimizer_post_hooks.values()):
        hook(optimizer, args, {})
    optimizer._opt_called = True
    return True
