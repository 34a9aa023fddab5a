"""model.languages: language detection held to the languages an operator lists.

Whisper scores every language it knows; a session that names no language gets the most probable
of the listed ones (the scores are taken as they are, not renormalised, so a low probability still
says the audio sounded like none of them). One listed language is simply forced. English-only
models decode English whatever the list says, so a list naming anything else for one is refused
when the model loads rather than ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.languages import WHISPER_LANGUAGES
from appliance.models.store import ModelStoreError


def allowed_languages(languages: Iterable[str], *, english_only: bool, model_id: str) -> tuple[str, ...]:
    """The listed languages, each once and in order; () means any. Raises ModelStoreError for a code
    Whisper does not know or, on an English-only model, for anything but en."""
    allowed = tuple(dict.fromkeys(str(lang).strip().lower() for lang in languages))
    unknown = [lang for lang in allowed if lang not in WHISPER_LANGUAGES]
    if unknown:
        raise ModelStoreError(f"model.languages: {', '.join(map(repr, unknown))} not Whisper language code(s) "
                              "(e.g. en, de, fr, ja)")
    if english_only:
        other = [lang for lang in allowed if lang != "en"]
        if other:
            raise ModelStoreError(f"model.languages lists {', '.join(other)}, but {model_id} is English-only: "
                                  "list only en (or nothing), or load a multilingual model (e.g. base)")
        return ()
    return allowed


def forced_language(language: str | None, allowed: tuple[str, ...]) -> str | None:
    """The language to decode in without detecting: the session's, else the only one listed."""
    if language:
        return language
    return allowed[0] if len(allowed) == 1 else None


def most_probable(probabilities: Iterable[tuple[str, float]], allowed: tuple[str, ...]) -> tuple[str, float]:
    """The most probable language (code, probability) among `allowed`, or among all when it is empty."""
    scored = [(lang, float(prob)) for lang, prob in probabilities if not allowed or lang in allowed]
    if not scored:  # cannot happen with Whisper's full distribution; a clear error if it ever does
        raise ValueError(f"language detection scored none of {', '.join(allowed)}")
    return max(scored, key=lambda pair: pair[1])
