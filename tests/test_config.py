"""Tests of appliance.config, appliance.config_cli and appliance.decode_options with real YAML files
in tmp_path and a real argparse parser."""

from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from appliance.config import (
    SECTIONS,
    AppConfig,
    ConfigError,
    add_serve_arguments,
    default_config_paths,
    env_var_name,
    load_config,
    load_config_from_args,
    overrides_from_args,
    section_fields,
)
from appliance.config_cli import SERVE_FLAGS
from appliance.decode_options import (
    DECODE_OPTION_NAMES,
    DecodeOptionError,
    DecodeOptions,
    apply_overrides,
    parse_decode_options,
)

REPO = Path(__file__).resolve().parents[1]
SERVER_YAML = REPO / "config" / "server.yaml"
MODEL_YAML = REPO / "config" / "model.yaml"
SEED_README = Path(__file__).resolve().parents[2] / "shared" / "spec" / "seed-README.md"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_server(tmp_path: Path, text: str, **kwargs) -> AppConfig:
    return load_config(server_path=write(tmp_path, "server.yaml", text), env=kwargs.pop("env", {}), **kwargs)


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
            missing = set(body) - set(shipped[section])
            assert not missing, f"{section}: {sorted(missing)}"
    for name, profile in seed_model["model_load_profiles"].items():
        assert set(profile) <= set(shipped["model_load_profiles"][name])
    # decode profiles are exactly the seed's
    assert shipped["decode_profiles"] == seed_model["decode_profiles"]


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
    assert cfg.server.max_audio_bytes_per_sec_batch == 0
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
    with pytest.raises(ConfigError, match="vad.silence: set in both"):
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
    ("model", "encode_window", "half", "model.encode_window: expected one of 'full', 'bucketed', 'partials', got 'half'"),
    ("model", "languages", "[en, 3]", "model.languages: expected a list of non-empty strings or null"),
    ("model", "pool_size", "0", "model.pool_size: expected an integer >= 1, got 0"),
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


# --- precedence and env ----------------------------------------------------------------------

def test_precedence_cli_over_env_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "s.yaml", "server: {max_sessions: 10, port: 6000}\nvad: {silence: 0.8}\n")
    env = {"STT_SERVER_MAX_SESSIONS": "20", "STT_VAD_SILENCE": "0.3"}
    cfg = load_config(path, env=env, overrides={"server.max_sessions": 30})
    assert cfg.server.max_sessions == 30  # override
    assert cfg.vad.silence == 0.3  # env over file
    assert cfg.server.port == 6000  # file over default
    assert cfg.server.metrics_port == 8000  # default
    assert load_config(path, env=env).server.max_sessions == 20
    assert load_config(path, env={}).server.max_sessions == 10


def test_real_argparse_end_to_end(tmp_path):
    server = write(tmp_path, "s.yaml", "server: {max_sessions: 10}\nvad: {silence: 0.8}\n")
    model = write(tmp_path, "m.yaml", "model: {name: base}\n")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--config", str(server), "--model-config", str(model), "--max-sessions", "3",
                              "--log-metrics", "--speech-threshold", "0.01", "--decode-timeout", "5",
                              "--profile", "default", "--model-dir", "/opt/m"])
    assert overrides_from_args(args) == {
        "server.max_sessions": 3, "server.log_metrics": True, "safety.speech_rms_threshold": 0.01,
        "server.decode_timeout_sec": 5.0, "model.profile": "default", "model.model_dir": "/opt/m"}
    cfg = load_config_from_args(args, env={"STT_SERVER_MAX_SESSIONS": "7", "STT_VAD_SILENCE": "0.6"})
    assert (cfg.server.max_sessions, cfg.vad.silence, cfg.model.name) == (3, 0.6, "base")
    assert cfg.server.log_metrics is True and cfg.model.model_dir == "/opt/m"


