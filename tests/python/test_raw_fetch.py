"""test_raw_fetch.py - proves that a raw fetch (stored int8 rows) dequantized
with torch ops on the CPU equals the daemon's own fetch bit for bit, for
outliers 4 and 0, padding when more outliers are asked than a chunk holds,
and f16/bf16/f32 clients; and that a lossless daemon, a buffer outside the
region and too few outliers are refused. A staged raw fetch whose GPU runs
out of memory in a later piece is redone as a value fetch (every row right);
any other failure in a later piece is raised, and the client still works."""
import ctypes
import errno

import numpy as np
import pytest
import torch

import kvtier
import kvtier._staged
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


@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "6")
def test_daemon_outliers_learned_at_connect(daemon):
    m = model("float16")
    tokens = list(range(N))
    with kvtier.connect(m, socket=daemon.socket) as c:
        assert c.raw_outliers == 6
        store(c, "float16", tokens)
        got = c.fetch_tokens_raw(tokens)          # the daemon's 6, no ERANGE
        assert got[0][0].shape == (N, H * (4 + 4 * 6 + D))


@pytest.mark.daemon_flags("--quant", "none")
def test_lossless_daemon_has_no_raw_outliers(daemon):
    with kvtier.connect(model("float16"), socket=daemon.socket) as c:
        assert c.raw_outliers is None
        assert lib.kvt_raw_outliers(c._handle()) == -errno.EOPNOTSUPP


