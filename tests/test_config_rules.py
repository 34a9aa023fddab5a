"""Tests of appliance.config's cross-field rules, and of the decode profiles and
appliance.decode_options (parsing, overrides, the kwargs handed to a backend)."""

from __future__ import annotations

import re

import pytest

from appliance.config import ConfigError, load_config
from appliance.decode_options import (
    DECODE_OPTION_NAMES,
    DecodeOptionError,
    DecodeOptions,
    apply_overrides,
    parse_decode_options,
)
from tests.helpers import MODEL_YAML, SERVER_YAML, load_server, write

# --- cross-field rules -----------------------------------------------------------------------

def test_tls_required_needs_cert_and_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_server(tmp_path, "tls: {required: true}\n")
    assert info.value.key == "tls.required"
    assert str(info.value) == "tls.required: TLS is required but tls.cert_file/tls.key_file are not set"
    with pytest.raises(ConfigError, match=re.escape("tls.key_file: tls.cert_file is set but tls.key_file is not")):
        load_server(tmp_path, "tls: {cert_file: c.pem}\n")
    cfg = load_server(tmp_path, "tls: {cert_file: c.pem}\n", overrides={"tls.key_file": "k.pem",
                                                                         "tls.required": True})
    assert (cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.required) == ("c.pem", "k.pem", True)


def test_signed_token_needs_a_secret(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_server(tmp_path, "auth: {create_session_auth_profile: signed_token}\n")
    assert info.value.key == "auth.create_session_auth_secret"
    cfg = load_server(tmp_path, "auth: {create_session_auth_profile: signed_token}\n",
                      env={"STT_AUTH_CREATE_SESSION_AUTH_SECRET": "s3cret"})
    assert cfg.auth.create_session_auth_secret == "s3cret"
    assert cfg.as_dict()["auth"]["create_session_auth_secret"] == "***"
    assert cfg.as_dict(redact=False)["auth"]["create_session_auth_secret"] == "s3cret"


def test_wyoming_cannot_carry_signed_tokens_and_names_its_api_key_when_one_is_required(tmp_path):
    signed = "auth: {create_session_auth_profile: signed_token, create_session_auth_secret: s}\n"
    with pytest.raises(ConfigError, match="cannot carry the signed tokens") as info:
        load_server(tmp_path, signed + "wyoming: {port: 10300}\n")
    assert info.value.key == "wyoming.port"
    assert load_server(tmp_path, signed).wyoming.port == 0  # off: no conflict
    with pytest.raises(ConfigError, match="expected the api_key Wyoming sessions act as") as info:
        load_server(tmp_path, "auth: {require_api_key: true}\nwyoming: {port: 10300}\n")
    assert info.value.key == "wyoming.api_key"
    cfg = load_server(tmp_path, "auth: {require_api_key: true}\n",
                      env={"STT_WYOMING_PORT": "10300", "STT_WYOMING_API_KEY": "ha-kitchen"})
    assert (cfg.wyoming.port, cfg.wyoming.api_key) == (10300, "ha-kitchen")


def test_transcript_logging_needs_its_own_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("logging.transcript_file: logging.log_transcripts is true")):
        load_server(tmp_path, "logging: {log_transcripts: true}\n")
    cfg = load_server(tmp_path, "logging: {log_transcripts: true, transcript_file: t.log}\n")
    assert cfg.logging.transcript_file == "t.log" and cfg.logging.transcript_retention_days == 7