def test_cli_flags_cover_the_seed_and_default_to_none():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {opt for action in parser._actions for opt in action.option_strings}
    seed_flags = {
        "--config", "--model-config", "--model", "--model-backend", "--device", "--compute-type", "--language",
        "--model-pool-size", "--port", "--max-sessions", "--log-metrics", "--log-level", "--log-file",
        "--faster-whisper-log-level", "--tls-cert-file", "--tls-key-file", "--tls-required", "--vad-silence",
        "--vad-threshold", "--speech-threshold", "--decode-timeout", "--metrics-port", "--grpc-worker-threads",
        "--require-api-key", "--profile", "--grpc-host", "--http-host", "--model-dir"}
    assert seed_flags <= flags
    args = parser.parse_args([])
    assert overrides_from_args(args) == {}
    assert all(getattr(args, row.dest) is None for row in SERVE_FLAGS)
    assert Path(args.config).name == "server.yaml" and Path(args.model_config).name == "model.yaml"
    bools = {row.flag for row in SERVE_FLAGS if section_fields(row.key.split(".")[0])[row.key.split(".")[1]].base
             is bool}
    assert bools == {"--log-metrics", "--tls-required", "--require-api-key"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "abc"])


def test_cli_bad_value_fails_naming_key():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--vad-threshold", "2", "--config", str(SERVER_YAML),
                              "--model-config", str(MODEL_YAML)])
    with pytest.raises(ConfigError, match=r"vad.threshold: expected a number between 0 and 1, got 2.0 "
                                          r"\(from overrides\)"):
        load_config_from_args(args, env={})


def test_env_values_are_parsed_by_type():
    env = {
        "STT_MODEL_NAME": "base",
        "STT_MODEL_LANGUAGE": "no",  # Norwegian, not YAML's false
        "STT_MODEL_LANGUAGES": "en,de",
        "STT_LOGGING_FILE": "null",
        "STT_SERVER_HTTP_TRUSTED_PROXIES": "[10.0.0.0/8, proxy.local]",
        "STT_SERVER_LOG_METRICS": "true",
        "STT_SERVER_MAX_BUFFER_SEC": "null",
        "STT_AUTH_CREATE_SESSION_AUTH_SECRET": "123456",
        "STT_VAD_SILENCE": "0.3",
    }
    cfg = load_config(env=env)
    assert (cfg.model.name, cfg.model.language, cfg.model.languages) == ("base", "no", ["en", "de"])
    assert cfg.logging.file is None and cfg.server.max_buffer_sec is None
    assert cfg.server.http_trusted_proxies == ["10.0.0.0/8", "proxy.local"]
    assert cfg.server.log_metrics is True and cfg.vad.silence == 0.3
    assert cfg.auth.create_session_auth_secret == "123456"
    assert env_var_name("server.max_sessions") == "STT_SERVER_MAX_SESSIONS"


def test_env_aliases_from_the_seed():
    cfg = load_config(env={"STT_HTTP_RATE_LIMIT_RPS": "2.5", "STT_HTTP_RATE_LIMIT_BURST": "4",
                           "STT_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1"})
    assert cfg.server.http_rate_limit_rps == 2.5 and cfg.server.http_rate_limit_burst == 4.0
    assert cfg.server.http_trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    with pytest.raises(ConfigError, match="conflicts with STT_HTTP_RATE_LIMIT_RPS"):
        load_config(env={"STT_HTTP_RATE_LIMIT_RPS": "2", "STT_SERVER_HTTP_RATE_LIMIT_RPS": "3"})


def test_env_unknown_key_in_known_section_is_an_error_others_ignored():
    with pytest.raises(ConfigError) as info:
        load_config(env={"STT_SERVER_MAX_SESIONS": "4"})
    assert info.value.key == "server.max_sesions"
    assert str(info.value).startswith("STT_SERVER_MAX_SESIONS: ")
    assert "did you mean STT_SERVER_MAX_SESSIONS" in str(info.value)
    ignored = {"STT_OBSERVABILITY_TOKEN": "t", "STT_PUBLIC_HEALTH": "minimal", "STT_HEALTH_DETAIL_MODE": "token",
               "STT_HTTP_ALLOWLIST": "10.0.0.0/8", "PATH": "/bin"}
    assert load_config(env=ignored) == AppConfig()


def test_env_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"server.port: expected an integer between 0 and 65535, got 'abc' "
                                          r"\(from STT_SERVER_PORT\)"):
        load_config(env={"STT_SERVER_PORT": "abc"})


# --- cross-field rules -----------------------------------------------------------------------

