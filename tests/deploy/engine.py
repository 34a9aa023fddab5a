"""A private Docker engine for the deploy tests, and the local stand-in of the images' base.

No base image can be pulled here (docs: PLATFORM.md), so `python:3.11-slim-bookworm` is replaced by a
debootstrapped Debian 12 with its python3 (3.11) under the same tag, and the unchanged Dockerfile
builds against it. The stand-in tarball is cached between runs (`$STT_DEPLOY_CACHE`, default
`/tmp/stt-deploy-cache`). dockerd runs with its own data root, socket and pid file under a temp dir and
is stopped by its pid, so nothing is left behind and nothing of the host's docker setup is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BASE_IMAGE = "python:3.11-slim-bookworm"  # the FROM of images/cpu/Dockerfile
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CACHE_DIR = Path(os.environ.get("STT_DEPLOY_CACHE", "/tmp/stt-deploy-cache"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class EngineError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]


class DockerEngine:
    """dockerd on a unix socket in a temp dir; `run()` calls the docker CLI against it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stt-dockerd-"))
        self.socket = self.root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.root / "cli"),
                    "DOCKER_BUILDKIT": "0"}  # BuildKit would try to fetch its frontend
        self.process: subprocess.Popen | None = None

    def start(self, timeout_sec: float = 60.0) -> DockerEngine:
        self._log = (self.root / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--host", f"unix://{self.socket}",
             "--iptables=false", "--ip-masq=false", "--bridge=none",
             # the VM's hard limits are lower than dockerd's defaults
             "--default-ulimit", "nofile=1024:1024", "--default-ulimit", "nproc=1000:1000"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"dockerd exited with {self.process.returncode}:\n{self.log()}")
            if self.socket.exists() and self.run("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.5)
        raise EngineError(f"dockerd not answering within {timeout_sec:g} s:\n{self.log()}")

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")[-4000:]

    def run(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, timeout=timeout, input=input,
                                cwd=cwd, check=False)
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} exited with {result.returncode}:\n"
                              f"{result.stdout.decode(errors='replace')[-3000:]}\n"
                              f"{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def out(self, *args: str, **kwargs) -> str:
        return self.run(*args, **kwargs).stdout.decode().strip()

    def stop(self) -> None:
        """Remove every container, then SIGTERM dockerd by its pid (SIGKILL after 30 s) and delete its root."""
        if self.process is not None and self.process.poll() is None:
            ids = self.run("ps", "-aq", check=False, timeout=30).stdout.decode().split()
            if ids:
                self.run("rm", "-f", "-v", *ids, check=False, timeout=120)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "_log"):
            self._log.close()
        # dockerd unmounts its overlays on exit but leaves the bind of the host netns it made under its
        # exec root; unmount what is left under our root (deepest first), then delete it
        for mountpoint in sorted(mounts_under(self.root), reverse=True):
            subprocess.run(["umount", mountpoint], capture_output=True, timeout=30, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], capture_output=True, timeout=120,
                       check=False)


def mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    with open("/proc/self/mounts") as mounts:
        return [fields[1] for fields in (line.split() for line in mounts) if fields[1].startswith(prefix)]


def standin_tarball(timeout_sec: float = 600) -> Path:
    """Debian 12 minbase + python3 (3.11) + venv + the host's CA bundle, as a tar.gz (cached)."""
    tarball = CACHE_DIR / "python-3.11-slim-bookworm-standin.tar.gz"
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stt-rootfs-", dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(rootfs), DEBIAN_MIRROR], capture_output=True, timeout=timeout_sec, check=False)
        if result.returncode != 0:
            raise EngineError(f"debootstrap failed:\n{result.stdout.decode(errors='replace')[-3000:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale"):  # what the real slim image leaves out too
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        # pip in a build step reaches the index through a certificate only the host trusts: a
        # test-only change to the stand-in, never to the shipped Dockerfile
        shutil.copy(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")  # where python:slim has it
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-czf", str(partial), "."], check=True, timeout=timeout_sec)
        partial.rename(tarball)
    return tarball


def import_standin(engine: DockerEngine, tag: str = BASE_IMAGE) -> None:
    engine.run("import", str(standin_tarball()), tag, timeout=300)
