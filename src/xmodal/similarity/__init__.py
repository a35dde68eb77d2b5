"""(Dis)similarities between embeddings: scores (higher = closer) and exact top-k in blocks."""

from xmodal.similarity.metrics import Metric, l2_normalize, reference_scores
from xmodal.similarity.search import block_scores, topk

__all__ = ["Metric", "block_scores", "l2_normalize", "reference_scores", "topk"]
# differentiable (torch) scores for training: xmodal.similarity.differentiable.torch_scores
