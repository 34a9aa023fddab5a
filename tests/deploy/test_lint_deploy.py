"""scripts/lint-deploy.sh passes on the shipped files, and its launchd check catches what launchd would
reject (there is no plutil off macOS)."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys

import pytest

from tests.deploy.conftest import REPO_ROOT
from tests.deploy.launchd_plist import check_appliance_plist, check_launchd_keys

PLIST = REPO_ROOT / "images/mps-host/com.stt-appliance.plist"


def test_lint_deploy_script_passes():
    tools = [REPO_ROOT / ".venv/bin" / t for t in ("hadolint", "docker-compose", "check-jsonschema",
                                                          "kubernetes-validate")]
    if not all(t.exists() for t in tools) or shutil.which("systemd-analyze") is None:
        pytest.skip("lint tools missing: EXTRAS=test scripts/setup.sh and apt-get install systemd")
    result = subprocess.run(["scripts/lint-deploy.sh"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lint-deploy: ok" in result.stdout


def test_shipped_plist_has_launchd_keys_of_the_right_types():
    plist = plistlib.loads(PLIST.read_bytes())
    assert check_appliance_plist(plist) == []
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a crash, not after a drain


def test_launchd_check_rejects_unknown_keys_wrong_types_and_short_exit_timeout():
    plist = plistlib.loads(PLIST.read_bytes())
    broken = {**plist, "KeepAlives": True, "RunAtLoad": "yes", "ThrottleInterval": True, "ExitTimeOut": 10,
              "EnvironmentVariables": {**plist["EnvironmentVariables"], "OMP_NUM_THREADS": 4}}
    errors = check_appliance_plist(broken)
    assert "KeepAlives: not a launchd key" in errors
    assert "RunAtLoad: expected boolean, got str" in errors
    assert "ThrottleInterval: expected integer, got bool" in errors
    assert "EnvironmentVariables.OMP_NUM_THREADS: expected string, got int" in errors
    assert any(e.startswith("ExitTimeOut") for e in errors)
    assert check_launchd_keys({"RunAtLoad": True}) == ["Label: required",
                                                       "Program or ProgramArguments: one is required"]


def test_launchd_check_cli_fails_on_a_malformed_plist(tmp_path):
    bad = tmp_path / "bad.plist"
    bad.write_text(PLIST.read_text().replace("<true/>", "<true>", 1))
    result = subprocess.run([sys.executable, "-m", "tests.deploy.launchd_plist", str(bad)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "not a property list" in result.stderr


def test_mps_installer_refuses_anything_but_apple_silicon(tmp_path):
    if sys.platform == "darwin":
        pytest.skip("this checks the refusal off macOS")
    result = subprocess.run([str(REPO_ROOT / "images/mps-host/install.sh"), "--prefix", str(tmp_path / "p")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "macOS on arm64 only" in result.stderr
    assert not (tmp_path / "p").exists()  # nothing created before the platform check

