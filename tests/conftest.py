"""Shared fixtures: the built tiny model, one real vLLM server per session, and a
check that the session leaves no vLLM process behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.artifacts import Artifacts, default_cache_dir, ensure_artifacts
from serving.config import AdapterSpec, ServingConfig
from serving.corpus import BRAND_VOICE, UNSAFE
from serving.process import VllmServer, free_port, group_members
from tests.redis_server import redis_server

VLLM_START_TIMEOUT = 300.0


def vllm_processes() -> set[int]:
    """Processes that are part of a vLLM server: its API server or its engine core."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"vllm.entrypoints" in text or b"VLLM::" in text:
            found.add(int(cmdline.parent.name))
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_before] = vllm_processes()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = vllm_processes() - session.config.stash[_before]
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nFAIL: vLLM processes left running after the tests: {sorted(left)}")


_before = pytest.StashKey[set[int]]()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One real redis-server for the session; each test keeps to a key prefix of its own."""
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def artifacts() -> Artifacts:
    return ensure_artifacts(default_cache_dir())


def serving_config(artifacts: Artifacts, *adapters: str) -> ServingConfig:
    return ServingConfig(
        model_path=artifacts.base_dir,
        served_name=artifacts.base_name,
        adapters=tuple(AdapterSpec(name=n, path=artifacts.adapters[n]) for n in adapters),
        dtype="float32",
        max_model_len=artifacts.context_length,
        max_loras=4,
        max_lora_rank=8,
        port=free_port(),
    )


@pytest.fixture(scope="session")
def vllm_server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory):
    """Real vLLM (CPU build) serving the base, the brand-voice and the unsafe adapter."""
    config = serving_config(artifacts, BRAND_VOICE.name, UNSAFE.name)
    server = VllmServer(config, tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start()
    pgid = server.pid
    try:
        server.wait_ready(timeout=VLLM_START_TIMEOUT)
        yield server
    finally:
        server.stop()
    assert group_members(pgid) == [], "vLLM left processes behind"
