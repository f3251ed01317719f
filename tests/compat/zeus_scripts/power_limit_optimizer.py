"""Train with GlobalPowerLimitOptimizer choosing the GPU power limit.

Written from Zeus's power limit optimizer guide: the optimizer's hooks sit around every
epoch and step. Usage:
python power_limit_optimizer.py [--selector slowdown|cost|default] [--profile-path P] [--epochs N]
"""

import argparse

import torch
from torch import nn
from zeus.monitor import ZeusMonitor
from zeus.optimizer.power_limit import GlobalPowerLimitOptimizer, MaxSlowdownConstraint, ZeusCost

parser = argparse.ArgumentParser()
parser.add_argument("--selector", default="slowdown")
parser.add_argument("--profile-path", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=12)
args = parser.parse_args()

gpu_index = torch.cuda.current_device() if torch.cuda.is_available() else 0
monitor = ZeusMonitor(gpu_indices=[gpu_index])
selectors = {
    "slowdown": MaxSlowdownConstraint(factor=1.1),
    "cost": ZeusCost(eta_knob=0.5, world_size=1),
    "default": None,
}
plo = GlobalPowerLimitOptimizer(
    monitor,
    optimum_selector=selectors[args.selector],
    wait_steps=1,
    warmup_steps=1,
    profile_steps=2,
    pl_step=50,
    profile_path=args.profile_path,
)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
batches = [(torch.randn(8, 16), torch.randn(8, 1)) for _ in range(args.steps_per_epoch)]

for epoch in range(args.epochs):
    plo.on_epoch_begin()
    for x, y in batches:
        plo.on_step_begin()
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        plo.on_step_end()
    plo.on_epoch_end()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
