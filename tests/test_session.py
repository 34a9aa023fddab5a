"""resolve_settings: CreateSession validation (the session table has tests/test_session_table.py)."""

from __future__ import annotations

import pytest

from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.streaming.session import ModelTraits, SessionDefaults, SessionRequest, resolve_settings

REALTIME = DecodeOptions(beam_size=1, best_of=1)
ACCURATE = DecodeOptions(beam_size=5, best_of=5)


def defaults(**overrides) -> SessionDefaults:
    values = dict(
        default_model_id="tiny.en",
        model_ids=("tiny.en", "base.en"),
        decode_profiles={"realtime": REALTIME, "accurate": ACCURATE},
        default_decode_profile="realtime",
        language=None,
        task="transcribe",
        vad_silence_sec=0.5,
        vad_threshold=0.5,
        emit_final_on_vad=True,
    )
    values.update(overrides)
    return SessionDefaults(**values)


def resolve(**request):
    return resolve_settings(SessionRequest(**request), defaults())


def refused(code: str, **request) -> str:
    with pytest.raises(ApplianceError) as info:
        resolve(**request)
    assert info.value.code == code
    return info.value.message


# --- resolve_settings -----------------------------------------------------------------------

def test_defaults_are_applied():
    s = resolve()
    assert s.model_id == "tiny.en"
    assert s.decode_profile == "realtime"
    assert s.decode_options == REALTIME
    assert s.language is None
    assert s.task == "transcribe"
    assert s.vad_mode == "continue"
    assert (s.vad_silence_sec, s.vad_threshold) == (0.5, 0.5)
    assert s.partials is False
    assert s.emit_final_on_vad is True
    assert s.upload_mode == "realtime"
    assert s.token == ""
    assert s.attributes == {}
    assert len(s.session_id) == 32 and int(s.session_id, 16) >= 0  # uuid4 hex
    assert resolve().session_id != s.session_id


def test_request_values_override_defaults():
    s = resolve(session_id="abc", model_id="base.en", decode_profile="accurate", language=" DE ",
                task="translate", vad_mode="auto", vad_silence_sec=1.25, vad_threshold=0.7)
    assert s.session_id == "abc"
    assert s.model_id == "base.en"
    assert (s.decode_profile, s.decode_options) == ("accurate", ACCURATE)
    assert s.language == "de"
    assert s.task == "translate"
    assert s.vad_mode == "auto"
    assert (s.vad_silence_sec, s.vad_threshold) == (1.25, 0.7)


def test_server_language_default():
    s = resolve_settings(SessionRequest(), defaults(language="en"))
    assert s.language == "en"


def test_decode_attribute_overrides_are_parsed_and_validated():
    s = resolve(attributes={
        "decode.beam_size": "3",
        "decode.temperature": "0.0,0.2,0.4",
        "decode.without_timestamps": "false",
        "decode.no_speech_threshold": "null",
        "decode.initial_prompt": "no",  # text stays text, not YAML's false
    })
    o = s.decode_options
    assert o.beam_size == 3
    assert o.temperature == (0.0, 0.2, 0.4)
    assert o.without_timestamps is False
    assert o.no_speech_threshold is None
    assert o.initial_prompt == "no"
    assert o.best_of == REALTIME.best_of  # untouched options keep the profile's values
    assert REALTIME.beam_size == 1  # the profile itself is not modified


def test_decode_overrides_apply_on_top_of_the_chosen_profile():
    s = resolve(decode_profile="accurate", attributes={"decode.patience": "2"})
    assert (s.decode_options.beam_size, s.decode_options.patience) == (5, 2.0)


@pytest.mark.parametrize("key, value, expected", [
    ("decode.beam_size", "0", "an integer between 1 and 10"),
    ("decode.beam_size", "2.5", "an integer between 1 and 10"),
    ("decode.beam_size", "true", "an integer between 1 and 10"),
    ("decode.temperature", "-1", "a number between 0 and 1"),
    ("decode.no_speech_threshold", "1.5", "between 0 and 1"),
    ("decode.suppress_blank", "maybe", "true or false"),
])
def test_bad_decode_value_is_err1010_naming_the_option(key, value, expected):
    message = refused("ERR1010", attributes={key: value})
    assert key.split(".", 1)[1] in message
    assert expected in message


def test_unknown_decode_option_is_err1010_with_a_suggestion():
    message = refused("ERR1010", attributes={"decode.beem_size": "2"})
    assert "beem_size" in message
    assert "unknown decode option" in message
    assert "did you mean 'beam_size'" in message


