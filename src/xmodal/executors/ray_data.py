"""The Ray executor (`pip install 'xmodal[ray]'`): shards flow through Ray Data.

The pending shard tasks become a Ray dataset; `map_batches` runs them on a pool of actors, each
of which loads the model pair once and then embeds and writes one shard per call (decoding its
images in threads while the model runs). Only the small shard records come back to the driver,
which records them in the manifest. `ray.init()` starts Ray on this machine; an address
("auto", "ray://head:10001") joins an existing cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from xmodal.executors.job import EmbedJob
from xmodal.shards.format import ShardRecord, ShardTask


class _ShardEmbedder:
    """One actor = one loaded model pair; called with a batch of shard tasks."""

    def __init__(self, job: EmbedJob) -> None:
        self.job = job
        self.encoders = job.encoders()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self.job.run(ShardTask.from_json(t), self.encoders) for t in batch["task"]]
        return {"record": np.array([r.to_json() for r in records], dtype=object)}


@dataclass(frozen=True)
class RayExecutor:
    """`concurrency` actors, each holding `cpus` CPUs and `gpus` GPUs (fractions allowed)."""

    address: str | None = None
    concurrency: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    progress: bool = False

    def __call__(self, job: EmbedJob, tasks: list[ShardTask]) -> Iterator[ShardRecord]:
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'xmodal[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        tasks_ds = ray.data.from_items(
            [{"task": t.to_json()} for t in tasks], override_num_blocks=len(tasks)
        )
        done = tasks_ds.map_batches(
            _ShardEmbedder,
            fn_constructor_args=(job,),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.concurrency),
            num_cpus=self.cpus,
            num_gpus=self.gpus,
        )
        for row in done.iter_rows():
            yield ShardRecord.from_json(row["record"])
