"""A network over every cell of an evaluation dataset, averaged per utterance: the predictions
that validation, test metrics, cohorts and teacher targets are computed from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from distill.config import DataConfig
from distill.data.dataset import GridDataset, collate
from distill.models import DistillNetwork
from distill.precision import Precision


@dataclass
class Predictions:
    """Per-utterance outputs: mean embedding and mean logits over the utterance's grid cells."""

    utt_ids: list[str]
    labels: np.ndarray  # class ids, -1 where the class was not seen in training
    emb: np.ndarray  # (N, D)
    logits: np.ndarray  # (N, C)


@torch.no_grad()
def forward_cells(
    net: torch.nn.Module,
    dataset: GridDataset,
    precision: Precision,
    *,
    video: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
):
    """Yield ``(batch, NetOutput)`` for every cell of an evaluation dataset, in order, in eval mode.

    ``num_workers`` loader processes read and crop cells while the network runs; on CUDA batches are
    pinned and copied without blocking. Neither changes a result: cells stay in dataset order.

    ``video=False`` drops the faces even for a teacher: the "video missing" evaluation. The
    network's train/eval mode is restored when the iteration ends. Whole utterances of
    ``nonseq`` (``data.eval_span=utterance``) run one per forward pass: padding frames would reach
    the encoder's convolutions and pooling, so an utterance is only ever seen at its own length.
    """
    if dataset.train:
        raise ValueError("needs an evaluation dataset (train=False): every cell of every item")
    if dataset.grid.span == "utterance" and not dataset.grid.segmented:
        batch_size = 1
    device = precision.device
    cuda = device.type == "cuda"
    was_training = net.training
    net.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=cuda,  # page-locked batches copy to the GPU asynchronously (non_blocking below)
        worker_init_fn=_one_thread if num_workers else None,
    )

    def to_device(key: str, wanted: bool = True):
        return batch[key].to(device, non_blocking=cuda) if wanted and key in batch else None

    try:
        for batch in loader:
            face, mask, seg_mask = to_device("face", video), to_device("face_mask", video), to_device("seg_mask")
            with precision.autocast():
                out = net(to_device("fbank"), face=face, face_mask=mask, seg_mask=seg_mask)
            yield batch, out
    finally:
        net.train(was_training)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # N loader workers x M threads would oversubscribe the cores


def predict(
    net: torch.nn.Module,
    dataset: GridDataset,
    precision: Precision,
    *,
    video: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Predictions:
    """Run `net` over every cell of an evaluation dataset and average per utterance."""
    n = len(dataset.utt_ids)
    emb_sum = logit_sum = None
    counts = np.zeros(n)
    for batch, out in forward_cells(
        net, dataset, precision, video=video, batch_size=batch_size, num_workers=num_workers
    ):
        emb, logits = out.emb.float().cpu().numpy(), out.logits.float().cpu().numpy()
        if emb_sum is None:
            emb_sum, logit_sum = np.zeros((n, emb.shape[1])), np.zeros((n, logits.shape[1]))
        items = batch["item"].numpy()
        np.add.at(emb_sum, items, emb)
        np.add.at(logit_sum, items, logits)
        np.add.at(counts, items, 1)
    if emb_sum is None:
        raise ValueError("nothing to evaluate: the dataset is empty")
    return Predictions(dataset.utt_ids, dataset.labels, emb_sum / counts[:, None], logit_sum / counts[:, None])


@dataclass
class Evaluator:
    """A network and how evaluation runs it: precision (device, autocast), batch size and loader workers."""

    net: DistillNetwork
    precision: Precision
    batch_size: int = 64
    num_workers: int = 0

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def predict(self, dataset: GridDataset, video: bool = True) -> Predictions:
        return predict(
            self.net, dataset, self.precision, video=video, batch_size=self.batch_size, num_workers=self.num_workers
        )


def eval_batch_size(cfg: DataConfig) -> int:
    """Evaluation batches: 4x the training batch, at least 64 cells. Without gradients a forward
    pass holds one layer's activations at a time, not every layer's as a training step does, so
    4x the training batch fits where training fits; in eval mode the batch changes no output."""
    return max(64, 4 * cfg.batch_size)
