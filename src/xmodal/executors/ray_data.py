"""The Ray executor (`pip install 'xmodal[ray]'`): shards flow through Ray Data.

The pending shards become a Ray dataset of (shard number, checksum of its listing file);
`map_batches` runs them on a pool of actors, each of which loads the model pair once and then
reads one shard's rows from its listing file, embeds them and writes the shard per call
(decoding its images in threads while the model runs). Only the small shard records come back
to the driver, which records them in the manifest. `ray.init()` starts Ray on this machine; an
address ("auto", "ray://head:10001") joins an existing cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from xmodal.executors.job import EmbedJob
from xmodal.shards.format import PlannedShard, ShardRecord


class _ShardEmbedder:
    """One actor = one loaded model pair; called with a batch of planned shards."""

    def __init__(self, job: EmbedJob) -> None:
        self.job = job
        self.encoders = job.encoders()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = zip(batch["shard"], batch["sha256"], strict=True)
        records = [self.job.run(PlannedShard(int(k), str(d)), self.encoders) for k, d in shards]
        return {"record": np.array([r.to_json() for r in records], dtype=object)}


@dataclass(frozen=True)
class RayExecutor:
    """`concurrency` actors, each holding `cpus` CPUs and `gpus` GPUs (fractions allowed)."""

    address: str | None = None
    concurrency: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    progress: bool = False

    def __call__(self, job: EmbedJob, shards: list[PlannedShard]) -> Iterator[ShardRecord]:
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'xmodal[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        planned = ray.data.from_items(
            [{"shard": s.index, "sha256": s.sha256} for s in shards],
            override_num_blocks=len(shards),
        )
        done = planned.map_batches(
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
