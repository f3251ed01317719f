"""Train with the Hugging Face Trainer and HFGlobalPowerLimitOptimizer as a callback.

Written from Zeus's Hugging Face integration guide: the callback joins the Trainer's
callbacks and the rest of the script is ordinary Trainer code. Usage: python hf_trainer.py OUT_DIR
"""

import sys

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from zeus.monitor import ZeusMonitor
from zeus.optimizer.power_limit import HFGlobalPowerLimitOptimizer, MaxSlowdownConstraint


class TinyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x, labels=None):
        prediction = self.net(x)
        loss = nn.functional.mse_loss(prediction, labels)
        return {"loss": loss, "logits": prediction}


torch.manual_seed(0)
dataset = [{"x": torch.randn(16), "labels": torch.randn(1)} for _ in range(96)]

monitor = ZeusMonitor(gpu_indices=[0])
plo = HFGlobalPowerLimitOptimizer(
    monitor,
    optimum_selector=MaxSlowdownConstraint(factor=1.1),
    warmup_steps=1,
    profile_steps=2,
    pl_step=50,
)
arguments = TrainingArguments(
    output_dir=sys.argv[1],
    per_device_train_batch_size=8,
    num_train_epochs=3,
    use_cpu=True,
    report_to="none",
    save_strategy="no",
    logging_strategy="no",
    disable_tqdm=True,
)
trainer = Trainer(model=TinyRegressor(), args=arguments, train_dataset=dataset, callbacks=[plo])
trainer.train()
