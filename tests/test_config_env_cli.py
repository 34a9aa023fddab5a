"""Tests of appliance.config's precedence (CLI over env over file over defaults), STT_* variables,
and appliance.config_cli's flags on a real argparse parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.config import (
    AppConfig,
    ConfigError,
    add_serve_arguments,
    env_var_name,
    load_config,
    load_config_from_args,
    overrides_from_args,
    section_fields,
)
from appliance.config_cli import SERVE_FLAGS
from tests.helpers import MODEL_YAML, SERVER_YAML, write


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


def test_deprecated_flag_is_accepted_and_ignored(caplog):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--grpc-worker-threads", "8", "--config", str(SERVER_YAML),
                              "--model-config", str(MODEL_YAML)])
    assert overrides_from_args(args) == {"server.grpc_worker_threads": "8"}
    with caplog.at_level("WARNING", logger="appliance.config"):
        load_config_from_args(args, env={})
    assert "server.grpc_worker_threads (from overrides) is deprecated" in caplog.text


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
        "STT_MODEL_LANGUAGES": "en,no",
        "STT_LOGGING_FILE": "null",
        "STT_SERVER_HTTP_TRUSTED_PROXIES": "[10.0.0.0/8, proxy.local]",
        "STT_SERVER_LOG_METRICS": "true",
        "STT_SERVER_MAX_BUFFER_SEC": "null",
        "STT_AUTH_CREATE_SESSION_AUTH_SECRET": "123456",
        "STT_VAD_SILENCE": "0.3",
    }
    cfg = load_config(env=env)
    assert (cfg.model.name, cfg.model.language, cfg.model.languages) == ("base", "no", ["en", "no"])
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
