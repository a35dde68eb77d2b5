"""The shared trainer of the torch aligners: batching, optimiser, schedule, model selection.

A batch is a random set of captions with their images; images shared by several captions of
the batch appear once, and every caption of an image counts as a positive for it. With a
validation split the model is evaluated every `eval_every` epochs and the state with the best
validation RSUM is kept (early stopping after `patience` evaluations without improvement);
the test split is never seen. Same seed -> same numbers (seeded init, dropout and batching).
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xmodal.align.base import Aligner, Scorer
from xmodal.align.losses import MSE, build_loss
from xmodal.align.nets import PairModel, blocked_pair_scores
from xmodal.embeddings import Embedded
from xmodal.similarity.differentiable import torch_scores
from xmodal.similarity.metrics import Metric
from xmodal.similarity.ranking import retrieval_scores

#: rows per forward pass when transforming a whole split
TRANSFORM_BLOCK = 8192


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of training shared by all torch aligners."""

    loss: str = "infonce"
    #: the loss's own hyper-parameters (e.g. temperature, margin), see xmodal.align.losses
    loss_params: dict[str, Any] = field(default_factory=dict)
    standardize: bool = True
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    eval_every: int = 5
    #: evaluations without a better validation RSUM before stopping
    patience: int = 6
    seed: int = 0

    @classmethod
    def parse(cls, kind: str, params: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(
                f"aligner {kind!r} got unknown parameter(s) {sorted(unknown)}; "
                f"training parameters: {sorted(known)}"
            )
        opts = cls(**params)
        build_loss(opts.loss, **opts.loss_params)  # fail now on a bad loss name or parameter
        if opts.epochs < 1 or opts.batch_size < 2 or opts.eval_every < 1 or opts.patience < 1:
            raise ValueError(f"aligner {kind!r}: epochs, eval_every, patience >= 1, batch >= 2")
        return opts


class TorchAligner(Aligner):
    """Base of the aligners trained with torch; subclasses say how to build the model."""

    #: False for aligners whose scorer is a learned network (no regression loss for them)
    supports_mse: bool = True
    #: what the `**training` keyword arguments take
    keyword_params: ClassVar[frozenset[str]] = frozenset(f.name for f in fields(TrainOptions))

    def __init__(
        self,
        metric: Metric | str,
        progress: bool = False,
        device: str | None = None,
        **training: Any,
    ) -> None:
        self.metric = Metric(metric)
        self.options = TrainOptions.parse(self.kind, training)
        if self.options.loss == "mse" and not self.supports_mse:
            raise ValueError(
                f"aligner {self.kind!r} scores pairs with a learned network, which a regression "
                "(mse) loss cannot train: it has no score matrix; use infonce, hinge, listnet "
                "or listmle"
            )
        self.progress = progress
        self.device = device
        self.model_: PairModel | None = None

    # subclass hooks -------------------------------------------------------------------------
    @abstractmethod
    def _build(self, d_text: int, d_image: int) -> PairModel:
        """A fresh (untrained) model for these input dims."""

    @abstractmethod
    def _model_params(self) -> dict[str, Any]:
        """The architecture hyper-parameters (besides metric and training options)."""

    # persistence ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {**self._model_params(), **asdict(self.options)}

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
        from xmodal.encoders.base import default_device

        return self.device or default_device()

    # training -------------------------------------------------------------------------------
    def fit(self, train: Embedded, val: Embedded | None = None) -> Self:
        opts = self.options
        _check_inputs(train, "train")
        if val is not None:
            _check_inputs(val, "val")
            for part in ("images", "texts"):
                got, want = getattr(val, part).shape[1], getattr(train, part).shape[1]
                if got != want:
                    raise ValueError(f"val.{part} are {got}-d but train.{part} {want}-d")
        torch.manual_seed(opts.seed)
        device = self._device()
        texts = torch.from_numpy(np.asarray(train.texts, np.float32)).to(device)
        images = torch.from_numpy(np.asarray(train.images, np.float32)).to(device)
        owner = torch.from_numpy(np.asarray(train.caption_image, np.int64)).to(device)
        model = self._build(texts.shape[1], images.shape[1]).to(device)
        if opts.standardize:
            model.std_text.fit(texts)
            model.std_image.fit(images[owner.unique()])
        self.model_ = model
        loss_fn = build_loss(opts.loss, **opts.loss_params).to(device)
        with _cpu_threads(1 if torch.device(device).type == "cpu" else None):
            _Trainer(self, model, loss_fn, texts, images, owner).run(val)
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
        self, aligner: TorchAligner, model: PairModel, loss_fn: nn.Module, texts, images, owner
    ):
        self.aligner, self.model, self.loss_fn = aligner, model, loss_fn
        self.texts, self.images, self.owner = texts, images, owner
        self.opts = aligner.options
        self.generator = torch.Generator().manual_seed(self.opts.seed)
        n = len(texts)
        self.steps_per_epoch = max(1, n // min(self.opts.batch_size, n))
        self.optimizer = _adamw(model, loss_fn, self.opts)
        total = self.opts.epochs * self.steps_per_epoch
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * min(step, total) / total))
        )

    def run(self, val: Embedded | None) -> None:
        aligner, model, opts = self.aligner, self.model, self.opts
        best, best_state, stale = -np.inf, None, 0
        aligner.history_ = []
        bar = tqdm(range(opts.epochs), desc=f"fit {aligner.kind}", disable=not aligner.progress)
        for epoch in bar:
            model.train()
            loss = self.epoch()
            record = {"epoch": epoch + 1, "loss": loss}
            if val is not None and ((epoch + 1) % opts.eval_every == 0 or epoch + 1 == opts.epochs):
                model.eval()
                scores = retrieval_scores(aligner.transform(val), aligner.scorer())
                record["val_rsum"] = scores["rsum"]
                if record["val_rsum"] > best:
                    best, stale = record["val_rsum"], 0
                    best_state = copy.deepcopy(model.state_dict())
                    aligner.best_epoch_ = epoch + 1
                else:
                    stale += 1
            aligner.history_.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
            if stale >= opts.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()

    def epoch(self) -> float:
        n, bs = len(self.texts), min(self.opts.batch_size, len(self.texts))
        order = torch.randperm(n, generator=self.generator).to(self.texts.device)
        total = 0.0
        for step in range(self.steps_per_epoch):  # the remainder batch is dropped
            loss = self.batch_loss(order[step * bs : (step + 1) * bs])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            total += loss.item()
        return total / self.steps_per_epoch

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


def _adamw(model: nn.Module, loss_fn: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices only (not biases, norms, temperature)."""
    params = [p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": opts.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=opts.lr)


def _check_inputs(data: Embedded, name: str) -> None:
    for part in ("images", "texts"):
        arr = getattr(data, part)
        if arr.ndim != 2 or len(arr) == 0:
            raise ValueError(f"{name}.{part} must be a non-empty 2-d array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}.{part} holds NaN or inf values (failed embeddings?)")