def test_decode_error_names_the_attribute_as_sent():
    message = refused("ERR1010", attributes={"decode.beam_size": "0"})
    assert "decode.beam_size" in message


def test_non_decode_attributes_are_kept_and_not_decode_options():
    s = resolve(attributes={"speaker": "alice", "beam_size": "7"})
    assert s.attributes == {"speaker": "alice", "beam_size": "7"}
    assert s.decode_options == REALTIME


def test_unknown_profile_is_err1010_listing_known_ones():
    message = refused("ERR1010", decode_profile="fastest")
    assert "'fastest'" in message
    assert "accurate, realtime" in message


def test_unknown_model_is_err1011_listing_loaded_ones():
    message = refused("ERR1011", model_id="large-v3")
    assert "'large-v3'" in message
    assert "tiny.en, base.en" in message


@pytest.mark.parametrize("request_fields, field", [
    ({"vad_mode": "manual"}, "vad_mode"),
    ({"task": "summarise"}, "task"),
    ({"vad_silence_sec": 0.01}, "vad_silence_sec"),
    ({"vad_silence_sec": 11.0}, "vad_silence_sec"),
    ({"vad_silence_sec": float("nan")}, "vad_silence_sec"),
    ({"vad_threshold": 0.0}, "vad_threshold"),
    ({"vad_threshold": 1.0}, "vad_threshold"),
    ({"vad_threshold": -0.5}, "vad_threshold"),
    ({"vad_threshold": float("nan")}, "vad_threshold"),
    ({"attributes": {"upload_mode": "stream"}}, "upload_mode"),
])
def test_bad_session_fields_are_err1010_naming_the_field(request_fields, field):
    assert field in refused("ERR1010", **request_fields)


@pytest.mark.parametrize("silence", [0.05, 10.0])
def test_vad_silence_bounds_are_inclusive(silence):
    assert resolve(vad_silence_sec=silence).vad_silence_sec == silence


def test_zero_silence_from_the_request_is_not_the_default():
    # 0.0 is a value, not "unset": it is refused rather than silently replaced by the default
    assert "vad_silence_sec=0" in refused("ERR1010", vad_silence_sec=0.0)


def test_upload_mode_attribute():
    assert resolve(attributes={"upload_mode": " Batch "}).upload_mode == "batch"
    assert resolve(attributes={"upload_mode": ""}).upload_mode == "realtime"


@pytest.mark.parametrize("raw, expected", [
    ("true", True), ("TRUE", True), (" yes ", True), ("1", True), ("on", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("", False),
])
def test_partial_attribute_parsing(raw, expected):
    assert resolve(attributes={"partial": raw}).partials is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "ture"])
def test_bad_bool_attribute_is_err1010(raw):
    message = refused("ERR1010", attributes={"partial": raw})
    assert f"partial={raw!r}" in message
    message = refused("ERR1010", attributes={"emit_final_on_vad": raw})
    assert "emit_final_on_vad" in message


def test_emit_final_on_vad_attribute_overrides_the_default():
    assert resolve(attributes={"emit_final_on_vad": "false"}).emit_final_on_vad is False
    s = resolve_settings(SessionRequest(), defaults(emit_final_on_vad=False))
    assert s.emit_final_on_vad is False


def test_require_token_is_recorded_and_the_ticket_left_to_admission():
    s = resolve(require_token=True)
    assert s.require_token is True and s.token == ""  # SessionService signs the ticket once admitted
    assert resolve().require_token is False


def test_client_chosen_session_ids_are_short_and_plain():
    for good in ("kiosk-7", "a", "lobby.mic:2", "x" * 128, "0f" * 16):
        assert resolve(session_id=good).session_id == good
    for bad in ("x" * 129, "-leading-dash", ".hidden", "kiosk 7", "caf\u00e9", "../../etc/passwd", "a\nb", "a/b"):
        assert "session_id" in refused("ERR1010", session_id=bad)
    assert len(resolve().session_id) == 32  # server-generated: a uuid4, unguessable


def _words(text: str) -> int:
    return len(text.split())


ENGLISH_ONLY = ModelTraits(english_only=True, max_prompt_tokens=20, count_tokens=_words)
MULTILINGUAL = ModelTraits(english_only=False, max_prompt_tokens=20, count_tokens=_words)


def resolve_on(traits: ModelTraits, **request):
    return resolve_settings(SessionRequest(**request), defaults(model_traits=lambda model_id: traits))


