"""The shared trainer of the torch aligners: batching, optimiser, schedule, model selection.

A batch is a random set of captions with their images; images shared by several captions of
the batch appear once, and every caption of an image counts as a positive for it. With
validation pairs (`FitContext.val`) the model is evaluated every `eval_every` epochs and the
state with the best validation score (`FitContext.primary`, over `FitContext.ks`) is kept
(early stopping after `patience` evaluations without improvement); the test split is never
seen. Same seed -> same numbers (seeded init, dropout and batching). A non-finite loss, weight
or validation score ends the fit with FitDiverged: no such state is ever kept or reported.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xmodal.align.base import Aligner, FitContext, FitDiverged, Scorer
from xmodal.align.losses import MSE, build_loss
from xmodal.align.nets import PairModel, blocked_pair_scores
from xmodal.embeddings import Embedded
from xmodal.similarity.differentiable import torch_scores
from xmodal.similarity.metrics import Metric
from xmodal.similarity.ranking import retrieval_scores

#: rows per forward pass when transforming a whole split
TRANSFORM_BLOCK = 8192


class TorchAligner(Aligner):
    """Base of the aligners trained with torch; subclasses say how to build the model.

    Training parameters, shared by all: `loss` and its own `loss_params` (e.g. temperature,
    margin; see xmodal.align.losses), `standardize` the inputs, `epochs`, `batch_size`, `lr`,
    `weight_decay` (AdamW, weight matrices only), `eval_every` epochs a validation, and
    `patience` evaluations without a better validation score before stopping.
    """

    trained = True
    #: False for aligners whose scorer is a learned network (no regression loss for them)
    supports_mse: bool = True
    #: set by fit: loss (and validation score) per epoch, the kept epoch (None without
    #: validation), and {"best_epoch", "stopped_epoch"} for the results row
    history_: list[dict[str, float]]
    best_epoch_: int | None
    fit_report_: dict[str, int | None]

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        loss: str = "infonce",
        loss_params: dict[str, Any] | None = None,
        standardize: bool = True,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        eval_every: int = 5,
        patience: int = 6,
    ) -> None:
        self.metric = Metric(metric)
        self.loss, self.loss_params = loss, dict(loss_params or {})
        self.standardize = standardize
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.weight_decay, self.eval_every, self.patience = weight_decay, eval_every, patience
        build_loss(loss, **self.loss_params)  # fail now on a bad loss name or parameter
        if epochs < 1 or batch_size < 2 or eval_every < 1 or patience < 1:
            raise ValueError(
                f"aligner {self.kind!r}: epochs, eval_every, patience >= 1, batch >= 2"
            )
        if loss == "mse" and not self.supports_mse:
            raise ValueError(
                f"aligner {self.kind!r} scores pairs with a learned network, which a regression "
                "(mse) loss cannot train: it has no score matrix; use infonce, hinge, listnet "
                "or listmle"
            )
        self.model_: PairModel | None = None

    # subclass hooks -------------------------------------------------------------------------
    @abstractmethod
    def _build(self, d_text: int, d_image: int) -> PairModel:
        """A fresh (untrained) model for these input dims."""

    # persistence ----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        model = self._fitted()
        dims = np.array([model.std_text.mean.numel(), model.std_image.mean.numel()], np.int64)
        tensors = {f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return {"dims": dims, **tensors}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        d_text, d_image = (int(d) for d in tensors["dims"])
        model = self._build(d_text, d_image)
        state = {k[len("model.") :]: torch.from_numpy(v) for k, v in tensors.items() if k != "dims"}
        model.load_state_dict(state)
        self.model_ = model.to(self._device()).eval()

    # transform / score ----------------------------------------------------------------------
    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return self._apply(self._fitted().texts, y)

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return self._apply(self._fitted().images, x)

    def scorer(self) -> Scorer:
        model = self._fitted()
        if model.pair is None:
            return super().scorer()
        device = self._device()
        return lambda q, g: blocked_pair_scores(model.pair, q, g, device)

    def _apply(self, fn, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        blocks = [x[s : s + TRANSFORM_BLOCK] for s in range(0, len(x), TRANSFORM_BLOCK)] or [x]
        with torch.inference_mode():
            out = [fn(torch.from_numpy(np.ascontiguousarray(b)).to(self._device())) for b in blocks]
            return np.concatenate([o.float().cpu().numpy() for o in out])

    def _fitted(self) -> PairModel:
        if self.model_ is None:
            raise RuntimeError(f"aligner {self.kind!r} is not fitted; call fit() or load it")
        return self.model_

    def _device(self) -> str:
        """The fit's device; a loaded model's is cuda when present, else cpu."""
        from xmodal.encoders.base import default_device

        return getattr(self, "device_", None) or default_device()

    # training -------------------------------------------------------------------------------
    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        context = context or FitContext()
        _check_inputs(train, "train")
        val = context.val
        if val is not None:
            _check_inputs(val, "val")
            for part in ("images", "texts"):
                got, want = getattr(val, part).shape[1], getattr(train, part).shape[1]
                if got != want:
                    raise ValueError(f"val.{part} are {got}-d but train.{part} {want}-d")
        from xmodal.encoders.base import default_device

        torch.manual_seed(context.seed)
        self.device_ = device = context.device or default_device()
        texts = torch.from_numpy(np.asarray(train.texts, np.float32)).to(device)
        images = torch.from_numpy(np.asarray(train.images, np.float32)).to(device)
        owner = torch.from_numpy(np.asarray(train.caption_image, np.int64)).to(device)
        model = self._build(texts.shape[1], images.shape[1]).to(device)
        if self.standardize:
            model.std_text.fit(texts)
            model.std_image.fit(images[owner.unique()])
        self.model_ = model
        loss_fn = build_loss(self.loss, **self.loss_params).to(device)
        with _cpu_threads(1 if torch.device(device).type == "cpu" else None):
            _Trainer(self, model, loss_fn, texts, images, owner, context.seed).run(context)
        return self


@contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Run torch on `n` CPU threads inside the block.

    Training batches are small (a few hundred rows): intra-op threads gain little on them, and
    when other processes load the CPU, OpenMP threads waiting on each other made one fit 30x
    slower (measured: 37 s on 2 threads vs 1.3 s on 1, linear InfoNCE on Tux Paint).
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Trainer:
    """One fit: the loop state kept out of the aligner."""

    def __init__(
        self,
        aligner: TorchAligner,
        model: PairModel,
        loss_fn: nn.Module,
        texts,
        images,
        owner,
        seed: int,
    ):
        self.aligner, self.model, self.loss_fn = aligner, model, loss_fn
        self.texts, self.images, self.owner = texts, images, owner
        self.generator = torch.Generator().manual_seed(seed)
        n = len(texts)
        self.steps_per_epoch = max(1, n // min(aligner.batch_size, n))
        self.optimizer = _adamw(model, loss_fn, aligner.lr, aligner.weight_decay)
        total = aligner.epochs * self.steps_per_epoch
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * min(step, total) / total))
        )

    def run(self, context: FitContext) -> None:
        """Train; keep the state of the best validation score (the last one without val).
        Fills the aligner's history_, best_epoch_ and fit_report_."""
        aligner, model, val = self.aligner, self.model, context.val
        best, best_state, stale, epoch = -math.inf, None, 0, 0
        aligner.history_, aligner.best_epoch_ = [], None
        column = f"val_{context.primary}"
        desc = context.label or f"fit {aligner.kind}"
        # a manual bar: one driven by the loop would close itself on `break`, before it can
        # say where early stopping ended
        bar = tqdm(total=aligner.epochs, desc=desc, disable=not context.progress)
        for epoch in range(1, aligner.epochs + 1):
            model.train()
            record: dict[str, float] = {"epoch": epoch, "loss": self.epoch(epoch)}
            self.check_weights(epoch)
            if val is not None and (epoch % aligner.eval_every == 0 or epoch == aligner.epochs):
                model.eval()
                record[column] = self.validate(val, context, epoch)
                if record[column] > best:
                    best, stale = record[column], 0
                    best_state = copy.deepcopy(model.state_dict())
                    aligner.best_epoch_ = epoch
                else:
                    stale += 1
            aligner.history_.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
            bar.update()
            if stale >= aligner.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        kept = f", kept {aligner.best_epoch_}" if aligner.best_epoch_ else ""
        bar.set_postfix_str(f"stopped at epoch {epoch}{kept}")  # not frozen at 39%
        bar.close()
        aligner.fit_report_ = {"best_epoch": aligner.best_epoch_, "stopped_epoch": epoch}

    def epoch(self, epoch: int) -> float:
        n, bs = len(self.texts), min(self.aligner.batch_size, len(self.texts))
        order = torch.randperm(n, generator=self.generator).to(self.texts.device)
        total = 0.0
        for step in range(self.steps_per_epoch):  # the remainder batch is dropped
            loss = self.batch_loss(order[step * bs : (step + 1) * bs])
            value = loss.item()
            if not math.isfinite(value):
                raise FitDiverged(self.aligner.kind, epoch, f"training loss is {value}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            total += value
        return total / self.steps_per_epoch

    def check_weights(self, epoch: int) -> None:
        for name, weight in self.model.state_dict().items():
            if weight.is_floating_point() and not torch.isfinite(weight).all():
                raise FitDiverged(self.aligner.kind, epoch, f"weight {name} holds NaN or inf")

    def validate(self, val: Embedded, context: FitContext, epoch: int) -> float:
        """The primary validation score; non-finite scores (which rank as ties, and can make
        a dead model look perfect) raise FitDiverged."""
        aligner = self.aligner
        scorer = aligner.scorer()

        def finite(texts: np.ndarray, images: np.ndarray) -> np.ndarray:
            scores = scorer(texts, images)
            if not np.isfinite(scores).all():
                raise FitDiverged(aligner.kind, epoch, "validation scores hold NaN or inf")
            return scores

        value = retrieval_scores(aligner.transform(val), finite, context.ks)[context.primary]
        if not math.isfinite(value):
            raise FitDiverged(aligner.kind, epoch, f"validation {context.primary} is {value}")
        return value

    def batch_loss(self, rows: torch.Tensor) -> torch.Tensor:
        model = self.model
        rows_image, inverse = self.owner[rows].unique(return_inverse=True)
        u = model.texts(self.texts[rows])
        v = model.images(self.images[rows_image])
        if isinstance(self.loss_fn, MSE):
            return self.loss_fn(u, v[inverse])
        positives = inverse[:, None] == torch.arange(len(rows_image), device=u.device)[None, :]
        relevance = None
        if self.loss_fn.graded:  # image-image similarity of the inputs grades the negatives
            x = model.std_image(self.images[rows_image])
            relevance = torch_scores(x[inverse], x, Metric.COSINE)
        return self.loss_fn(model.score(u, v), positives, relevance)


def _adamw(
    model: nn.Module, loss_fn: nn.Module, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices only (not biases, norms, temperature). The fused
    kernel updates every parameter in one call: 24% less CPU per MLP fit than the per-tensor
    loop (profiled on configs/paper.yaml's mlp), with the same update rule."""
    params = [p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def _check_inputs(data: Embedded, name: str) -> None:
    for part in ("images", "texts"):
        arr = getattr(data, part)
        if arr.ndim != 2 or len(arr) == 0:
            raise ValueError(f"{name}.{part} must be a non-empty 2-d array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}.{part} holds NaN or inf values (failed embeddings?)")
