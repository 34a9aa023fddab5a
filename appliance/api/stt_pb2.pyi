from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VADMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VAD_MODE_UNSPECIFIED: _ClassVar[VADMode]
    VAD_MODE_CONTINUE: _ClassVar[VADMode]
    VAD_MODE_AUTO_END: _ClassVar[VADMode]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_TRANSCRIBE: _ClassVar[Task]
    TASK_TRANSLATE: _ClassVar[Task]

class SpeechEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEECH_EVENT_UNSPECIFIED: _ClassVar[SpeechEvent]
    SPEECH_STARTED: _ClassVar[SpeechEvent]
    SPEECH_ENDED: _ClassVar[SpeechEvent]
VAD_MODE_UNSPECIFIED: VADMode
VAD_MODE_CONTINUE: VADMode
VAD_MODE_AUTO_END: VADMode
TASK_UNSPECIFIED: Task
TASK_TRANSCRIBE: Task
TASK_TRANSLATE: Task
SPEECH_EVENT_UNSPECIFIED: SpeechEvent
SPEECH_STARTED: SpeechEvent
SPEECH_ENDED: SpeechEvent

class SessionRequest(_message.Message):
    __slots__ = ("session_id", "attributes", "vad_mode", "vad_silence_sec", "vad_threshold", "language", "task", "decode_profile", "model_id", "require_token")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    VAD_MODE_FIELD_NUMBER: _ClassVar[int]
    VAD_SILENCE_SEC_FIELD_NUMBER: _ClassVar[int]
    VAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DECODE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    attributes: _containers.ScalarMap[str, str]
    vad_mode: VADMode
    vad_silence_sec: float
    vad_threshold: float
    language: str
    task: Task
    decode_profile: str
    model_id: str
    require_token: bool
    def __init__(self, session_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., vad_mode: _Optional[_Union[VADMode, str]] = ..., vad_silence_sec: _Optional[float] = ..., vad_threshold: _Optional[float] = ..., language: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., decode_profile: _Optional[str] = ..., model_id: _Optional[str] = ..., require_token: _Optional[bool] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("session_id", "session_token", "model_id", "decode_profile", "language", "task", "vad_mode", "vad_silence_sec", "vad_threshold", "partials_enabled", "model_sample_rate_hz", "max_chunk_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DECODE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VAD_MODE_FIELD_NUMBER: _ClassVar[int]
    VAD_SILENCE_SEC_FIELD_NUMBER: _ClassVar[int]
    VAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MODEL_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    model_id: str
    decode_profile: str
    language: str
    task: Task
    vad_mode: VADMode
    vad_silence_sec: float
    vad_threshold: float
    partials_enabled: bool
    model_sample_rate_hz: int
    max_chunk_ms: int
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ..., model_id: _Optional[str] = ..., decode_profile: _Optional[str] = ..., language: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., vad_mode: _Optional[_Union[VADMode, str]] = ..., vad_silence_sec: _Optional[float] = ..., vad_threshold: _Optional[float] = ..., partials_enabled: _Optional[bool] = ..., model_sample_rate_hz: _Optional[int] = ..., max_chunk_ms: _Optional[int] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("session_id", "pcm16", "sample_rate_hz", "session_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PCM16_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pcm16: bytes
    sample_rate_hz: int
    session_token: str
    def __init__(self, session_id: _Optional[str] = ..., pcm16: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., session_token: _Optional[str] = ...) -> None: ...

class STTResult(_message.Message):
    __slots__ = ("session_id", "utterance_index", "is_final", "text", "committed_text", "unstable_text", "start_sec", "end_sec", "language", "language_probability", "decode_latency_sec", "model_id", "partials_dropped", "speech_event", "words", "confidence", "resume_token", "resume_from_sec")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_TEXT_FIELD_NUMBER: _ClassVar[int]
    UNSTABLE_TEXT_FIELD_NUMBER: _ClassVar[int]
    START_SEC_FIELD_NUMBER: _ClassVar[int]
    END_SEC_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    DECODE_LATENCY_SEC_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_EVENT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_SEC_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    utterance_index: int
    is_final: bool
    text: str
    committed_text: str
    unstable_text: str
    start_sec: float
    end_sec: float
    language: str
    language_probability: float
    decode_latency_sec: float
    model_id: str
    partials_dropped: int
    speech_event: SpeechEvent
    words: _containers.RepeatedCompositeFieldContainer[Word]
    confidence: float
    resume_token: str
    resume_from_sec: float
    def __init__(self, session_id: _Optional[str] = ..., utterance_index: _Optional[int] = ..., is_final: _Optional[bool] = ..., text: _Optional[str] = ..., committed_text: _Optional[str] = ..., unstable_text: _Optional[str] = ..., start_sec: _Optional[float] = ..., end_sec: _Optional[float] = ..., language: _Optional[str] = ..., language_probability: _Optional[float] = ..., decode_latency_sec: _Optional[float] = ..., model_id: _Optional[str] = ..., partials_dropped: _Optional[int] = ..., speech_event: _Optional[_Union[SpeechEvent, str]] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., confidence: _Optional[float] = ..., resume_token: _Optional[str] = ..., resume_from_sec: _Optional[float] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("word", "start_sec", "end_sec", "probability")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_SEC_FIELD_NUMBER: _ClassVar[int]
    END_SEC_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_sec: float
    end_sec: float
    probability: float
    def __init__(self, word: _Optional[str] = ..., start_sec: _Optional[float] = ..., end_sec: _Optional[float] = ..., probability: _Optional[float] = ...) -> None: ...
