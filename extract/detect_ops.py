"""Tensor ops of the batched face detector: box crops resampled exactly as ``interpolate(mode="area")``
would resample each crop on its own, NMS keyed per frame, the largest box per frame.

Every op takes all boxes of all frames of a batch at once and stays on the frames' device; none
loops over frames or boxes in Python. facenet-pytorch's MTCNN crops each candidate box and resizes
it with its own ``interpolate`` call; an area resize of a box is an average over integer pixel
ranges, so one summed-area table per frame turns every crop of every box into four gathers.
Sums of uint8 pixels are integers, exact in int32/int64, so the crops equal facenet's to the
rounding of the final division (bit for bit where facenet truncates them to uint8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import nms


def integral_image(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) frames → (B, H+1, W+1, C) summed-area tables, exact integers.

    int32 holds the sum of a whole frame of 255s up to 2896² pixels; larger frames get int64.
    """
    _, h, w, _ = frames.shape
    dtype = torch.int32 if h * w * 255 < 2**31 else torch.int64
    sums = frames.to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return F.pad(sums, (0, 0, 1, 0, 1, 0))  # a zero row and column in front


def _bin_edges(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-pooling bins of ``length`` pixels into ``size`` cells, from ``start``: (N, size) each.

    Cell i covers [floor(i·L/size), ceil((i+1)·L/size)): PyTorch's adaptive average pooling, which
    is what ``interpolate(mode="area")`` runs.
    """
    i = torch.arange(size, device=start.device, dtype=start.dtype)
    lo = (i[None] * length[:, None]).div(size, rounding_mode="floor")
    hi = ((i[None] + 1) * length[:, None] + size - 1).div(size, rounding_mode="floor")
    return start[:, None] + lo, start[:, None] + hi


def area_crops(
    table: torch.Tensor,
    frame: torch.Tensor,
    y0: torch.Tensor,
    x0: torch.Tensor,
    y1: torch.Tensor,
    x1: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Rows [y0, y1) × columns [x0, x1) of frame ``frame[n]`` for every n, area-resized to size × size.

    ``table`` is :func:`integral_image` of the frames; the boxes are integer tensors (N,) and must
    be non-empty and inside the frame. Returns float32 (N, C, size, size) with pixel values 0..255,
    equal to ``interpolate(frames[n, y0:y1, x0:x1] as (1, C, h, w), (size, size), mode="area")``.
    """
    rows_lo, rows_hi = _bin_edges(y0.long(), (y1 - y0).long(), size)  # (N, size)
    cols_lo, cols_hi = _bin_edges(x0.long(), (x1 - x0).long(), size)
    f = frame.long()[:, None, None]
    rl, rh = rows_lo[:, :, None], rows_hi[:, :, None]
    cl, ch = cols_lo[:, None, :], cols_hi[:, None, :]
    total = table[f, rh, ch] - table[f, rl, ch] - table[f, rh, cl] + table[f, rl, cl]  # (N, size, size, C)
    # PyTorch's pooling divides the float sum by the bin's height, then by its width.
    out = total.float() / (rh - rl).float()[..., None] / (ch - cl).float()[..., None]
    return out.permute(0, 3, 1, 2)


#: Most boxes per NMS call, by device type. One call over N boxes costs O(N²) (all pairs on a
#: GPU, kept × N on a CPU; torchvision's CUDA kernel also holds N²/8 bytes of masks), so large
#: inputs are cut into groups of whole keys.
NMS_CHUNK = {"cpu": 4096, "cuda": 65536}


def nms_per_frame(
    boxes: torch.Tensor, scores: torch.Tensor, key: torch.Tensor, threshold: float, limit: int | None = None
) -> torch.Tensor:
    """Indices of the boxes torchvision's greedy IoU NMS keeps, each ``key`` (frame) on its own.

    Each key's boxes are shifted to a region of their own (float64, so the shift changes no IoU)
    and one ``nms`` call takes them all: the trick torchvision's ``batched_nms`` uses for small
    inputs (for large ones it runs one NMS per key in a Python loop: per-frame Python). Past
    ``limit`` boxes (default :data:`NMS_CHUNK`) the keys are split into groups, one call each.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    limit = limit or NMS_CHUNK.get(boxes.device.type, 16384)
    if len(boxes) <= limit:
        return _shifted_nms(boxes, scores, key, threshold)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    marks = sorted_key[::limit].contiguous()  # the key at every limit-th box: a group starts where it does
    cuts = torch.unique(torch.searchsorted(sorted_key, marks)).tolist() + [len(boxes)]
    kept = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        part = order[lo:hi]
        kept.append(part[_shifted_nms(boxes[part], scores[part], key[part], threshold)])
    return torch.cat(kept)


def _shifted_nms(boxes: torch.Tensor, scores: torch.Tensor, key: torch.Tensor, threshold: float) -> torch.Tensor:
    coords = boxes.double()
    span = coords.max() - coords.min() + 1
    shifted = coords + (key.double() * span)[:, None]
    return nms(shifted, scores.double(), threshold)


def min_nms_per_frame(boxes: torch.Tensor, scores: torch.Tensor, frame: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS on the intersection over the *smaller* box (areas with MATLAB's +1), per frame:
    what MTCNN's last stage runs (facenet-pytorch does it in numpy on the host). Returns a bool
    keep mask over the input boxes.

    Boxes are laid out as (frames, K) by score rank (K: the most any frame has, a handful after
    O-Net), and the greedy pass walks the K ranks with one batched step each: rank r, if still
    kept, suppresses the lower-ranked boxes of its frame that overlap it by more than ``threshold``.
    """
    n = len(boxes)
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    if n == 0:
        return keep
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(frame[order], stable=True)]  # by frame, best first within each
    f = frame[order]
    first = torch.searchsorted(f, f, right=False)  # each box's frame's first position
    rank = torch.arange(n, device=boxes.device) - first
    k = int(rank.max()) + 1
    frames, slot = torch.unique_consecutive(f, return_inverse=True)
    grid = torch.full((len(frames), k, 4), float("nan"), dtype=boxes.dtype, device=boxes.device)
    grid[slot, rank] = boxes[order]
    x1, y1, x2, y2 = grid.unbind(-1)  # (G, K) each
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :]) + 1).clamp(min=0)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :]) + 1).clamp(min=0)
    overlap = w * h / torch.minimum(area[:, :, None], area[:, None, :])  # (G, K, K), NaN where a slot is empty
    ranks = torch.arange(k, device=boxes.device)
    suppresses = (overlap > threshold) & (ranks[:, None] < ranks[None, :])  # rank i over a lower rank j > i
    alive = torch.zeros((len(frames), k), dtype=torch.bool, device=boxes.device)
    alive[slot, rank] = True
    for r in range(k):  # k ranks, each step batched over every frame
        alive &= ~(suppresses[:, r] & alive[:, r : r + 1])
    keep[order] = alive[slot, rank]
    return keep


def largest_per_frame(
    boxes: torch.Tensor, scores: torch.Tensor, frame: torch.Tensor, n_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest box of each frame (ties: the higher score): (n_frames, 4) boxes, zeros where a
    frame has none, and the (n_frames,) found mask."""
    out = torch.zeros((n_frames, 4), dtype=boxes.dtype, device=boxes.device)
    found = torch.zeros(n_frames, dtype=torch.bool, device=boxes.device)
    if len(boxes) == 0:
        return out, found
    corners = boxes.double()  # as facenet-pytorch's callers compare areas: in float64
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(area[order], descending=True, stable=True)]
    order = order[torch.argsort(frame[order], stable=True)]
    f = frame[order]
    head = torch.ones_like(f, dtype=torch.bool)
    head[1:] = f[1:] != f[:-1]
    best = order[head]
    out[frame[best]] = boxes[best]
    found[frame[best]] = True
    return out, found
