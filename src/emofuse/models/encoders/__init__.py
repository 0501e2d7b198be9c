"""Raw-input encoders (per word span): Harris-3D attention + 3D CNN for video, 2D CNN for audio.

Each file registers itself; importing this package imports them all.
"""

from emofuse.models.encoders import audio_cnn, harris, video_cnn, whisper_audio  # noqa: F401
from emofuse.models.encoders.registry import create_encoder, get_encoder, list_encoders, register_encoder

__all__ = ["create_encoder", "get_encoder", "list_encoders", "register_encoder"]
