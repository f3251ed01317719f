"""One run of a recurring job whose batch size the batch size optimizer picks.

Written from Zeus's batch size optimizer guide: register the job, ask for this run's batch
size, report the validation metric after every epoch, stop when told (a run the optimizer stops raises). The "training" is a
toy whose accuracy grows faster with smaller batches. Usage:
python batch_size_optimizer.py SERVER_URL JOB_ID
"""

import sys

from zeus.monitor import ZeusMonitor
from zeus.optimizer.batch_size.client import BatchSizeOptimizer
from zeus.optimizer.batch_size.common import JobSpec
from zeus.optimizer.batch_size.exceptions import ZeusBSOTrainFailError

monitor = ZeusMonitor(gpu_indices=[0])
job = JobSpec(
    job_id=sys.argv[2],
    job_id_prefix="mnist",
    default_batch_size=256,
    batch_sizes=[32, 64, 256, 512, 1024],
    max_epochs=20,
    target_metric=0.9,
)
bso = BatchSizeOptimizer(monitor=monitor, server_url=sys.argv[1], job=job)
batch_size = bso.get_batch_size()
print(f"batch size {batch_size}")

accuracy = 0.0
bso.on_train_begin()
for epochs in range(1, job.max_epochs + 1):
    accuracy = min(1.0, accuracy + 64 / batch_size)
    try:
        bso.on_evaluate(accuracy)
    except ZeusBSOTrainFailError as stopped:
        print(f"stopped by the optimizer: {stopped}")
        break
    if bso.training_finished:
        print(f"converged after {epochs} epochs at accuracy {accuracy:.2f}")
        break
