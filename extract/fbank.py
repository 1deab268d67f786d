"""Log-mel filterbanks with speechbrain's ``Fbank`` (the features every speechbrain recipe uses)."""

from __future__ import annotations

import numpy as np
import torch
from speechbrain.lobes.features import Fbank
from torch import nn

from extract.config import ExtractConfig


class LogMel(nn.Module):
    """Waveform (n,) → log-mel (T, n_mels), T = 1 + n // hop (speechbrain centres its frames)."""

    def __init__(self, cfg: ExtractConfig) -> None:
        super().__init__()
        self.win_samples = cfg.win_samples
        self.fbank = Fbank(
            sample_rate=cfg.sample_rate,
            n_mels=cfg.n_mels,
            win_length=cfg.win_ms,
            hop_length=cfg.hop_ms,
            n_fft=_next_pow2(cfg.win_samples),
            f_min=cfg.f_min,
            f_max=cfg.f_max,
        )
        self.eval()

    @torch.inference_mode()
    def forward(self, audio: np.ndarray | torch.Tensor) -> np.ndarray:
        wav = torch.as_tensor(np.asarray(audio, dtype=np.float32)).unsqueeze(0)
        return self.fbank(wav)[0].numpy()


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
