"""The tiny model and its adapters as built (and cached) by `serving.artifacts`."""

from __future__ import annotations

import json
import shutil

import pytest

from serving import corpus
from serving.artifacts import cache_key, ensure_artifacts
from serving.config import AdapterSpec
from serving.errors import InvalidAdapter
from serving.process import VllmServer
from serving.tokenizer import SPECIAL_TOKENS, VOCAB_SIZE, build_tokenizer
from serving.validation import BaseModelInfo, validate_adapter
from tests.conftest import serving_config

pytestmark = pytest.mark.model


def test_held_out_prompts_are_never_trained_on():
    train = {e.prompt for e in corpus.examples(held_out=False)}
    held_out = {e.prompt for e in corpus.examples(held_out=True)}
    assert held_out
    assert not train & held_out
    assert 0.1 < len(held_out) / (len(train) + len(held_out)) < 0.3


def test_tokenizer_is_deterministic_and_renders_chatml():
    first, second = build_tokenizer(), build_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    assert 256 + len(SPECIAL_TOKENS) < len(first) <= VOCAB_SIZE  # bytes, specials and merges
    text = first.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert first.decode(first("Hello from Acme!")["input_ids"]) == "Hello from Acme!"


def test_cache_key_is_stable_and_depends_on_the_seed():
    assert cache_key(1) == cache_key(1) != cache_key(2)


def test_every_built_adapter_is_valid_against_the_built_base(artifacts):
    base = BaseModelInfo.read(artifacts.base_dir, artifacts.base_name)
    for name, path in artifacts.adapters.items():
        info = validate_adapter(name, path, base, max_lora_rank=8)
        assert info.rank == 8
    assert set(artifacts.adapters) == {b.name for b in corpus.BEHAVIOURS}


def test_the_cache_is_reused(artifacts, tmp_path):
    again = ensure_artifacts(artifacts.base_dir.parent.parent)
    assert again == artifacts
    weights = artifacts.base_dir / "model.safetensors"
    assert weights.stat().st_mtime == again.base_dir.joinpath("model.safetensors").stat().st_mtime


def test_server_refuses_an_invalid_adapter_before_starting(artifacts, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(artifacts.adapters[corpus.BRAND_VOICE.name], foreign)
    config_file = foreign / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(
        json.dumps({**config, "base_model_name_or_path": "meta-llama/Llama-3-8B"})
    )
    cfg = serving_config(artifacts).model_copy(
        update={"adapters": (AdapterSpec(name="foreign", path=foreign),)}
    )
    server = VllmServer(cfg, tmp_path / "vllm.log")
    with pytest.raises(InvalidAdapter, match="base_model_name_or_path"):
        server.start()
    assert server.pid is None
    assert not (tmp_path / "vllm.log").exists()
