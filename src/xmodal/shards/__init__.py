"""Sharded embeddings on disk: the format `xmodal embed` writes and every later stage reads."""

from xmodal.shards.format import (
    PlannedShard,
    ShardRecord,
    ShardTask,
    embed_shard,
    plan_shard,
    shard_files,
)
from xmodal.shards.reader import Shard, ShardedEmbeddings

__all__ = [
    "PlannedShard",
    "Shard",
    "ShardRecord",
    "ShardTask",
    "ShardedEmbeddings",
    "embed_shard",
    "plan_shard",
    "shard_files",
]
