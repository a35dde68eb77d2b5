"""The default executor: every shard in this process, one model loaded once."""

from __future__ import annotations

from collections.abc import Iterator

from xmodal.executors.job import EmbedJob
from xmodal.shards.format import ShardRecord, ShardTask


def run_local(job: EmbedJob, tasks: list[ShardTask]) -> Iterator[ShardRecord]:
    encoders = job.encoders()
    for task in tasks:
        yield job.run(task, encoders)
