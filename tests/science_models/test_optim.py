"""fl_engine.models.optim.Adam gives torch.optim.Adam's numbers, bit for bit, and training with it
does not import torch._dynamo (the reason it exists: ~70 MB and ~0.6 s per training process)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from fl_engine.models.optim import Adam


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


@pytest.mark.parametrize("weight_decay,lr", [(0.0, 1e-3), (1e-4, 5e-3), (0.3, 0.05)])
def test_same_parameters_as_torch_adam_after_many_steps(weight_decay, lr):
    ours_net, ref_net = _net(1), _net(1)
    ours = Adam(ours_net.parameters(), lr=lr, weight_decay=weight_decay)
    ref = torch.optim.Adam(ref_net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(2)
    for step in range(60):
        x = torch.randn(32, 7, generator=gen)
        y = torch.randn(32, 1, generator=gen)
        for net, opt in ((ours_net, ours), (ref_net, ref)):
            torch.manual_seed(step)  # the same dropout mask in both
            opt.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
    for a, b in zip(ours_net.parameters(), ref_net.parameters()):
        assert torch.equal(a, b), (a - b).abs().max()
    moved = [not torch.equal(a, b) for a, b in zip(ours_net.parameters(), _net(1).parameters())]
    assert all(moved)  # training did change every parameter


def test_a_parameter_without_gradient_is_left_alone_as_in_torch():
    net = _net(3)
    frozen = net[0].weight.detach().clone()
    opt = Adam(net.parameters(), lr=0.1)
    net[0].weight.requires_grad_(False)
    opt.zero_grad()
    net(torch.randn(4, 7)).sum().backward()
    opt.step()
    assert torch.equal(net[0].weight, frozen)
    assert not torch.equal(net[3].weight, _net(3)[3].weight)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="lr"):
        Adam(_net(0).parameters(), lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam(_net(0).parameters(), betas=(0.9, 1.0))


def test_training_deepsurv_and_savae_imports_no_torch_dynamo():
    code = (
        "import sys, numpy as np\n"
        "from fl_engine.models.deepsurv import DeepSurv\n"
        "from fl_engine.models.savae import SAVAE\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(80, 5)).astype('float32'); d = rng.uniform(1, 50, 80); e = rng.integers(0, 2, 80)\n"
        "DeepSurv(5).fit(x, d, e, epochs=2)\n"
        "SAVAE(5).fit(x, d, e, epochs=2)\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
