"""test_raw_fetch.py - proves that a raw fetch (stored int8 rows) dequantized
with torch ops on the CPU equals the daemon's own fetch bit for bit, for
outliers 4 and 0, padding when more outliers are asked than a chunk holds,
and f16/bf16/f32 clients; and that a lossless daemon, a buffer outside the
region and too few outliers are refused."""
import ctypes
import errno

import numpy as np
import pytest
import torch

import kvtier
from kvtier import raw
from kvtier._lib import Span, lib

H, D, L, N = 2, 32, 2, 40


def spiky(n, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, H, D)).astype(np.float32)
    x[:, :, 3] *= 40.0                        # outlier channels, as real keys have
    x[:, :, 17] *= -25.0
    return x


def model(dtype):
    return kvtier.Model("raw-model", n_layers=L, n_kv_heads=H, head_dim=D, dtype=dtype,
                        chunk_tokens=16)


def store(c, dtype, tokens):
    kv = []
    for layer in range(L):
        k, v = spiky(N, 2 * layer), spiky(N, 2 * layer + 1)
        if dtype == "bfloat16":
            k, v = torch.from_numpy(k).bfloat16(), torch.from_numpy(v).bfloat16()
        else:
            k, v = k.astype(dtype), v.astype(dtype)
        kv.append((k, v))
    c.store_tokens(tokens, kv)


def bits(x):
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("stored,asked", [
    pytest.param(4, 4, marks=pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")),
    pytest.param(0, 0, marks=pytest.mark.daemon_flags("--quant", "int8", "--outliers", "0")),
    pytest.param(4, 16, marks=pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")),
])
def test_raw_equals_daemon_fetch(daemon, dtype, stored, asked):
    m = model(dtype)
    tokens = list(range(100, 100 + N))
    with kvtier.connect(m, socket=daemon.socket) as c:
        store(c, dtype, tokens)
        want = c.fetch_tokens(tokens)
        got = c.fetch_tokens_raw(tokens, outliers=asked)
        assert len(got) == L
        for (wk, wv), (rk, rv) in zip(want, got):
            assert rk.shape == (N, H * (4 + 4 * asked + D))
            if asked > stored:                # padding: index 0xFFFF, value 0
                pad = torch.from_numpy(rk)[:, 4 * H:H * (4 + 4 * asked)].contiguous()
                pairs = pad.view(torch.int16).view(N, 2, H, asked)
                assert (pairs[:, 0, :, stored:] == -1).all()
                assert (pairs[:, 1, :, stored:] == 0).all()
            for w, r in ((wk, rk), (wv, rv)):
                deq = raw.dequantize(torch.from_numpy(r), H, D, asked, TORCH[dtype])
                assert torch.equal(bits(deq), bits(w))


@pytest.mark.daemon_flags("--quant", "none")
def test_raw_refused_by_lossless_daemon(daemon):
    m = model("float16")
    tokens = list(range(N))
    with kvtier.connect(m, socket=daemon.socket) as c:
        store(c, "float16", tokens)
        with pytest.raises(kvtier.Error) as e:
            c.fetch_tokens_raw(tokens, outliers=4)
        assert e.value.errno == errno.EOPNOTSUPP
        assert "lossless" in str(e.value)


@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")
def test_raw_too_few_outliers_and_outside_region(daemon):
    m = model("float16")
    tokens = list(range(N))
    with kvtier.connect(m, socket=daemon.socket) as c:
        store(c, "float16", tokens)
        with pytest.raises(kvtier.Error) as e:
            c.fetch_tokens_raw(tokens, outliers=2)
        assert e.value.errno == errno.ERANGE
        assert "4 outliers" in str(e.value)

        row = H * (4 + 4 * 4 + D)
        outside = (ctypes.c_uint8 * (N * row))()
        span = Span(0, 0, N, ctypes.addressof(outside), ctypes.addressof(outside))
        arr = (ctypes.c_int32 * N)(*tokens)
        h = c._handle()
        rc = lib.kvt_fetch_tokens_raw(h, arr, N, ctypes.byref(span), 1, 4)
        assert rc == -errno.EINVAL
        assert b"region" in lib.kvt_last_error(h)
