"""Audio speaker diarization: who speaks when, from the separated vocals (faces join later).

Modules: :mod:`.config` (``DiarizationConfig``), :mod:`.records` (``DiarizationResult``), :mod:`.vad` (Silero),
:mod:`.embed` (GE2E d-vectors), :mod:`.cluster`, :mod:`.overlap`, :mod:`.frames`, :mod:`.offline` (the offline
real-weight back-end), :mod:`.pyannote_backend` (pyannote.audio 4.x), :mod:`.rttm`, :mod:`.bench` (command line).
Scoring lives in :mod:`cinedub.eval.diarization`, word assignment in :mod:`cinedub.ops.words_to_speakers`, the stage in
:mod:`cinedub.stages.diarization`. Importing this package loads neither torch nor pyannote.
"""

from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult, OverlapRegion, SpeakerEmbedding

__all__ = ["DiarizationConfig", "DiarizationResult", "OverlapRegion", "SpeakerEmbedding"]
