"""The RBM tutorial's sample check plots like with like: free energies F(v) of the chains'
states against F(v) of the test images, not joint energies E(v, h) against F(v)."""

import re
from pathlib import Path

import torch

import ebm
import ebm.datasets

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "rbm.md"


def section_code(title: str) -> str:
    """The Python code blocks of the tutorial's section ``title``, joined."""
    section = TUTORIAL.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_checking_the_samples_compares_free_energies(monkeypatch, tmp_path):
    test, _ = ebm.datasets.digits("test")
    rbm = ebm.RBM(64, 16, seed=0)
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=5, seed=0)
    calls = []
    real_energy = ebm.plot.energy

    def recording_energy(values, **kwargs):
        calls.append((values, kwargs))
        return real_energy(values, **kwargs)

    monkeypatch.setattr(ebm.plot, "energy", recording_energy)
    monkeypatch.chdir(tmp_path)  # the snippet saves energy.png
    exec(section_code("Checking the samples"), {"ebm": ebm, "rbm": rbm, "chains": chains, "test": test})
    [(values, kwargs)] = calls
    assert not isinstance(values, ebm.Chains), "Chains would plot the joint energies E(v, h)"
    with torch.no_grad():
        free = rbm.free_energy({"v": chains["v"].flatten(0, 1)}).reshape(chains.energy.shape)
        torch.testing.assert_close(torch.as_tensor(values), free)
        torch.testing.assert_close(torch.as_tensor(kwargs["reference"]).detach(), rbm.free_energy({"v": test}))
    assert "free energy" in kwargs.get("label", "")
