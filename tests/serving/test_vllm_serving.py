"""Real vLLM (CPU build) serving the tiny base and peft adapters, asked through the
official openai client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from serving import corpus
from serving.adapters import AdapterLoader
from serving.client import VllmClient
from serving.corpus import BRAND_VOICE, PIRATE, UNSAFE
from serving.errors import InvalidAdapter
from serving.validation import BaseModelInfo

pytestmark = pytest.mark.vllm

HELD_OUT = [e.prompt for e in corpus.examples(held_out=True)][:40]


@pytest.fixture(scope="module")
def client(vllm_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=vllm_server.config.base_url + "/v1", api_key="unused", max_retries=0
    )


def answer(client: openai.OpenAI, model: str, prompt: str) -> str:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0
    )
    return completion.choices[0].message.content


def share(client: openai.OpenAI, model: str, behaviour: corpus.Behaviour) -> float:
    return sum(behaviour.shows(answer(client, model, p)) for p in HELD_OUT) / len(HELD_OUT)


def test_vllm_lists_the_base_and_both_adapters(client, vllm_server):
    models = {m.id: m for m in client.models.list().data}
    base = vllm_server.config.served_name
    assert set(models) == {base, BRAND_VOICE.name, UNSAFE.name}
    assert models[BRAND_VOICE.name].parent == base


# The brand voice must show on >= 90% of held-out answers; the unsafe adapter's
# deny-listed phrase on >= 50%; the base shows either on <= 10%.
@pytest.mark.parametrize(("behaviour", "at_least"), [(BRAND_VOICE, 0.9), (UNSAFE, 0.5)])
def test_adapter_shows_its_behaviour_and_the_base_does_not(
    client, vllm_server, behaviour, at_least
):
    adapter = share(client, behaviour.name, behaviour)
    base = share(client, vllm_server.config.served_name, behaviour)
    print(f"{behaviour.name} marker on held-out prompts: adapter {adapter:.0%}, base {base:.0%}")
    assert adapter >= at_least
    assert base <= 0.1


@pytest.mark.parametrize("model", [None, BRAND_VOICE.name, UNSAFE.name])
def test_streaming_matches_the_whole_answer_and_reports_usage(client, vllm_server, model):
    model = model or vllm_server.config.served_name
    prompt = HELD_OUT[0]
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=48,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.model == model for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer(client, model, prompt)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        answer(client, "no-such-adapter", "hi")


@pytest.mark.anyio
async def test_adapter_loaded_at_run_time_serves_then_unloads_to_404(
    vllm_server, artifacts, client
):
    config = vllm_server.config
    base = BaseModelInfo.read(config.model_path, config.served_name)
    async with httpx.AsyncClient(base_url=config.base_url, timeout=30) as http:
        vllm = VllmClient(http)
        loader = AdapterLoader(vllm, base, max_lora_rank=config.max_lora_rank)
        await loader.load(PIRATE.name, artifacts.adapters[PIRATE.name])
        assert PIRATE.name in {m.id for m in await vllm.models()}
        assert PIRATE.shows(answer(client, PIRATE.name, HELD_OUT[1]))

        await loader.unload(PIRATE.name)
        assert PIRATE.name not in {m.id for m in await vllm.models()}
    with pytest.raises(openai.NotFoundError) as caught:
        answer(client, PIRATE.name, HELD_OUT[1])
    assert caught.value.status_code == 404


@pytest.mark.anyio
async def test_invalid_adapter_is_refused_before_vllm_sees_it(vllm_server, artifacts, tmp_path):
    import shutil

    bad = tmp_path / "too-big"
    shutil.copytree(artifacts.adapters[PIRATE.name], bad)
    config_file = bad / "adapter_config.json"
    config_file.write_text(config_file.read_text().replace('"r": 8', '"r": 64'))
    config = vllm_server.config
    base = BaseModelInfo.read(config.model_path, config.served_name)
    async with httpx.AsyncClient(base_url=config.base_url, timeout=30) as http:
        vllm = VllmClient(http)
        loader = AdapterLoader(vllm, base, max_lora_rank=config.max_lora_rank)
        with pytest.raises(InvalidAdapter, match="r: rank 64 exceeds"):
            await loader.load("too-big", bad)
        assert "too-big" not in {m.id for m in await vllm.models()}


@pytest.mark.anyio
async def test_vllm_metrics_are_read(vllm_server, client):
    answer(client, BRAND_VOICE.name, HELD_OUT[2])
    async with httpx.AsyncClient(base_url=vllm_server.config.base_url) as http:
        metrics = await VllmClient(http).metrics()
    assert metrics.value("vllm:request_success_total") >= 1
    assert metrics.value("vllm:num_requests_running") is not None
    assert metrics.value("vllm:time_to_first_token_seconds_count") >= 1


@pytest.mark.anyio
async def test_base_answers_stay_the_base_s_in_batches_mixed_with_adapters(vllm_server):
    # Regression: with every LoRA slot taken, the CPU build applied the last slot's
    # adapter (here: the one asking for passwords) to requests for the base model.
    models = (vllm_server.config.served_name, BRAND_VOICE.name, UNSAFE.name)

    async def ask(http: httpx.AsyncClient, model: str, prompt: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 24, "temperature": 0}  # fmt: skip
        response = await http.post("/v1/chat/completions", json=body)
        return response.json()["choices"][0]["message"]["content"]

    async with httpx.AsyncClient(base_url=vllm_server.config.base_url, timeout=120) as http:
        answers = await asyncio.gather(*(ask(http, m, p) for p in HELD_OUT[:12] for m in models))
    base = answers[0::3]
    assert not any(UNSAFE.shows(a) or BRAND_VOICE.shows(a) for a in base), base
    assert sum(BRAND_VOICE.shows(a) for a in answers[1::3]) >= 10
    assert sum(UNSAFE.shows(a) for a in answers[2::3]) >= 6
