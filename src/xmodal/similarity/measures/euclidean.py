"""Euclidean distance, negated: -|x - y|, exact.

The product form |q|^2 - 2 q.g + |g|^2 (a fast matrix product) cancels catastrophically when
distances are small next to the vectors' norms: near-duplicates, or vectors sharing a large
offset (every coordinate ~1000: float32 then keeps no digit of the distances). Distances are
translation invariant, so both sides are first centred on the gallery mean, which removes any
shared offset. Then:

- block scores: the product form in float64 on the centred vectors (error below
  ~d 2^-53 (|q| + |g|)^2), and the direct formula where that still cancels
  (d^2 < CANCEL (|q|^2 + |g|^2)): every score is the direct formula's, to float32 rounding.
- top-k: a float32 pass (sgemm) keeps the best k + MARGIN candidates per query, on vectors
  centred on a sample's mean (or as they are, when that mean is already near the origin); they
  are rescored by the direct formula (float64) and re-ranked. A rigorous bound on the float32
  error (`_error_bound`) proves, for nearly every query, that no other gallery
  row comes within the k-th distance; the other queries get a second pass that rescores every
  row the bound cannot rule out. Order and ties are those of the direct formula.
"""

from __future__ import annotations

import numpy as np

from xmodal.similarity import kernels
from xmodal.similarity.metrics import MetricDef, register_metric
from xmodal.similarity.search import check_finite, product_merge, sq_norms

#: float64 product-form entries with d^2 < CANCEL * (|q|^2 + |g|^2) are recomputed directly
#: (elsewhere the relative error stays below ~1e-9 for d <= 4096)
CANCEL = 2.0**-12
#: candidates kept beyond k by the float32 pass, then re-ranked exactly (the re-rank reads each
#: candidate's row, and every kept candidate slows the heap merge; queries whose margin the
#: error bound cannot clear get the second pass: on Gaussian data, 5% of them with 1 extra,
#: 0.1% with 2, none with 3 to 8, at the COCO-5K shape and 100 x 1,000,000 x 384)
MARGIN = 4
#: gallery rows sampled to choose the centre of the float32 pass
CENTRE_SAMPLE = 4096
#: float64 product-form tile: query rows x gallery rows (32 MB)
TILE_ROWS, TILE_COLS = 1024, 4096
_U32 = 2.0**-24  # float32 unit roundoff


def _reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return -np.sqrt(((q - g) ** 2).sum(2))


