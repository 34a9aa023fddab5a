"""`stt-appliance models fetch`: the one place that may download a model, and only when told to.

The appliance never downloads at run time (DESIGN.md section 7). An operator on a machine with a
network can fetch a CTranslate2 model from the Hugging Face hub into the cache with an explicit
`--allow-network`; without it the command refuses. huggingface_hub is imported only then, so an
appliance without it still runs. What was fetched is pinned on arrival (sha256 of each file in a
manifest) and verified like a pack each time it resolves (`appliance.models.store.resolve_fetched`,
re-exported here with `fetched_dir` and `MANIFEST`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from appliance.models.files import ModelStoreError, exclusive_lock, remember_verified, sha256_of
from appliance.models.packs import PACKS
from appliance.models.store import MANIFEST, ResolvedModel, fetched_dir, resolve_fetched, resolve_model

__all__ = ["FETCH_PATTERNS", "HUB_REPOS", "MANIFEST", "fetch_model", "fetched_dir", "resolve_fetched"]

log = logging.getLogger(__name__)

# CTranslate2 conversions of OpenAI's Whisper checkpoints, as faster-whisper names them.
HUB_REPOS = {name: f"Systran/faster-whisper-{name}" for name in (
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3")}
FETCH_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


def fetch_model(name: str, *, allow_network: bool, revision: str | None = None) -> ResolvedModel:
    """Download `name` (a known model name or a hub repo id `owner/name`) into the cache."""
    if name in PACKS:
        try:
            resolved = resolve_model(name)
        except ModelStoreError:
            pass  # the pack is not installed here: fetching is the way to get it
        else:
            log.info("model %s is available offline from %s; nothing to fetch", name, resolved.source)
            return resolved
    repo = HUB_REPOS.get(name) or (name if name.count("/") == 1 else None)
    if repo is None:
        raise ModelStoreError(f"no hub repository known for {name!r} (known: {', '.join(sorted(HUB_REPOS))}); "
                              "pass a repository id such as Systran/faster-whisper-small")
    if not allow_network:
        raise ModelStoreError(
            f"fetching {name!r} downloads {repo} from the Hugging Face hub; the appliance uses no network unless "
            "the operator allows it: rerun with --allow-network")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ModelStoreError("huggingface_hub is not installed, so models cannot be fetched: "
                              "pip install huggingface_hub (only `models fetch` needs it)") from err
    target = fetched_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            snapshot_download(repo, revision=revision, local_dir=str(staging), allow_patterns=FETCH_PATTERNS)
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
            files = {p.name: sha256_of(p) for p in sorted(staging.iterdir()) if p.is_file()}
            if "model.bin" not in files or "config.json" not in files:
                raise ModelStoreError(f"{repo} holds no CTranslate2 model (no model.bin/config.json)")
            (staging / MANIFEST).write_text(json.dumps({"repo": repo, "revision": revision, "files": files}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    for file_name, sha256 in files.items():
        remember_verified(target / file_name, sha256)
    log.info("fetched %s from %s into %s", name, repo, target)
    return ResolvedModel(name=name, path=target, source=f"fetched:{repo}", english_only=name.endswith(".en"))
