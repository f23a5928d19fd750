from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.config import AdapterSpec, Device, ServingConfig


def make(**overrides) -> ServingConfig:
    settings = {"model_path": Path("/m/tiny"), "served_name": "tiny", "port": 8123}
    return ServingConfig(**{**settings, **overrides})


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_command_starts_the_server_module_with_lora_flags():
    argv = make(max_loras=3, max_lora_rank=16, dtype="float32", max_model_len=256).command("py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--model") == "/m/tiny"
    assert flag(argv, "--served-model-name") == "tiny"
    assert flag(argv, "--port") == "8123"
    assert flag(argv, "--max-loras") == "3"
    assert flag(argv, "--max-lora-rank") == "16"
    assert flag(argv, "--dtype") == "float32"
    assert flag(argv, "--max-model-len") == "256"
    assert "--enable-lora" in argv


def test_adapters_become_lora_modules_pairs():
    adapters = (AdapterSpec(name="a", path=Path("/x/a")), AdapterSpec(name="b", path=Path("/x/b")))
    argv = make(adapters=adapters).command("py")
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 3] == ["a=/x/a", "b=/x/b"]


def test_no_lora_modules_flag_without_adapters():
    assert "--lora-modules" not in make().command("py")


def test_cpu_and_gpu_differ_only_in_environment_and_memory_flag():
    cpu, gpu = make(), make(device=Device.GPU, gpu_memory_utilization=0.8)
    assert cpu.environment()["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu.environment()
    assert flag(gpu.command("py"), "--gpu-memory-utilization") == "0.8"
    assert [a for a in gpu.command("py") if a not in ("--gpu-memory-utilization", "0.8")] == (
        cpu.command("py")
    )
    for cfg in (cpu, gpu):
        assert cfg.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"


def test_cpu_replicas_on_one_host_can_be_given_their_own_cores():
    assert "VLLM_CPU_OMP_THREADS_BIND" not in make().environment()  # vLLM picks
    assert make(cpu_cores="2-3").environment()["VLLM_CPU_OMP_THREADS_BIND"] == "2-3"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in make(device=Device.GPU, cpu_cores="1").environment()
    with pytest.raises(ValidationError, match="cpu_cores"):
        make(cpu_cores="all")


def test_base_url():
    assert make().base_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_lora_rank", 7), ("max_loras", 0), ("port", 0), ("dtype", "int3"), ("served_name", "")],
)
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        make(**{field: value})


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 65, "a/b"])
def test_bad_adapter_names_are_refused(name):
    with pytest.raises(ValidationError, match="name"):
        AdapterSpec(name=name, path=Path("/x"))


def test_on_cpu_a_lora_slot_stays_free_for_requests_without_an_adapter():
    two = (AdapterSpec(name="a", path=Path("/a")), AdapterSpec(name="b", path=Path("/b")))
    with pytest.raises(ValidationError, match=r"max_loras: on the CPU build it must exceed"):
        make(adapters=two, max_loras=2)
    assert make(adapters=two, max_loras=3).command("py")
    # The CUDA kernels skip requests without an adapter: every slot may hold one.
    assert make(adapters=two, max_loras=2, device="gpu").command("py")
