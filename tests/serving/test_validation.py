import json
import struct
from pathlib import Path

import pytest

from serving.errors import InvalidAdapter
from serving.validation import BaseModelInfo, read_safetensors_keys, validate_adapter

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_safetensors(path: Path, names: list[str]) -> None:
    """A valid safetensors file of one-float tensors, written by hand (no torch)."""
    header = {
        n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
        for i, n in enumerate(names)
    }
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 4 * len(names))


@pytest.fixture
def base(tmp_path) -> BaseModelInfo:
    model = tmp_path / "base"
    model.mkdir()
    names = ["model.embed_tokens.weight", "lm_head.weight"]
    for layer in range(2):
        names += [f"model.layers.{layer}.self_attn.{m}.weight" for m in MODULES[:4]]
        names += [f"model.layers.{layer}.mlp.{m}.weight" for m in MODULES[4:]]
    write_safetensors(model / "model.safetensors", names)
    return BaseModelInfo.read(model, served_name="tiny")


def good_config() -> dict:
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": "tiny",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": list(MODULES),
        "bias": "none",
        "use_dora": False,
        "modules_to_save": None,
    }


def write_adapter(root: Path, config: dict | str | None = None, weights: bool = True) -> Path:
    path = root / "adapter"
    path.mkdir()
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (path / "adapter_config.json").write_text(text)
    if weights:
        write_safetensors(path / "adapter_model.safetensors", ["x.lora_A.weight"])
    return path


def test_reads_tensor_names_from_the_header(tmp_path):
    write_safetensors(tmp_path / "w.safetensors", ["a.weight", "b.bias"])
    assert read_safetensors_keys(tmp_path / "w.safetensors") == ["a.weight", "b.bias"]


def test_a_good_adapter_passes(tmp_path, base):
    info = validate_adapter("good", write_adapter(tmp_path, good_config()), base, max_lora_rank=8)
    assert (info.rank, info.base_model, info.target_modules) == (8, "tiny", MODULES)


def test_base_may_be_named_by_its_path(tmp_path, base):
    config = {**good_config(), "base_model_name_or_path": str(tmp_path / "base")}
    assert validate_adapter("a", write_adapter(tmp_path, config), base, max_lora_rank=8).rank == 8


def test_regex_target_modules_must_match_a_module(tmp_path, base):
    ok = {**good_config(), "target_modules": r".*\.self_attn\.(q|v)_proj"}
    assert validate_adapter("a", write_adapter(tmp_path, ok), base, max_lora_rank=8)
    (tmp_path / "adapter").rename(tmp_path / "old")
    bad = {**good_config(), "target_modules": r".*\.attention\.wq"}
    with pytest.raises(InvalidAdapter, match="target_modules"):
        validate_adapter("a", write_adapter(tmp_path, bad), base, max_lora_rank=8)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"base_model_name_or_path": "llama-70b"}, "base_model_name_or_path", "does not match"),
        ({"base_model_name_or_path": ""}, "base_model_name_or_path", "does not match"),
        ({"r": 16}, "r", "exceeds the server's max LoRA rank 8"),
        ({"r": 0}, "r", "positive integer"),
        ({"r": "8"}, "r", "positive integer"),
        ({"target_modules": ["q_proj", "wq"]}, "target_modules", "not modules of the base: wq"),
        ({"target_modules": []}, "target_modules", "non-empty list"),
        ({"use_dora": True}, "use_dora", "DoRA"),
        ({"bias": "all"}, "bias", "must be 'none'"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save", "extra trained modules"),
        ({"peft_type": "IA3"}, "peft_type", "must be 'LORA'"),
    ],
)
def test_each_bad_field_is_named(tmp_path, base, change, field, reason):
    path = write_adapter(tmp_path, {**good_config(), **change})
    with pytest.raises(InvalidAdapter, match=reason) as caught:
        validate_adapter("bad", path, base, max_lora_rank=8)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"adapter 'bad': {field}: ")


def test_missing_config(tmp_path, base):
    with pytest.raises(InvalidAdapter, match=r"adapter_config\.json: missing") as caught:
        validate_adapter("a", write_adapter(tmp_path, None), base, max_lora_rank=8)
    assert caught.value.field == "adapter_config.json"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_unparseable_config(tmp_path, base, text):
    with pytest.raises(InvalidAdapter) as caught:
        validate_adapter("a", write_adapter(tmp_path, text), base, max_lora_rank=8)
    assert caught.value.field == "adapter_config.json"


def test_missing_weights(tmp_path, base):
    with pytest.raises(InvalidAdapter, match=r"adapter_model\.safetensors") as caught:
        validate_adapter(
            "a", write_adapter(tmp_path, good_config(), weights=False), base, max_lora_rank=8
        )
    assert caught.value.field == "weights"


def test_missing_directory(tmp_path, base):
    with pytest.raises(InvalidAdapter, match="not a directory") as caught:
        validate_adapter("a", tmp_path / "nowhere", base, max_lora_rank=8)
    assert caught.value.field == "path"


def test_base_without_weights_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        BaseModelInfo.read(tmp_path, served_name="x")