def hf_views(layers, n, dtype):
    """Per-layer [n, H, D] views of [L, 1, H, n, D] tensors, as kvtier.hf.load
    hands fetch_tokens (strided: they are staged)."""
    k = torch.zeros((layers, 1, H, n, D), dtype=dtype)
    v = torch.zeros((layers, 1, H, n, D), dtype=dtype)
    return k, v, [(k[i, 0].permute(1, 0, 2), v[i, 0].permute(1, 0, 2)) for i in range(layers)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")
def test_staged_raw_fetch_equals_value_fetch(daemon, monkeypatch, dtype):
    """The staged fetch that moves raw rows (CUDA's, taken here on the CPU)
    fills tensors (NaN before) bit for bit as the value fetch does, in pieces
    of several layers and, with small buffers, in many pieces through three
    buffers."""
    tokens = list(range(500, 500 + N))
    monkeypatch.setenv("KVTIER_RAW_CUDA", "0")
    with kvtier.connect(model(dtype), socket=daemon.socket) as c:
        store(c, dtype, tokens)
        k0, v0, out = hf_views(L, N, TORCH[dtype])
        c.fetch_tokens(tokens, out=out)
        assert c.raw_fetches == 0
    monkeypatch.setenv("KVTIER_RAW_CUDA", "all")
    for stage in (kvtier._staged.STAGE_MAX, 1000):     # 1000 B: 9-token pieces
        monkeypatch.setattr(kvtier._staged, "STAGE_MAX", stage)
        with kvtier.connect(model(dtype), socket=daemon.socket) as c:
            k1, v1, out = hf_views(L, N, TORCH[dtype])
            k1.fill_(float("nan"))
            v1.fill_(float("nan"))
            c.fetch_tokens(tokens, out=out)
            assert c.raw_fetches == 1
            assert torch.equal(bits(k1), bits(k0)) and torch.equal(bits(v1), bits(v0))
            assert bits(k1).abs().sum() > 0


class _FailAt:
    """kvtier.raw.dequantize that raises exc on its call number at."""

    def __init__(self, at, exc):
        self.at, self.exc, self.calls, self.real = at, exc, 0, raw.dequantize

    def __call__(self, *args, **kw):
        self.calls += 1
        if self.calls == self.at:
            raise self.exc
        return self.real(*args, **kw)


@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")
def test_staged_raw_fetch_failing_in_a_later_piece(daemon, monkeypatch):
    """Many pieces; the third one's dequantization fails. Out of GPU memory:
    the fetch is redone as values, the tensors (NaN before) equal the value
    fetch's bit for bit. Another error: raised to the caller, no thread left
    waiting, and the next fetch on the same client is right."""
    tokens = list(range(1100, 1100 + N))
    monkeypatch.setenv("KVTIER_RAW_CUDA", "0")
    with kvtier.connect(model("float16"), socket=daemon.socket) as c:
        store(c, "float16", tokens)
        k0, v0, out = hf_views(L, N, torch.float16)
        c.fetch_tokens(tokens, out=out)
    monkeypatch.setenv("KVTIER_RAW_CUDA", "all")
    monkeypatch.setattr(kvtier._staged, "STAGE_MAX", 1000)     # 9-token pieces
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB")
    with kvtier.connect(model("float16"), socket=daemon.socket) as c:
        fail = _FailAt(3, oom)
        monkeypatch.setattr(kvtier._staged._raw, "dequantize", fail)
        k1, v1, out = hf_views(L, N, torch.float16)
        k1.fill_(float("nan"))
        v1.fill_(float("nan"))
        c.fetch_tokens(tokens, out=out)
        assert fail.calls >= 3
        assert c.raw_fetches == 0 and c.raw_oom_fallbacks == 1
        assert torch.equal(bits(k1), bits(k0)) and torch.equal(bits(v1), bits(v0))

        monkeypatch.setattr(kvtier._staged._raw, "dequantize", _FailAt(3, ValueError("bad")))
        with pytest.raises(ValueError, match="bad"):
            c.fetch_tokens(tokens, out=out)
        monkeypatch.setattr(kvtier._staged._raw, "dequantize", fail.real)
        k1.fill_(float("nan"))
        c.fetch_tokens(tokens, out=out)
        assert c.raw_fetches == 1
        assert torch.equal(bits(k1), bits(k0)) and torch.equal(bits(v1), bits(v0))


@pytest.mark.parametrize("first,then,raw_served", [
    (["--quant", "int8", "--outliers", "8"], ["--quant", "int8", "--outliers", "2"], 1),
])
@pytest.mark.daemon_flags("--cold-path", "{dir}/cold.kvt", "--cold-bytes", "64M",
                         "--cold-region-bytes", "4M")
def test_staged_raw_fetch_of_chunks_from_another_setting(daemon, monkeypatch, first, then,
                                                         raw_served):
    """Chunks made under outliers 8, read by a daemon now keeping 2: the raw
    fetch answers ERANGE and is asked again with 16, and the tensors (NaN
    before) hold the first daemon's values bit for bit."""
    tokens = list(range(900, 900 + N))
    base = list(daemon.flags)
    daemon.stop()
    daemon.flags = base + first
    daemon.start()
    with kvtier.connect(model("float16"), socket=daemon.socket) as c:
        store(c, "float16", tokens)
        want = c.fetch_tokens(tokens)
        c.sync()
    daemon.stop()
    daemon.flags = base + then
    daemon.start()
    monkeypatch.setenv("KVTIER_RAW_CUDA", "all")
    with kvtier.connect(model("float16"), socket=daemon.socket) as c:
        _, _, out = hf_views(L, N, torch.float16)
        for k, v in out:
            k.fill_(float("nan"))
            v.fill_(float("nan"))
        c.fetch_tokens(tokens, out=out)
        assert c.raw_fetches == raw_served
        for (wk, wv), (k, v) in zip(want, out):
            assert torch.equal(bits(k), bits(wk)) and torch.equal(bits(v), bits(wv))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")
def test_cuda_fetch_moves_raw_rows(daemon, monkeypatch):
    """Into CUDA tensors a fetch moves raw rows by default, dequantized on
    the GPU bit for bit as the daemon's values."""
    tokens = list(range(700, 700 + N))
    monkeypatch.setenv("KVTIER_RAW_CUDA", "0")
    with kvtier.connect(model("bfloat16"), socket=daemon.socket) as c:
        store(c, "bfloat16", tokens)
        want = c.fetch_tokens(tokens)
    monkeypatch.delenv("KVTIER_RAW_CUDA")
    with kvtier.connect(model("bfloat16"), socket=daemon.socket) as c:
        k1 = torch.zeros((L, 1, H, N, D), dtype=torch.bfloat16, device="cuda")
        v1 = torch.zeros_like(k1)
        out = [(k1[i, 0].permute(1, 0, 2), v1[i, 0].permute(1, 0, 2)) for i in range(L)]
        c.fetch_tokens(tokens, out=out)
        assert c.raw_fetches == 1
        for (wk, wv), (k, v) in zip(want, out):
            assert torch.equal(bits(k.cpu()), bits(wk)) and torch.equal(bits(v.cpu()), bits(wv))


@pytest.mark.parametrize("asked", [4, 6])
@pytest.mark.daemon_flags("--quant", "int8", "--outliers", "4")
def test_raw_rows_of_whole_chunks(daemon, asked):
    """Llama-3-8B's rows (8 x 128) in chunks of 256: a chunk's rows are
    300 KiB and more, which the daemon streams out (non-temporal stores);
    the same bits as the daemon's own values, padding included."""
    h, d, n = 8, 128, 512
    m = kvtier.Model("raw-big", n_layers=1, n_kv_heads=h, head_dim=d, dtype="bfloat16",
                     chunk_tokens=256)
    g = torch.Generator().manual_seed(5)
    k = torch.randn((n, h, d), generator=g)
    k[:, :, 7] *= 30.0
    v = torch.randn((n, h, d), generator=g)
    tokens = list(range(3000, 3000 + n))
    with kvtier.connect(m, socket=daemon.socket) as c:
        c.store_tokens(tokens, [(k.bfloat16(), v.bfloat16())])
        want = c.fetch_tokens(tokens)
        got = c.fetch_tokens_raw(tokens, outliers=asked)
        for w, r in zip(want[0], got[0]):
            deq = raw.dequantize(torch.from_numpy(r), h, d, asked, torch.bfloat16)
            assert torch.equal(bits(deq), bits(w))
