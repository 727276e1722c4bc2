"""tests/gpu/restore_bench.py, fetch_profile.py and shared_profile.py
where they cannot run (CI has no GPU): they say why and exit 0;
restore_bench's argument parsing and report table work without
transformers."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from conftest import BUILD, ROOT

SCRIPT = os.path.join(ROOT, "tests", "gpu", "restore_bench.py")


def load_script():
    spec = importlib.util.spec_from_file_location("restore_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def has_transformers():
    return importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(torch.cuda.is_available() and has_transformers(),
                    reason="a GPU with transformers: the benchmark itself would run")
def test_skips_without_cuda_or_transformers():
    r = subprocess.run([sys.executable, SCRIPT, "--build", BUILD], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped" in r.stdout and ("CUDA" in r.stdout or "transformers" in r.stdout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU: the profile itself would run")
@pytest.mark.parametrize("name", ["fetch_profile.py", "shared_profile.py"])
def test_profiles_without_cuda(name):
    script = os.path.join(ROOT, "tests", "gpu", name)
    r = subprocess.run([sys.executable, script, "--build", BUILD], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA" in r.stdout


def test_arguments_and_table():
    mod = load_script()
    a = mod.parse_args(["--build", "somewhere", "--tokens", "16,32", "--quant", "int8"])
    assert a.tokens == "16,32" and a.quant == "int8" and a.repeats == 3 and not a.tiny
    assert mod.geometry(a)["num_key_value_heads"] == 8 and mod.geometry(a)["head_dim"] == 128
    assert mod.LLAMA3_8B["num_hidden_layers"] == 32 and mod.LLAMA3_8B["vocab_size"] == 128256
    row = dict(mode="int8", n=2048, restore_s=0.01, ttft_restore_s=0.012, ttft_recompute_s=0.06,
               speedup=5.0, restore_GBps=27.0, pinned_h2d_GBps=50.0, rate_vs_pinned=0.54,
               logits_equal=False, kl_mean=1e-4, top1_agree=0.98)
    text = mod.table([row])
    assert "| int8 | 2048 | 10.0 | 12.0 | 60.0 | 6.0x | 5.0x | 27.0 | 50.0 | 0.54 | differ |" in text
