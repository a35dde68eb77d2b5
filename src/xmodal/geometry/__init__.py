"""Geometry of the modality gap: measures between the image and text clouds, and their plots.

Plots live in `xmodal.geometry.plots` (imported on demand: it pulls in matplotlib).
"""

from xmodal.geometry.correlation import rank_correlations
from xmodal.geometry.measures import (
    first_caption_pairs,
    gap_vector,
    linear_cka,
    modality_gap,
    mutual_knn,
    pair_distances,
    pair_statistics,
    separability,
    separation_auc,
    subsample,
)
from xmodal.geometry.summary import gap_measures, measured_space, skipped_measures
from xmodal.geometry.wasserstein import (
    Sinkhorn,
    gromov_wasserstein,
    wasserstein_exact,
    wasserstein_gaussian,
    wasserstein_sinkhorn,
    wasserstein_sliced,
)

__all__ = [
    "first_caption_pairs",
    "gap_measures",
    "gap_vector",
    "gromov_wasserstein",
    "linear_cka",
    "measured_space",
    "modality_gap",
    "mutual_knn",
    "pair_distances",
    "pair_statistics",
    "rank_correlations",
    "separability",
    "separation_auc",
    "skipped_measures",
    "subsample",
    "wasserstein_exact",
    "wasserstein_gaussian",
    "wasserstein_sinkhorn",
    "wasserstein_sliced",
    "Sinkhorn",
]