def test_model_languages_are_whisper_codes_and_hold_the_default_language(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(model_path=write(tmp_path, "m.yaml", "model: {languages: [de, xx]}\n"), env={})
    assert info.value.key == "model.languages" and "'xx' not Whisper" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(model_path=write(tmp_path, "m.yaml", "model: {language: en, languages: [de, fr]}\n"), env={})
    assert info.value.key == "model.language" and "not in model.languages (de, fr)" in str(info.value)
    cfg = load_config(model_path=write(tmp_path, "m.yaml", "model: {language: fr, languages: [de, fr]}\n"), env={})
    assert (cfg.model.language, cfg.model.languages) == ("fr", ["de", "fr"])


def test_profile_references_must_exist(tmp_path):
    model = write(tmp_path, "m.yaml", "model: {default_decode_profile: fastest}\n")
    with pytest.raises(ConfigError, match=r"model.default_decode_profile: expected one of \['accurate', "
                                          r"'realtime'\] \(the decode_profiles\), got 'fastest'"):
        load_config(model_path=model, env={})
    with pytest.raises(ConfigError, match=re.escape("model.default_model_load_profile: expected one of")) as info:
        load_config(MODEL_YAML, env={}, overrides={"model.default_model_load_profile": "gpu"})
    assert info.value.key == "model.default_model_load_profile"
    with pytest.raises(ConfigError, match=r"model.profile: expected 'auto' or one of \['apple_silicon_mps', "
                                          r"'cpu', 'cpu_large', 'default', 'jetson', 'nvidia_cuda'\], got 'tpu'"):
        load_config(model_path=MODEL_YAML, env={"STT_MODEL_PROFILE": "tpu"})
    assert load_config(model_path=MODEL_YAML, env={"STT_MODEL_PROFILE": "nvidia_cuda"}).model.profile == \
        "nvidia_cuda"


def test_mps_needs_torch_backend():
    with pytest.raises(ConfigError, match=re.escape("model.device: 'mps' needs backend 'torch_whisper'")):
        load_config(env={}, overrides={"model.device": "mps"})
    cfg = load_config(env={}, overrides={"model.device": "mps", "model.backend": "torch_whisper"})
    assert cfg.model.device == "mps"


def test_load_profiles_inherit_model_section_and_derive_default(tmp_path):
    model = write(tmp_path, "m.yaml", """\
        model: {name: base, compute_type: float32, default_model_load_profile: cpu_base}
        model_load_profiles:
          cpu_base: {}
          gpu: {device: cuda}
        """)
    cfg = load_config(model_path=model, env={})
    assert cfg.model_load_profiles["cpu_base"].model_size == "base"
    assert cfg.model_load_profiles["gpu"].compute_type == "float32"
    assert cfg.model_load_profiles["gpu"].device == "cuda"
    model = write(tmp_path, "m.yaml", "model: {name: base}\n")
    derived = load_config(model_path=model, env={}).model_load_profiles
    assert list(derived) == ["default"] and derived["default"].model_size == "base"


def test_with_overrides_revalidates():
    cfg = load_config(SERVER_YAML, MODEL_YAML, env={})
    changed = cfg.with_overrides({"server.port": 0, "vad.silence": 0.3})
    assert (changed.server.port, changed.vad.silence, changed.server.max_sessions) == (0, 0.3, 50)
    assert changed.decode_profiles == cfg.decode_profiles
    with pytest.raises(ConfigError, match=re.escape("server.port")):
        cfg.with_overrides({"server.port": -1})


# --- decode profiles and options -------------------------------------------------------------

def test_decode_profile_errors_become_config_errors(tmp_path):
    model = write(tmp_path, "m.yaml", "decode_profiles:\n  realtime: {beam_size: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(model_path=model, env={})
    assert info.value.key == "decode_profiles.realtime.beam_size"
    assert "decode_profiles.realtime.beam_size: expected an integer between 1 and 10, got 0" in str(info.value)
    model = write(tmp_path, "m.yaml", "decode_profiles:\n  realtime: {beem_size: 2}\n")
    with pytest.raises(ConfigError, match="did you mean 'beam_size'") as info:
        load_config(model_path=model, env={})
    assert info.value.key == "decode_profiles.realtime.beem_size"


def test_decode_profiles_replace_defaults(tmp_path):
    model = write(tmp_path, "m.yaml", """\
        model: {default_decode_profile: fast}
        decode_profiles:
          fast: {temperature: [0.0, 0.2], hotwords: "Kubernetes", log_prob_threshold: null}
        """)
    cfg = load_config(model_path=model, env={})
    assert list(cfg.decode_profiles) == ["fast"]
    fast = cfg.decode_profiles["fast"]
    assert fast.temperature == (0.0, 0.2) and fast.hotwords == "Kubernetes" and fast.log_prob_threshold is None


@pytest.mark.parametrize("mapping,key,fragment", [
    ({"beam_size": 0}, "beam_size", "expected an integer between 1 and 10, got 0"),
    ({"best_of": True}, "best_of", "expected an integer between 1 and 10, got true"),
    ({"patience": 0}, "patience", "expected a number > 0, got 0"),
    ({"temperature": -0.1}, "temperature", "expected a number between 0 and 1, or a non-empty list of at most 6"),
    ({"temperature": []}, "temperature", "got []"),
    ({"no_speech_threshold": 1.5}, "no_speech_threshold", "expected a number between 0 and 1 or null"),
    ({"without_timestamps": "yes"}, "without_timestamps", "expected true or false, got 'yes'"),
    ({"initial_prompt": 3}, "initial_prompt", "expected a string of at most 2000 characters or null, got 3"),
    ({"vad_filter": True}, "vad_filter", "unknown decode option"),
])
def test_parse_decode_options_rejects(mapping, key, fragment):
    with pytest.raises(DecodeOptionError) as info:
        parse_decode_options(mapping, "decode_profiles.x")
    assert info.value.key == key
    assert str(info.value).startswith(f"decode_profiles.x.{key}: ")
    assert fragment in str(info.value)


def test_unknown_decode_option_lists_allowed():
    with pytest.raises(DecodeOptionError) as info:
        parse_decode_options({"beamsize": 2}, "session")
    assert "did you mean 'beam_size'" in str(info.value)
    assert "allowed: " + ", ".join(DECODE_OPTION_NAMES) in str(info.value)


def test_apply_overrides_parses_strings():
    base = DecodeOptions()
    out = apply_overrides(base, {"beam_size": "5", "temperature": "0.0,0.2,0.4", "initial_prompt": "no",
                                 "no_speech_threshold": "null", "without_timestamps": "false"}, "attributes")
    assert out.beam_size == 5 and out.temperature == (0.0, 0.2, 0.4)
    assert out.initial_prompt == "no" and out.no_speech_threshold is None and out.without_timestamps is False
    assert base.beam_size == 1  # frozen: base untouched
    assert apply_overrides(base, {"temperature": "[0.5, 1]"}, "a").temperature == (0.5, 1.0)
    assert apply_overrides(base, {}, "a") is not None
    with pytest.raises(DecodeOptionError, match=r"beam_size: expected an integer between 1 and 10, got .zero."):
        apply_overrides(base, {"beam_size": "zero"}, "attributes")
    with pytest.raises(DecodeOptionError, match="unknown decode option") as info:
        apply_overrides(base, {"language": "de"}, "attributes")
    assert info.value.key == "language"


def test_as_kwargs_returns_every_option():
    kwargs = DecodeOptions(beam_size=5, temperature=(0.0, 0.2)).as_kwargs()
    # every option a profile or session may set, and word_timestamps, which the transcriber sets per decode
    assert set(kwargs) == {*DECODE_OPTION_NAMES, "word_timestamps"} and kwargs["word_timestamps"] is False
    assert kwargs["beam_size"] == 5 and kwargs["temperature"] == (0.0, 0.2)
    assert kwargs["log_prob_threshold"] == -1.0 and kwargs["hotwords"] is None


@pytest.mark.parametrize("overrides,fragment", [
    ({"beam_size": "11"}, "between 1 and 10"),
    ({"best_of": "1000000"}, "between 1 and 10"),
    ({"temperature": ",".join(["0.1"] * 7)}, "at most 6 numbers"),
    ({"temperature": "1.5"}, "between 0 and 1"),
    ({"log_prob_threshold": "1"}, "between -100 and 0"),
    ({"patience": "nan"}, "got 'nan'"),
    ({"length_penalty": "1e400"}, "got '1e400'"),
    ({"initial_prompt": "x" * 2001}, "at most 2000 characters"),
    ({"temperature": "[" * 150 + "]" * 150}, "temperature"),  # nesting is never parsed
    ({"beam_size": "&a [*a, *a]"}, "beam_size"),  # nor YAML aliases
    ({"beam_size": "5" * 500}, "... (502 characters)"),  # the value is not echoed whole
])
def test_client_overrides_are_bounded_flat_values(overrides, fragment):
    with pytest.raises(DecodeOptionError) as info:
        apply_overrides(DecodeOptions(), overrides, "attributes decode")
    assert fragment in str(info.value) and len(str(info.value)) < 400


def test_work_counts_every_rung_of_the_ladder_at_its_width():
    assert DecodeOptions().work() == 1
    assert DecodeOptions(beam_size=5, best_of=5).work() == 5
    assert DecodeOptions(beam_size=5, best_of=3, temperature=(0.0, 0.2, 0.4)).work() == 11
    assert apply_overrides(DecodeOptions(), {"temperature": "[0, 0.5]", "best_of": "2"}, "a").work() == 3
