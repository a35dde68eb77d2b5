"""The default executor: every shard in this process, one model loaded once."""

from __future__ import annotations

from collections.abc import Iterator

from xmodal.executors.job import EmbedJob
from xmodal.shards.format import PlannedShard, ShardRecord


def run_local(job: EmbedJob, shards: list[PlannedShard]) -> Iterator[ShardRecord]:
    encoders = job.encoders()
    for shard in shards:
        yield job.run(shard, encoders)
