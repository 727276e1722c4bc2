"""kvtier.hf against a real kvtierd: transformers-shaped caches (legacy
tuples of [1, heads, seq, dim] per layer) saved by one process and loaded
by another; DynamicCache when transformers is installed."""
import errno

import pytest
import torch

import kvtier
import kvtier.hf
from conftest import run_python

L, H, D = 4, 2, 16


def model(dtype="float32"):
    return kvtier.Model("py-hf", n_layers=L, n_kv_heads=H, head_dim=D, dtype=dtype, chunk_tokens=32)


def legacy_cache(seq, seed, dtype=torch.float32):
    """What a transformers model returns for a prefill of seq tokens: per
    layer (k, v), each [1, heads, seq, dim], as the attention wrote them
    (a transposed view, not dense)."""
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(1, seq, H, D, generator=g).to(dtype).transpose(1, 2),
                  torch.randn(1, H, seq, D, generator=g).to(dtype)) for _ in range(L))


def tuples(cache):
    """(k, v) per layer from whatever load returned."""
    return kvtier.hf._layers(cache)


SAVE_CHILD = """
import torch, kvtier, kvtier.hf, sys
sys.path.insert(0, "tests/python")
from test_hf import model, legacy_cache
with kvtier.connect(model()) as c:
    print(kvtier.hf.save(c, torch.arange(100, 200).unsqueeze(0), legacy_cache(100, 7)))
"""


@pytest.mark.daemon_flags("--quant", "none")
def test_save_in_one_process_load_in_another(daemon):
    assert run_python(daemon, SAVE_CHILD).strip() == "100"
    want = legacy_cache(100, 7)
    ids = torch.arange(100, 200).unsqueeze(0)
    with kvtier.connect(model(), daemon.socket) as c:
        cache, n = kvtier.hf.load(c, ids, legacy=True)
        assert n == 100 and isinstance(cache, tuple) and len(cache) == L
        for (k, v), (wk, wv) in zip(cache, want):
            assert k.shape == (1, H, 100, D) and k.dtype == torch.float32 and k.device.type == "cpu"
            assert torch.equal(k, wk) and torch.equal(v, wv)
        # a longer prompt sharing the prefix: the stored part comes back
        longer = torch.cat([ids, torch.tensor([[1, 2, 3, 4, 5]])], dim=1)
        cache, n = kvtier.hf.load(c, longer, legacy=True)
        assert n == 100
        # one that diverges at token 40: the chunks before it (32 tokens)
        other = ids.clone()
        other[0, 40] = 9999
        cache, n = kvtier.hf.load(c, other, legacy=True)
        assert n == 32 and cache[3][1].shape == (1, H, 32, D)
        assert torch.equal(cache[3][1], want[3][1][:, :, :32])
        # nothing stored
        assert kvtier.hf.load(c, [5, 6, 7]) == (None, 0)
        assert kvtier.hf.load(c, []) == (None, 0)
        # dtype and device on request
        cache, n = kvtier.hf.load(c, ids, device="cpu", dtype=torch.bfloat16, legacy=True)
        assert cache[0][0].dtype == torch.bfloat16
        assert torch.equal(cache[0][0], want[0][0].bfloat16())


@pytest.mark.daemon_flags("--quant", "none")
def test_save_converts_dtype_and_cuts_to_input_ids(daemon):
    with kvtier.connect(model("float16"), daemon.socket) as c:
        cache = legacy_cache(70, 3, torch.bfloat16)          # engine in bf16, namespace f16
        assert kvtier.hf.save(c, list(range(60)), cache) == 60   # cache holds 70, ids 60
        got, n = kvtier.hf.load(c, list(range(70)), legacy=True)
        assert n == 60 and got[1][0].dtype == torch.float16
        assert torch.equal(got[1][0], cache[1][0][:, :, :60].half())
        assert kvtier.hf.save(c, list(range(500, 600)), legacy_cache(40, 4)) == 40


def test_int8_within_bound(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        cache = legacy_cache(64, 11)
        kvtier.hf.save(c, list(range(64)), cache)
        got, n = kvtier.hf.load(c, list(range(64)), legacy=True)
        assert n == 64
        for (k, v), (wk, wv) in zip(got, cache):
            for a, b in ((k, wk), (v, wv)):
                bound = b.abs().amax(dim=-1, keepdim=True) / 127 * 1.01 + 1e-3
                assert ((a - b).abs() <= bound).all()


def test_hf_errors(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        ids = list(range(10))
        bad = [
            (legacy_cache(10, 1)[:3], "3 layers"),
            (tuple((k[:, :1], v) for k, v in legacy_cache(10, 1)), "want [1, 2, seq, 16]"),
            (tuple((torch.cat([k, k]), v) for k, v in legacy_cache(10, 1)), "batch 1"),
            (42, "tuple of (k, v)"),
        ]
        for cache, text in bad:
            with pytest.raises(kvtier.Error) as e:
                kvtier.hf.save(c, ids, cache)
            assert e.value.errno == errno.EINVAL and text in str(e.value), str(e.value)
        assert c.match_tokens(ids) == 0                       # nothing was stored


@pytest.mark.daemon_flags("--quant", "none")
def test_dynamic_cache(daemon):
    transformers = pytest.importorskip("transformers")
    with kvtier.connect(model(), daemon.socket) as c:
        src = transformers.DynamicCache()
        for i, (k, v) in enumerate(legacy_cache(50, 5)):
            src.update(k, v, i)
        assert kvtier.hf.save(c, list(range(50)), src) == 50
        cache, n = kvtier.hf.load(c, list(range(50)))
        assert n == 50 and isinstance(cache, transformers.DynamicCache)
        for (k, v), (wk, wv) in zip(tuples(cache), legacy_cache(50, 5)):
            assert torch.equal(k, wk) and torch.equal(v, wv)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.daemon_flags("--quant", "none")
def test_cuda_load(daemon):
    with kvtier.connect(model("bfloat16"), daemon.socket) as c:
        cache = tuple((k.cuda(), v.cuda()) for k, v in legacy_cache(300, 2, torch.bfloat16))
        kvtier.hf.save(c, list(range(300)), cache)
        got, n = kvtier.hf.load(c, list(range(300)), device="cuda", legacy=True)
        assert n == 300 and got[0][0].device.type == "cuda"
        for (k, v), (wk, wv) in zip(got, cache):
            assert torch.equal(k, wk) and torch.equal(v, wv)
