"""Measure the time and GPU energy of a training loop with ZeusMonitor.

Written from Zeus's "Measuring energy" guide: one window over all of training, one per
epoch, one per step (without synchronising, to keep steps cheap), a cancelled window and
a restarted one. Usage: python measure_energy.py LOG_CSV
"""

import sys

import torch
from torch import nn
from zeus.monitor import ZeusMonitor

gpu_index = torch.cuda.current_device() if torch.cuda.is_available() else 0
monitor = ZeusMonitor(gpu_indices=[gpu_index], log_file=sys.argv[1])

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
batches = [(torch.randn(8, 16), torch.randn(8, 1)) for _ in range(5)]

monitor.begin_window("training")
epochs = []
for epoch in range(2):
    monitor.begin_window("epoch")
    for x, y in batches:
        monitor.begin_window("step", sync_execution=False)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        monitor.end_window("step", sync_execution=False)
    result = monitor.end_window("epoch")
    epochs.append(result)
    print(f"epoch {epoch}: {result.time:.4f} s, {result.total_energy:.3f} J")

monitor.begin_window("evaluation")
cancelled = monitor.end_window("evaluation", cancel=True)

monitor.begin_window("checkpoint")
monitor.begin_window("checkpoint", restart=True)
checkpoint = monitor.end_window("checkpoint")

training = monitor.end_window("training")
print(f"training: {training.time:.4f} s, {training.total_energy:.3f} J, per GPU {training.gpu_energy}")
