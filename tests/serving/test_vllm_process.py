"""Starting and stopping real vLLM processes: failures carry the log, nothing is orphaned."""

from __future__ import annotations

import json
import shutil

import pytest

from serving.errors import VllmStartError
from serving.process import VllmServer, group_members
from tests.conftest import serving_config

pytestmark = pytest.mark.vllm


def test_a_server_that_dies_reports_the_end_of_its_log(artifacts, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(artifacts.base_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["NoSuchArchitectureForCausalLM"]
    (broken / "config.json").write_text(json.dumps(config))
    server = VllmServer(
        serving_config(artifacts).model_copy(update={"model_path": broken}), tmp_path / "v.log"
    )
    server.start()
    pgid = server.pid
    with pytest.raises(VllmStartError, match="exited with code") as caught:
        server.wait_ready(timeout=240)
    assert "NoSuchArchitectureForCausalLM" in caught.value.log_tail
    server.stop()
    assert group_members(pgid) == []


def test_a_server_not_healthy_in_time_is_stopped(artifacts, tmp_path):
    server = VllmServer(serving_config(artifacts), tmp_path / "v.log")
    server.start()
    pgid = server.pid
    with pytest.raises(VllmStartError, match="not healthy after 2 s"):
        server.wait_ready(timeout=2)
    assert group_members(pgid) == []
    assert server.pid is None
