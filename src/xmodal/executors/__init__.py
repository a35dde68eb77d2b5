"""Executors run `embed_shard` over shard tasks: `local` (this process) or `ray` (Ray Data)."""

from xmodal.executors.job import DEFAULT_SHARD_SIZE, EmbedJob, EmbedResult, embed_collection
from xmodal.executors.local import run_local

__all__ = ["DEFAULT_SHARD_SIZE", "EmbedJob", "EmbedResult", "embed_collection", "run_local"]