def test_tls_required_needs_cert_and_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_server(tmp_path, "tls: {required: true}\n")
    assert info.value.key == "tls.required"
    assert str(info.value) == "tls.required: TLS is required but tls.cert_file/tls.key_file are not set"
    with pytest.raises(ConfigError, match="tls.key_file: tls.cert_file is set but tls.key_file is not"):
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


def test_transcript_logging_needs_its_own_file(tmp_path):
    with pytest.raises(ConfigError, match="logging.transcript_file: logging.log_transcripts is true"):
        load_server(tmp_path, "logging: {log_transcripts: true}\n")
    cfg = load_server(tmp_path, "logging: {log_transcripts: true, transcript_file: t.log}\n")
    assert cfg.logging.transcript_file == "t.log" and cfg.logging.transcript_retention_days == 7


def test_profile_references_must_exist(tmp_path):
    model = write(tmp_path, "m.yaml", "model: {default_decode_profile: fastest}\n")
    with pytest.raises(ConfigError, match=r"model.default_decode_profile: expected one of \['accurate', "
                                          r"'realtime'\] \(the decode_profiles\), got 'fastest'"):
        load_config(model_path=model, env={})
    with pytest.raises(ConfigError, match="model.default_model_load_profile: expected one of") as info:
        load_config(MODEL_YAML, env={}, overrides={"model.default_model_load_profile": "gpu"})
    assert info.value.key == "model.default_model_load_profile"
    with pytest.raises(ConfigError, match=r"model.profile: expected 'auto' or one of \['apple_silicon_mps', "
                                          r"'cpu', 'cpu_large', 'default', 'jetson', 'nvidia_cuda'\], got 'tpu'"):
        load_config(model_path=MODEL_YAML, env={"STT_MODEL_PROFILE": "tpu"})
    assert load_config(model_path=MODEL_YAML, env={"STT_MODEL_PROFILE": "nvidia_cuda"}).model.profile == \
        "nvidia_cuda"


def test_mps_needs_torch_backend():
    with pytest.raises(ConfigError, match="model.device: 'mps' needs backend 'torch_whisper'"):
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
    with pytest.raises(ConfigError, match="server.port"):
        cfg.with_overrides({"server.port": -1})


# --- decode profiles and options -------------------------------------------------------------

def test_decode_profile_errors_become_config_errors(tmp_path):
    model = write(tmp_path, "m.yaml", "decode_profiles:\n  realtime: {beam_size: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(model_path=model, env={})
    assert info.value.key == "decode_profiles.realtime.beam_size"
    assert "decode_profiles.realtime.beam_size: expected an integer >= 1, got 0" in str(info.value)
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
    ({"beam_size": 0}, "beam_size", "expected an integer >= 1, got 0"),
    ({"best_of": True}, "best_of", "expected an integer >= 1, got true"),
    ({"patience": 0}, "patience", "expected a number > 0, got 0"),
    ({"temperature": -0.1}, "temperature", "expected a number >= 0, or a non-empty list"),
    ({"temperature": []}, "temperature", "got []"),
    ({"no_speech_threshold": 1.5}, "no_speech_threshold", "expected a number between 0 and 1 or null"),
    ({"without_timestamps": "yes"}, "without_timestamps", "expected true or false, got 'yes'"),
    ({"initial_prompt": 3}, "initial_prompt", "expected a string or null, got 3"),
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
    with pytest.raises(DecodeOptionError, match=r"attributes.beam_size: expected an integer >= 1, got 'zero'"):
        apply_overrides(base, {"beam_size": "zero"}, "attributes")
    with pytest.raises(DecodeOptionError, match="unknown decode option") as info:
        apply_overrides(base, {"language": "de"}, "attributes")
    assert info.value.key == "language"


def test_as_kwargs_returns_every_option():
    kwargs = DecodeOptions(beam_size=5, temperature=(0.0, 0.2)).as_kwargs()
    assert set(kwargs) == set(DECODE_OPTION_NAMES)
    assert kwargs["beam_size"] == 5 and kwargs["temperature"] == (0.0, 0.2)
    assert kwargs["log_prob_threshold"] == -1.0 and kwargs["hotwords"] is None
