"""Build, or reuse from the cache, the tiny base model and its adapters.

    >>> built = ensure_artifacts(default_cache_dir())
    >>> built.adapters["acme-voice"]
    PosixPath('.cache/rollgate/models-3f2a.../adapters/acme-voice')

The cache key hashes the builders' own source, the seed and the library
versions, so editing a builder rebuilds and nothing else does. Builds go to a
temporary directory renamed into place, under a file lock, so an interrupted
or concurrent build never leaves half a model behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from serving import adapter_training, corpus, tiny_model, tokenizer, training

log = logging.getLogger(__name__)

DEFAULT_SEED = 1234
_BUILDERS = (corpus, tokenizer, training, tiny_model, adapter_training)
_LIBRARIES = ("torch", "transformers", "peft", "tokenizers")
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Artifacts:
    base_dir: Path
    base_name: str
    adapters: dict[str, Path]
    context_length: int = tokenizer.CONTEXT_LENGTH


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROLLGATE_CACHE_DIR", ".cache/rollgate")).absolute()


def cache_key(seed: int) -> str:
    digest = hashlib.sha256(f"seed={seed}".encode())
    for module in _BUILDERS:
        digest.update(Path(module.__file__).read_bytes())
    for lib in _LIBRARIES:
        digest.update(f"{lib}={metadata.version(lib)}".encode())
    return digest.hexdigest()[:16]


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(root: Path) -> Artifacts:
    manifest = json.loads((root / MANIFEST).read_text())
    return Artifacts(
        base_dir=root / manifest["base"],
        base_name=manifest["base_name"],
        adapters={name: root / rel for name, rel in manifest["adapters"].items()},
    )


def _build(root: Path, seed: int) -> None:
    started = time.monotonic()
    log.info("training the tiny base model (about 15 s on 2 cores)")
    loss = tiny_model.build_base(root / "base", seed=seed)
    log.info("base model ready: loss %.3f, %.0f s", loss, time.monotonic() - started)
    adapters = {}
    for i, behaviour in enumerate(corpus.BEHAVIOURS, start=1):
        t0 = time.monotonic()
        rel = f"adapters/{behaviour.name}"
        loss = adapter_training.train_adapter(
            root / "base", tiny_model.TINY_MODEL_NAME, behaviour, root / rel, seed=seed + i
        )
        adapters[behaviour.name] = rel
        log.info("adapter %s ready: loss %.3f, %.0f s", behaviour.name, loss, time.monotonic() - t0)
    manifest = {"base": "base", "base_name": tiny_model.TINY_MODEL_NAME, "adapters": adapters}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))


def ensure_artifacts(cache_dir: Path, seed: int = DEFAULT_SEED) -> Artifacts:
    """The built model and adapters for `seed`, building them on the first call."""
    root = cache_dir / f"models-{cache_key(seed)}"
    with _locked(cache_dir):
        if (root / MANIFEST).is_file():
            log.info("reusing the tiny model and adapters in %s", root)
            return _read(root)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
        try:
            _build(staging, seed)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built the tiny model and adapters in %s", root)
    return _read(root)