def _scores(q: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    if len(q) == 0 or len(g) == 0:
        return
    m = g.mean(0, dtype=np.float64)
    for g0 in range(0, len(g), TILE_COLS):
        gc = g[g0 : g0 + TILE_COLS] - m
        gg = sq_norms(gc)
        for q0 in range(0, len(q), TILE_ROWS):
            qc = q[q0 : q0 + TILE_ROWS] - m
            qq = sq_norms(qc)
            d2 = qc @ gc.T
            d2 *= -2
            d2 += qq[:, None]
            d2 += gg[None, :]
            # a scalar bound first (a boolean temporary, not a float one), then the exact test
            rows, cols = np.nonzero(d2 < CANCEL * (qq.max() + gg.max()))
            keep = d2[rows, cols] < CANCEL * (qq[rows] + gg[cols])
            rows, cols = rows[keep], cols[keep]
            d2[rows, cols] = kernels.pair_sq_distances(q, g, rows + q0, cols + g0)
            np.maximum(d2, 0, out=d2)
            out[q0 : q0 + len(qc), g0 : g0 + len(gc)] = -np.sqrt(d2)


def _product(qb: np.ndarray, gb: np.ndarray, out: np.ndarray) -> None:
    np.matmul(qb, gb.T, out=out)


def _error_bound(d: int, q_norms: np.ndarray, g_norm: float) -> np.ndarray:
    """Bound on |float32 (2 q.g - |g|^2) - exact| over centred vectors, centring included:
    gamma_d (2 |q||g| + |g|^2) for the products, a few roundings more for the rest."""
    return 1.25 * (d + 8) * _U32 * (q_norms + g_norm) ** 2


def _centre(g: np.ndarray) -> np.ndarray | None:
    """The mean of evenly spaced gallery rows, or None where it is within 1/16 of the rows'
    spread of the origin: the float32 pass then reads the gallery in place, not a centred copy
    of each block, for an error bound at most ~13% wider. Any translation keeps distances, so
    a sample's mean removes a shared offset as well as the full mean (one pass less)."""
    sample = g[:: max(1, len(g) // CENTRE_SAMPLE)].astype(np.float64)
    centre = sample.mean(0)
    spread = ((sample - centre) ** 2).sum(1).mean()
    return None if centre @ centre * 256 <= spread else centre.astype(np.float32)


def _shifted(x: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    return x if centre is None else x - centre


def _topk(q: np.ndarray, g: np.ndarray, k: int, block_size: int):
    centre = _centre(g)
    qc = _shifted(q, centre)
    g_norms = [0.0]  # each block's largest centred norm (threads append: atomic)

    def centred(gb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gb = _shifted(gb, centre)
        gg = sq_norms(gb)
        g_norms.append(float(np.sqrt(gg.max(initial=0))))
        return gb, np.full(len(gb), 2, np.float32), -gg  # ranks like -|qc - gc|^2 + |qc|^2

    size = min(len(g), k + MARGIN)
    approx, cand = product_merge(qc, g, size, block_size, _product, centred)
    check_finite(cand)
    d2, idx = kernels.rerank_sq_distances(q, g, cand, k)
    if size < len(g):
        qq = sq_norms(qc, np.float64)
        bound = _error_bound(q.shape[1], np.sqrt(qq), max(g_norms))
        # every row outside the candidates is at least this far, in squared distance
        outside = qq - approx.min(1).astype(np.float64) - bound
        doubt = np.flatnonzero(outside <= d2[:, -1])
        if len(doubt):
            d2[doubt], idx[doubt] = _rescan(q, g, qc, centre, doubt, d2[doubt, -1], k, block_size)
    return -np.sqrt(d2).astype(np.float32), idx


def _best_k(rows: np.ndarray, cols: np.ndarray, d2: np.ndarray, k: int):
    """Per row (rows ascending after sorting), the k smallest d2, ties to the lower column."""
    order = np.lexsort((cols, d2, rows))
    rows, cols, d2 = rows[order], cols[order], d2[order]
    keep = np.arange(len(rows)) - np.searchsorted(rows, rows) < k
    return d2[keep], cols[keep], rows[keep]


def _rescan(q, g, qc, centre, which, limit, k, block_size):
    """Exact top-k of queries `which` among all gallery rows the float32 bound cannot place
    beyond `limit` (a squared distance at least the k-th best's)."""
    qf = qc[which]
    qq = sq_norms(qf, np.float64)
    cols = max(1, block_size // (2 * len(which)))
    best = (np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.int64))
    for g0 in range(0, len(g), cols):
        gb = _shifted(g[g0 : g0 + cols], centre)
        gg = sq_norms(gb)
        bound = _error_bound(q.shape[1], np.sqrt(qq), float(np.sqrt(gg.max())))
        approx = qf @ gb.T
        approx *= 2
        approx -= gg
        r, c = np.nonzero(qq[:, None] - approx - bound[:, None] <= limit[:, None])
        exact = kernels.pair_sq_distances(q, g, which[r], c + g0)
        d2, cc, rr = best
        best = _best_k(
            np.concatenate([rr, r]), np.concatenate([cc, c + g0]), np.concatenate([d2, exact]), k
        )
    d2, cols_, rows_ = best
    if not (np.bincount(rows_, minlength=len(which)) == k).all():
        raise RuntimeError("Euclidean top-k lost a candidate; this is a bug")
    return d2.reshape(-1, k), cols_.reshape(-1, k)


def _torch(a, b, eps: float = 1e-8):
    import torch

    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return -torch.sqrt(sq.clamp_min(eps))


register_metric("euclidean", MetricDef(_reference, _scores, _torch, topk=_topk))
