"""Tests of appliance.config loading real YAML files from tmp_path: the shipped files, unknown
sections and keys, and the type and range of every value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from appliance.config import (
    DEPRECATED_KEYS,
    SECTIONS,
    AppConfig,
    ConfigError,
    default_config_paths,
    load_config,
    section_fields,
)
from appliance.decode_options import DecodeOptions
from tests.helpers import MODEL_YAML, SERVER_YAML, load_server, write
from tests.helpers import REPO_ROOT as REPO

SEED_README = Path(__file__).resolve().parents[2] / "shared" / "spec" / "seed-README.md"


def seed_yaml_blocks() -> tuple[dict, dict]:
    if not SEED_README.is_file():
        pytest.skip(f"seed README not present at {SEED_README} (fresh clone has no ../shared)")
    blocks = re.findall(r"```yaml\n(.*?)```", SEED_README.read_text(encoding="utf-8"), re.S)
    server, model = (yaml.safe_load(b) for b in blocks[:2])
    assert "server" in server and "model" in model
    return server, model


# --- shipped files ---------------------------------------------------------------------------

def test_shipped_yaml_holds_every_seed_key():
    seed_server, seed_model = seed_yaml_blocks()
    shipped = {**yaml.safe_load(SERVER_YAML.read_text()), **yaml.safe_load(MODEL_YAML.read_text())}
    for seed in (seed_server, seed_model):
        for section, body in seed.items():
            assert section in shipped, section
            removed = {key.split(".")[1] for key in DEPRECATED_KEYS if key.startswith(f"{section}.")}
            missing = set(body) - set(shipped[section]) - removed
            assert not missing, f"{section}: {sorted(missing)}"
    for name, profile in seed_model["model_load_profiles"].items():
        assert set(profile) <= set(shipped["model_load_profiles"][name])
    # decode profiles are exactly the seed's
    assert shipped["decode_profiles"] == seed_model["decode_profiles"]


def test_deprecated_keys_load_with_a_warning_naming_them(tmp_path, caplog):
    server = write(tmp_path, "s.yaml", "server:\n  grpc_worker_threads: 8\n  port: 1\n")
    model = write(tmp_path, "m.yaml", "model:\n  language_fix: true\n  language: de\n")
    with caplog.at_level("WARNING", logger="appliance.config"):
        cfg = load_config(server, model, env={})
    assert (cfg.server.port, cfg.model.language) == (1, "de")
    text = caplog.text
    assert "server.grpc_worker_threads" in text and str(server) in text and "deprecated" in text
    assert "model.language_fix" in text and str(model) in text
    assert not hasattr(cfg.server, "grpc_worker_threads") and not hasattr(cfg.model, "language_fix")


def test_deprecated_keys_from_env_warn_too(caplog):
    with caplog.at_level("WARNING", logger="appliance.config"):
        cfg = load_config(env={"STT_SERVER_GRPC_WORKER_THREADS": "4", "STT_MODEL_LANGUAGE_FIX": "false"})
    assert cfg == AppConfig()
    assert "STT_SERVER_GRPC_WORKER_THREADS" in caplog.text and "STT_MODEL_LANGUAGE_FIX" in caplog.text


def test_language_fix_without_a_language_is_still_refused(tmp_path):
    # the one combination whose intent would be lost: forcing a language that is not named
    model = write(tmp_path, "m.yaml", "model:\n  language_fix: true\n")
    with pytest.raises(ConfigError, match=r"model.language: model.language_fix \(deprecated") as info:
        load_config(model_path=model, env={})
    assert info.value.key == "model.language"


def test_shipped_yaml_holds_every_config_field_and_only_those():
    shipped = {**yaml.safe_load(SERVER_YAML.read_text()), **yaml.safe_load(MODEL_YAML.read_text())}
    for section in SECTIONS:
        assert set(shipped[section]) == set(section_fields(section)), section
    assert set(shipped["decode_profiles"]) == {"realtime", "accurate"}
    assert set(shipped["model_load_profiles"]) == {"default", "cpu", "cpu_large", "nvidia_cuda", "jetson",
                                                   "apple_silicon_mps"}


def test_every_shipped_key_has_a_comment():
    for path in (SERVER_YAML, MODEL_YAML):
        for line in path.read_text().splitlines():
            if re.match(r"^  [a-z_]+: [^&\s]", line):  # keys of the flat sections
                assert " # " in line, f"{path.name}: no comment on {line.strip()!r}"


def test_shipped_files_load_with_design_defaults():
    cfg = load_config(SERVER_YAML, MODEL_YAML, env={})
    assert cfg.server.port == 50051 and cfg.server.grpc_host == "0.0.0.0"
    assert cfg.server.emit_final_on_vad is True
    assert cfg.server.max_audio_bytes_per_sec_realtime is None
    # Batch uploads have their own byte rate and size cap; one host cannot hold every session.
    assert cfg.server.max_audio_bytes_per_sec_batch == 1_000_000 and cfg.server.max_batch_upload_bytes == 64 * 2**20
    assert 0 < cfg.server.max_sessions_per_ip < cfg.server.max_sessions
    assert cfg.server.decode_timeout_sec == 30.0 and isinstance(cfg.server.decode_timeout_sec, float)
    assert cfg.logging.transcript_retention_days == 7
    assert (cfg.model.name, cfg.model.device, cfg.model.compute_type, cfg.model.pool_size) == \
        ("tiny.en", "cpu", "default", 1)
    assert cfg.model_load_profiles["cpu"].compute_type == "int8"  # the load profile decides (docs/capacity.md)
    assert (cfg.model.profile, cfg.model.cpu_threads, cfg.model.model_dir, cfg.model.encode_window) == \
        ("auto", 0, None, "bucketed")
    cuda = cfg.model_load_profiles["nvidia_cuda"]  # built with a YAML merge key
    assert (cuda.model_size, cuda.backend, cuda.device, cuda.compute_type, cuda.pool_size) == \
        ("large-v3", "faster_whisper", "cuda", "float16", 1)
    mps = cfg.model_load_profiles["apple_silicon_mps"]
    assert (mps.backend, mps.device) == ("torch_whisper", "mps")
    assert cfg.decode_profiles["realtime"] == DecodeOptions()
    assert cfg.decode_profiles["accurate"] == DecodeOptions(beam_size=5, best_of=5)


def test_dataclass_defaults_equal_shipped_files():
    shipped = load_config(SERVER_YAML, MODEL_YAML, env={})
    defaults = load_config(env={})
    assert defaults == AppConfig()
    # without a model file, the single load profile is derived from the model section (seed rule)
    assert defaults.model_load_profiles == {"default": shipped.model_load_profiles["default"]}
    assert dataclasses.replace(shipped, model_load_profiles=defaults.model_load_profiles) == defaults


def test_packaged_default_config_is_identical_to_config_dir():
    packaged = REPO / "appliance" / "default_config"
    for name in ("server.yaml", "model.yaml"):
        assert (packaged / name).read_bytes() == (REPO / "config" / name).read_bytes(), \
            f"appliance/default_config/{name} differs from config/{name}: copy one over the other"


def test_default_config_paths_prefer_cwd_then_package(tmp_path):
    assert default_config_paths(REPO) == (SERVER_YAML, MODEL_YAML)
    server, model = default_config_paths(tmp_path)
    assert server.parent.name == "default_config" and server.name == "server.yaml" and server.is_file()
    assert model.parent.name == "default_config" and model.name == "model.yaml" and model.is_file()
    (tmp_path / "config").mkdir()
    write(tmp_path, "config/server.yaml", "server: {port: 1}\n")
    assert default_config_paths(tmp_path) == (tmp_path / "config" / "server.yaml", model)


# --- unknown sections and keys ---------------------------------------------------------------

def test_unknown_key_names_key_suggests_and_lists(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_server(tmp_path, "server:\n  max_sesions: 3\n")
    err = info.value
    assert err.key == "server.max_sesions"
    assert "did you mean 'max_sessions'" in str(err)
    assert "allowed: port, grpc_host, http_host, max_sessions" in str(err)
    assert str(tmp_path / "server.yaml") in str(err)


def test_unknown_section_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section .*did you mean 'server'") as info:
        load_server(tmp_path, "sever:\n  port: 1\n")
    assert info.value.key == "sever"


def test_unknown_override_key_and_section():
    with pytest.raises(ConfigError, match="did you mean 'silence'") as info:
        load_config(overrides={"vad.silense": 0.3}, env={})
    assert info.value.key == "vad.silense"
    with pytest.raises(ConfigError, match="unknown section") as info:
        load_config(overrides={"vda.silence": 0.3}, env={})


def test_unknown_profile_key(tmp_path):
    path = write(tmp_path, "model.yaml", """\
        model_load_profiles:
          default: {model_size: base, devise: cpu}
        """)
    with pytest.raises(ConfigError, match="did you mean 'device'") as info:
        load_config(model_path=path, env={})
    assert info.value.key == "model_load_profiles.default.devise"


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(server_path=tmp_path / "nope.yaml", env={})


def test_empty_file_means_defaults(tmp_path):
    assert load_server(tmp_path, "") == AppConfig()


def test_duplicate_yaml_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_server(tmp_path, "server:\n  port: 1\n  port: 2\n")


def test_same_key_in_both_files_is_a_conflict(tmp_path):
    server = write(tmp_path, "a.yaml", "vad: {silence: 0.3}\n")
    model = write(tmp_path, "b.yaml", "vad: {silence: 0.4}\n")
    with pytest.raises(ConfigError, match=re.escape("vad.silence: set in both")):
        load_config(server, model, env={})


# --- types and ranges ------------------------------------------------------------------------

@pytest.mark.parametrize("section,key,value,message", [
    ("server", "max_sessions", "-3", "server.max_sessions: expected an integer >= 1, got -3"),
    ("server", "max_sessions", "2.5", "server.max_sessions: expected an integer >= 1, got 2.5"),
    ("server", "port", "70000", "server.port: expected an integer between 0 and 65535, got 70000"),
    ("server", "port", "true", "server.port: expected an integer between 0 and 65535, got true"),
    ("server", "port", '"50051"', "server.port: expected an integer between 0 and 65535, got '50051'"),
    ("server", "partial_decode_window_sec", "null", "server.partial_decode_window_sec: expected a number > 0, "
                                                    "got null"),
    ("server", "max_buffer_sec", "-1", "server.max_buffer_sec: expected a number > 0 or null, got -1"),
    ("server", "http_trusted_proxies", "10.0.0.0/8", "expected a list of non-empty strings, got '10.0.0.0/8'"),
    ("server", "session_timeout_sec", ".inf", "expected a number > 0, got inf"),
    ("vad", "threshold", "1.5", "vad.threshold: expected a number between 0 and 1, got 1.5"),
    ("vad", "silence", "0", "vad.silence: expected a number > 0, got 0"),
    ("vad", "model_prewarm", "true", "vad.model_prewarm: expected an integer >= 0, got true"),
    ("health", "max_timeout_ratio", "1.2", "expected a number between 0 and 1, got 1.2"),
    ("storage", "max_bytes", "0", "storage.max_bytes: expected an integer >= 1 or null, got 0"),
    ("storage", "directory", '""', "storage.directory: expected a non-empty string, got ''"),
    ("tls", "required", '"yes"', "tls.required: expected true or false, got 'yes'"),
    ("logging", "level", "LOUD", "logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', "
                                 "'CRITICAL', got 'LOUD'"),
    ("auth", "create_session_auth_profile", "oauth", "expected one of 'none', 'api_key', 'signed_token', "
                                                     "got 'oauth'"),
    ("model", "backend", "onnx", "model.backend: expected one of 'faster_whisper', 'torch_whisper', got 'onnx'"),
    ("model", "device", "tpu", "model.device: expected one of 'cpu', 'cuda', 'mps', 'auto', got 'tpu'"),
    ("model", "compute_type", "int4", "model.compute_type: expected one of 'int8', "),
    ("model", "task", "summarize", "model.task: expected one of 'transcribe', 'translate', got 'summarize'"),
    ("model", "encode_window", "half", "model.encode_window: expected one of 'full', 'bucketed', 'partials', "
                                       "got 'half'"),
    ("model", "languages", "[en, 3]", "model.languages: expected a list of non-empty strings or null"),
    ("model", "pool_size", "0", "model.pool_size: expected an integer >= 1, got 0"),
    ("model", "second_look_below", "1.5", "model.second_look_below: expected a number between 0 and 1, got 1.5"),
])
def test_bad_values_name_key_value_and_accepted(tmp_path, section, key, value, message):
    path = write(tmp_path, "c.yaml", f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == f"{section}.{key}"
    assert message in str(info.value)
    assert f"(from {path})" in str(info.value)


def test_int_accepted_for_float_and_values_normalised(tmp_path):
    cfg = load_server(tmp_path, """\
        vad: {silence: 1, threshold: 1}
        server: {max_buffer_sec: null, decode_timeout_sec: -1, session_timeout_sec: 1.5e+2}
        logging: {level: debug, faster_whisper_level: error}
        safety: {speech_rms_threshold: 1e-3}
        """)
    assert cfg.vad.silence == 1.0 and isinstance(cfg.vad.silence, float)
    assert cfg.server.max_buffer_sec is None
    assert cfg.server.decode_timeout_sec == -1.0  # <= 0 means wait forever
    assert cfg.server.session_timeout_sec == 150.0
    assert (cfg.logging.level, cfg.logging.faster_whisper_level) == ("DEBUG", "ERROR")
    assert cfg.safety.speech_rms_threshold == 0.001  # 1e-3 is a float here, not PyYAML's string


def test_languages_list_and_empty_list(tmp_path):
    model = write(tmp_path, "m.yaml", "model: {languages: [en, en, de]}\n")
    assert load_config(model_path=model, env={}).model.languages == ["en", "en", "de"]
    model = write(tmp_path, "m.yaml", "model: {languages: []}\n")
    assert load_config(model_path=model, env={}).model.languages is None


def test_the_second_look_line_is_the_backend_s_own_figure():
    from appliance.models.backends.window_check import SECOND_LOOK_BELOW
    from appliance.models.registry import LoadSettings

    cfg = load_config(*default_config_paths(), env={})
    assert cfg.model.second_look_below == LoadSettings().second_look_below == SECOND_LOOK_BELOW
    assert load_config(*default_config_paths(), env={"STT_MODEL_SECOND_LOOK_BELOW": "0"}).model.second_look_below == 0
