import json
from pathlib import Path

import httpx
import pytest

from serving.client import VllmClient, VllmMetrics
from serving.errors import VllmRequestError

pytestmark = pytest.mark.anyio

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 5.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
"""


def client(handler) -> VllmClient:
    return VllmClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://v")
    )


async def test_load_adapter_posts_name_and_path():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, text="Success: LoRA adapter 'a' added successfully.")

    await client(handler).load_adapter("a", Path("/x/a"))
    assert seen == [("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/x/a"})]


async def test_unload_adapter_posts_name():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, text="ok")

    await client(handler).unload_adapter("a")
    assert seen == [("/v1/unload_lora_adapter", {"lora_name": "a"})]


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_any_status_but_200_is_a_failure(status):
    vllm = client(lambda _: httpx.Response(status, text="The lora adapter 'a' cannot be found."))
    with pytest.raises(VllmRequestError, match=f"HTTP {status}") as caught:
        await vllm.load_adapter("a", Path("/x"))
    assert caught.value.status == status


async def test_models_lists_base_and_adapters():
    body = {
        "data": [
            {"id": "tiny", "root": "/m/tiny", "parent": None},
            {"id": "a", "root": "/x/a", "parent": "tiny"},
        ]
    }
    models = await client(lambda _: httpx.Response(200, json=body)).models()
    assert [(m.id, m.parent) for m in models] == [("tiny", None), ("a", "tiny")]


@pytest.mark.parametrize(
    "body", ["<html>bad gateway</html>", '{"object": "list"}', '{"data": [1]}']
)
async def test_a_model_list_that_is_not_vllms_is_a_request_error(body: str):
    with pytest.raises(VllmRequestError) as caught:
        await client(lambda _: httpx.Response(200, text=body)).models()
    assert caught.value.action == "list models"


async def test_healthy_is_false_when_the_server_does_not_answer():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert await client(refuse).healthy() is False
    assert await client(lambda _: httpx.Response(503)).healthy() is False
    assert await client(lambda _: httpx.Response(200)).healthy() is True


async def test_metrics_are_parsed():
    metrics = await client(lambda _: httpx.Response(200, text=METRICS)).metrics()
    assert metrics.value("vllm:num_requests_running") == 2.0
    assert metrics.value("vllm:request_success_total") == 8.0
    assert metrics.value("vllm:request_success_total", finished_reason="length") == 3.0
    assert metrics.value("vllm:kv_cache_usage_perc") is None


def test_metric_labels_must_all_match():
    metrics = VllmMetrics.parse(METRICS)
    assert (
        metrics.value("vllm:request_success_total", finished_reason="stop", model_name="x") is None
    )
