"""Networks for audio-visual teachers and audio-only students (see docs/models.md).

Every family is a registry keyed by the names configs use; ``build_network`` assembles them.
"""

from distill.models.aggregation import AGGREGATORS
from distill.models.audio import AUDIO_ENCODERS
from distill.models.config import ModelConfig
from distill.models.fusion import FUSIONS
from distill.models.heads import HEADS
from distill.models.network import ROLES, SETTINGS, AudioVisualEncoder, DistillNetwork, NetOutput, build_network
from distill.models.visual import VISUAL_ENCODERS

__all__ = [
    "AGGREGATORS",
    "AUDIO_ENCODERS",
    "FUSIONS",
    "HEADS",
    "VISUAL_ENCODERS",
    "ROLES",
    "SETTINGS",
    "AudioVisualEncoder",
    "DistillNetwork",
    "ModelConfig",
    "NetOutput",
    "build_network",
]
