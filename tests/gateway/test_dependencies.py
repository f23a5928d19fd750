import subprocess
import sys

CHECK = """
import sys, gateway.app, gateway.__main__
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "vllm", "transformers"))
sys.exit(f"imported: {heavy}" if heavy else 0)
"""


def test_the_gateway_runtime_imports_neither_torch_nor_vllm():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