def test_attribute_maps_and_names_are_bounded():
    assert "at most 32" in refused("ERR1010", attributes={f"k{i}": "v" for i in range(33)})
    assert "attribute name" in refused("ERR1010", attributes={"k" * 65: "v"})
    assert "attribute name" in refused("ERR1010", attributes={"a\x00b": "v"})
    assert "2049 characters" in refused("ERR1010", attributes={"note": "v" * 2049})
    assert "language of" in refused("ERR1010", language="e" * 65)
    assert "model_id of" in refused("ERR1010", model_id="m\n")


def test_language_is_checked_against_whisper_and_the_model():
    assert "not a Whisper language" in refused("ERR1010", language="xx")
    assert resolve_on(MULTILINGUAL, language="DE").language == "de"
    assert resolve_on(ENGLISH_ONLY, language="en").language == "en"
    for request in ({"language": "de"}, {"task": "translate"}):
        with pytest.raises(ApplianceError) as info:
            resolve_on(ENGLISH_ONLY, **request)
        assert info.value.code == "ERR1010" and "English-only" in info.value.message
    assert resolve_on(MULTILINGUAL, task="translate", language="de").task == "translate"


def test_model_languages_hold_a_session_to_the_listed_languages():
    listed = ModelTraits(english_only=False, max_prompt_tokens=20, count_tokens=_words, languages=("de", "fr"))
    assert resolve_on(listed).language is None  # detected, among de and fr (the backend's part)
    assert resolve_on(listed, language="FR").language == "fr"
    with pytest.raises(ApplianceError) as info:
        resolve_on(listed, language="en")
    assert info.value.code == "ERR1010" and "model.languages: de, fr" in info.value.message
    # an invalid code is still refused as one, before the list is consulted
    with pytest.raises(ApplianceError) as info:
        resolve_on(listed, language="xx")
    assert "not a Whisper language" in info.value.message


def test_one_listed_language_is_forced_unless_the_session_names_it():
    only_de = ModelTraits(english_only=False, max_prompt_tokens=20, count_tokens=_words, languages=("de",))
    assert resolve_on(only_de).language == "de"
    assert resolve_on(only_de, language="de").language == "de"
    with pytest.raises(ApplianceError) as info:
        resolve_on(only_de, language="fr")
    assert info.value.code == "ERR1010" and "model.languages: de" in info.value.message
    # a server default language outside the list is refused too, not silently swapped
    with pytest.raises(ApplianceError):
        resolve_settings(SessionRequest(), defaults(language="en", model_traits=lambda model_id: only_de))


def test_prompt_and_hotwords_must_fit_the_models_prompt_budget_together():
    ten = " ".join(["word"] * 10)
    assert resolve_on(MULTILINGUAL, attributes={"decode.initial_prompt": ten, "decode.hotwords": ten})
    with pytest.raises(ApplianceError) as info:
        resolve_on(MULTILINGUAL, attributes={"decode.initial_prompt": ten + " more", "decode.hotwords": ten})
    assert info.value.code == "ERR1010" and "21 tokens" in info.value.message and "at most 20" in info.value.message


def test_decode_overrides_respect_the_operators_allow_list_and_work_limit():
    only_beam = defaults(client_overrides=frozenset({"beam_size"}))
    allowed = resolve_settings(SessionRequest(attributes={"decode.beam_size": "3"}), only_beam)
    assert allowed.decode_options.beam_size == 3
    with pytest.raises(ApplianceError) as info:
        resolve_settings(SessionRequest(attributes={"decode.hotwords": "kiosk"}), only_beam)
    assert "hotwords may not be set" in info.value.message
    bomb = {"decode.temperature": "0,0.2,0.4,0.6,0.8,1", "decode.best_of": "5", "decode.log_prob_threshold": "0"}
    message = refused("ERR1010", attributes=bomb)
    assert "26 greedy decodes" in message and "allows 10" in message
    assert resolve(attributes={"decode.temperature": "0,0.2,0.4,0.6,0.8,1"}).decode_options.work() == 6
    # a profile's own cost is always allowed, and overrides may go up to it
    assert resolve(decode_profile="accurate", attributes={"decode.beam_size": "5"}).decode_options.work() == 5
    limited = defaults(max_client_work=2)
    assert resolve_settings(SessionRequest(decode_profile="accurate", attributes={"decode.patience": "2"}),
                            limited).decode_options.work() == 5
