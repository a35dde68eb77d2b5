"""Score blocks and exact top-k (first version: torch kernels; memory bounded by the block)."""

from __future__ import annotations

import numpy as np
import torch

from xmodal.similarity.metrics import Metric, torch_scores

DEFAULT_BLOCK = 1024


def block_scores(queries: np.ndarray, gallery: np.ndarray, metric: Metric | str) -> np.ndarray:
    """nq x ng float32 scores for one block of queries against a gallery."""
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gallery, np.float32))
    with torch.inference_mode():
        if Metric(metric) is Metric.CHI_SQUARE:
            out = torch.cat([torch_scores(q[i : i + 64], g, metric) for i in range(0, len(q), 64)])
            return out.numpy() if len(q) else np.zeros((0, len(g)), np.float32)
        return torch_scores(q, g, metric).numpy()


def topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    metric: Metric | str,
    block_size: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k gallery rows per query: (scores, indices), each nq x min(k, ng), best first."""
    k = min(k, len(gallery))
    scores = np.empty((len(queries), k), np.float32)
    index = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), block_size):
        block = torch.from_numpy(block_scores(queries[s : s + block_size], gallery, metric))
        v, i = torch.topk(block, k, dim=1)
        scores[s : s + block_size], index[s : s + block_size] = v.numpy(), i.numpy()
    return scores, index
