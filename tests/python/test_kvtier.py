"""The kvtier package against a real kvtierd: every call, numpy and torch,
dense, strided and zero-copy buffers, prefixes, across processes, errors."""
import errno
import json

import numpy as np
import pytest
import torch

import kvtier
from conftest import Daemon, run_python

H, D = 4, 32


def model(dtype="float32", name="py-test", layers=3, chunk=64):
    return kvtier.Model(name, n_layers=layers, n_kv_heads=H, head_dim=D, dtype=dtype,
                        chunk_tokens=chunk)


def rand(n, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, H, D)).astype(dtype)


def int8_ok(fetched, stored):
    """API.md's bound: per (token, head) |f - s| <= max|s| / 127 (+ f16 rounding)."""
    f, s = np.asarray(fetched, np.float64), np.asarray(stored, np.float64)
    bound = np.abs(s).max(axis=-1, keepdims=True) / 127 * 1.01 + 1e-3
    return bool((np.abs(f - s) <= bound).all())


# ---- named contexts ---------------------------------------------------------

@pytest.mark.daemon_flags("--quant", "none")
def test_store_fetch_lossless_numpy(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        k, v = rand(100, 1), rand(100, 2)
        c.store("ctx", 0, 0, k, v)
        k2, v2 = c.fetch("ctx", 0, 0, 100)
        assert isinstance(k2, np.ndarray) and k2.dtype == np.float32 and k2.shape == (100, H, D)
        assert np.array_equal(k2, k) and np.array_equal(v2, v)
        part = c.fetch("ctx", 0, 10, 20)
        assert np.array_equal(part[0], k[10:30])


def test_store_fetch_int8_bound(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        k, v = rand(200, 3), rand(200, 4)
        c.store("ctx", 1, 0, k, v)
        k2, v2 = c.fetch("ctx", 1, 0, 200)
        assert int8_ok(k2, k) and int8_ok(v2, v)
        assert not np.array_equal(k2, k)          # int8 mode really quantizes


@pytest.mark.daemon_flags("--quant", "none")
def test_batch_length_drop_overwrite(daemon):
    m = model()
    with kvtier.connect(m, daemon.socket) as c:
        kv = [(rand(50, i), rand(50, 10 + i)) for i in range(m.n_layers)]
        c.store_batch("b", [(i, 0, k, v) for i, (k, v) in enumerate(kv)])
        assert c.length("b") == 50
        c.store("b", 0, 50, rand(10, 99), rand(10, 98))
        assert c.length("b") == 50                 # tokens 50.. only in layer 0
        new = rand(5, 77)
        c.store("b", 2, 20, new, new)              # last writer wins
        outs = [(np.zeros((50, H, D), np.float32), np.zeros((50, H, D), np.float32))
                for _ in range(m.n_layers)]
        c.fetch_batch("b", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        for i in range(2):
            assert np.array_equal(outs[i][0], kv[i][0]) and np.array_equal(outs[i][1], kv[i][1])
        assert np.array_equal(outs[2][0][20:25], new) and np.array_equal(outs[2][0][:20], kv[2][0][:20])
        c.drop("b")
        assert c.length("b") == 0
        with pytest.raises(kvtier.NotFound):
            c.fetch("b", 0, 0, 1)
        c.drop("b")                                # dropping an absent context is fine


@pytest.mark.daemon_flags("--quant", "none")
def test_torch_cpu_and_strided(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        base = torch.randn(H, 80, D)
        k = base.permute(1, 0, 2)                  # [80, H, D], not contiguous
        v = torch.randn(160, H, D)[::2]            # every other token
        assert not k.is_contiguous() and not v.is_contiguous()
        c.store("t", 0, 0, k, v)
        kn, vn = c.fetch("t", 0, 0, 80)            # numpy out
        assert np.array_equal(kn, k.numpy()) and np.array_equal(vn, v.numpy())
        ok = torch.zeros(D, 80, H).permute(1, 2, 0)
        ov = torch.zeros(80, H, 2 * D)[:, :, ::2]
        got = c.fetch("t", 0, 0, 80, out=(ok, ov))
        assert got[0] is ok and got[1] is ov
        assert torch.equal(ok, k) and torch.equal(ov, v)
        npk = np.zeros((80, H, 2 * D), np.float32)[:, :, 1::2]   # strided numpy out
        c.fetch("t", 0, 0, 80, out=(npk, np.empty((80, H, D), np.float32)))
        assert np.array_equal(npk, k.numpy())
        c.store("t", 1, 0, k.numpy(), np.asfortranarray(v.numpy()))   # strided numpy in
        assert np.array_equal(c.fetch("t", 1, 0, 80)[1], v.numpy())


@pytest.mark.daemon_flags("--quant", "none")
def test_strided_pieces_pipeline(daemon):
    """A strided batch bigger than the staging buffers: many pieces, piped."""
    big_h, big_d = 8, 128
    m = kvtier.Model("py-big", n_layers=2, n_kv_heads=big_h, head_dim=big_d, dtype="float16")
    with kvtier.connect(m, daemon.socket, shm_bytes=8 << 20) as c:
        n = 3000        # 6 MB of K per layer: staging of 8 MiB region cuts it up
        ks = [torch.randn(big_h, n, big_d).half().permute(1, 0, 2) for _ in range(2)]
        vs = [torch.randn(big_h, n, big_d).half().permute(1, 0, 2) for _ in range(2)]
        c.store_batch("p", [(i, 0, ks[i], vs[i]) for i in range(2)])
        outs = [(torch.empty(big_h, n, big_d, dtype=torch.half).permute(1, 0, 2),
                 torch.empty(big_h, n, big_d, dtype=torch.half).permute(1, 0, 2)) for _ in range(2)]
        c.fetch_batch("p", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        for i in range(2):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])
        # one span alone, bigger than one staging buffer the region can hold
        c.store("one", 1, 0, ks[1], vs[1])
        k1, v1 = outs[0][0].fill_(0), outs[0][1].fill_(0)
        assert c.fetch("one", 1, 0, n, out=(k1, v1)) == (k1, v1)
        assert torch.equal(k1, ks[1]) and torch.equal(v1, vs[1])


@pytest.mark.parametrize("lossless", [
    pytest.param(False, marks=pytest.mark.daemon_flags("--quant", "int8")),
    pytest.param(False, marks=pytest.mark.daemon_flags("--quant", "int8", "--outliers", "0")),
    pytest.param(True, marks=pytest.mark.daemon_flags("--quant", "none"))])
def test_large_fetch_equals_small_fetches(daemon, lossless):
    """Large lossless rows stream to the client past the caches, small ones
    are copied; int8 rows of every size are dequantized in place. A large
    fetch and many small ones give the same bits."""
    m = kvtier.Model("py-stream", n_layers=1, n_kv_heads=8, head_dim=128, dtype="float32",
                     chunk_tokens=256)
    with kvtier.connect(m, daemon.socket, shm_bytes=64 << 20) as c:
        rng = np.random.default_rng(9)
        k = rng.standard_normal((512, 8, 128)).astype(np.float32)
        v = rng.standard_normal((512, 8, 128)).astype(np.float32)
        k[:, :, 5] *= 40                                # outlier channels
        c.store("s", 0, 0, k, v)
        big_k, big_v = c.alloc((512, 8, 128)), c.alloc((512, 8, 128))
        c.fetch("s", 0, 0, 512, out=(big_k, big_v))    # 1 MiB of K per chunk
        small_k, small_v = c.alloc((16, 8, 128)), c.alloc((16, 8, 128))
        for t in range(0, 512, 16):                     # 64 KiB: direct
            c.fetch("s", 0, t, 16, out=(small_k, small_v))
            assert np.array_equal(small_k, big_k[t:t + 16]), t
            assert np.array_equal(small_v, big_v[t:t + 16]), t
        if lossless:
            assert np.array_equal(big_k, k) and np.array_equal(big_v, v)
        else:
            assert int8_ok(big_k, k) and int8_ok(big_v, v)


def test_pieces_cover_every_token_once():
    """The staging plan: pieces of several layers, at most cap tokens each,
    smaller first and last, covering each layer's tokens once, in order."""
    from kvtier import _staged
    for n_layers, n, cap in ((32, 8192, 16384), (3, 100, 64), (5, 1, 8), (2, 3000, 1000),
                             (4, 7, 1), (1, 5, 1000), (2, 1000, 64)):
        spans = [(layer, 10 * layer, np.zeros((n, 1, 1)), np.zeros((n, 1, 1))) for layer in range(n_layers)]
        pieces = _staged._pieces(spans, cap)
        sizes = [sum(c.n for c in p) for p in pieces]
        assert max(sizes) <= cap and sizes[0] <= max(1, cap // 8)
        assert sum(sizes) == n_layers * n
        if len(sizes) > 6:                              # ramps up and down
            assert sizes[:3] == sorted(sizes[:3]) and sizes[-3:] == sorted(sizes[-3:])[::-1]
            assert sizes[-1] <= max(1, cap // 8)
        got = {}
        for p in pieces:
            at = 0
            for c in p:
                assert c.at == at and c.k.shape[0] == c.n == c.v.shape[0]
                at += c.n
                got.setdefault(c.layer, []).append((c.start, c.n))
        for layer in range(n_layers):
            runs, pos = got[layer], 10 * layer
            for start, k in runs:
                assert start == pos
                pos += k
            assert pos == 10 * layer + n
    assert len(_staged._pieces([(0, 0, np.zeros((8192, 1, 1)), np.zeros((8192, 1, 1)))] * 32, 16384)) < 32


@pytest.mark.daemon_flags("--quant", "none")
def test_strided_many_layers_three_buffers(daemon):
    """Many short layers: pieces of several layers each, through three
    staging buffers, every value back in place."""
    m = kvtier.Model("py-many", n_layers=12, n_kv_heads=H, head_dim=D, dtype="float32")
    with kvtier.connect(m, daemon.socket, shm_bytes=4 << 20) as c:
        n = 700
        toks = np.arange(n, dtype=np.int32)
        ks = [torch.randn(H, n, D).permute(1, 0, 2) for _ in range(12)]
        vs = [torch.randn(H, n, D).permute(1, 0, 2) for _ in range(12)]
        c.store_tokens(toks, list(zip(ks, vs)))
        outs = [(torch.empty(H, n, D).permute(1, 0, 2), torch.empty(H, n, D).permute(1, 0, 2))
                for _ in range(12)]
        c.fetch_tokens(toks, out=outs)
        for i in range(12):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])


@pytest.mark.daemon_flags("--quant", "none")
def test_dtypes_share_namespace_and_bfloat16(daemon):
    k = rand(40, 5)
    with kvtier.connect(model("float32"), daemon.socket) as c32:
        c32.store("d", 0, 0, k, k)
    with kvtier.connect(model("float16"), daemon.socket) as c16:
        k16, _ = c16.fetch("d", 0, 0, 40)
        assert k16.dtype == np.float16
        assert np.array_equal(k16, k.astype(np.float16))
    with kvtier.connect(model("bfloat16"), daemon.socket) as cb:
        kb, vb = cb.fetch("d", 0, 0, 40)
        assert isinstance(kb, torch.Tensor) and kb.dtype == torch.bfloat16
        assert torch.equal(kb, torch.from_numpy(k).bfloat16())
        t = torch.randn(40, H, D).bfloat16()
        cb.store("bf", 0, 0, t, t)
        assert torch.equal(cb.fetch("bf", 0, 0, 40)[0], t)
        with pytest.raises(kvtier.Error) as e:
            cb.store("bf", 0, 0, k, k)             # numpy float32 for a bfloat16 model
        assert e.value.errno == errno.EINVAL and "bfloat16" in str(e.value)


# ---- zero copy ------------------------------------------------------------

@pytest.mark.daemon_flags("--quant", "none")
def test_alloc_zero_copy(daemon):
    shm = 4 << 20
    with kvtier.connect(model(), daemon.socket, shm_bytes=shm) as c:
        base, size = c.region
        assert size == shm
        n = 1000                                   # 2 x 512 KB
        k, v = c.alloc((n, H, D)), c.alloc((n, H, D), "float32")
        assert isinstance(k, np.ndarray) and k.shape == (n, H, D) and k.dtype == np.float32
        for a in (k, v):
            assert base <= a.ctypes.data and a.ctypes.data + a.nbytes <= base + size
        tk = torch.from_numpy(k)                   # a tensor over the same memory
        assert tk.data_ptr() == k.ctypes.data
        # Fill the rest of the region: only in-place (zero-copy) spans can work.
        rest, size = [], 64 << 10
        while size >= 64:
            try:
                rest.append(c.alloc(size, "float16"))
            except kvtier.Error as e:
                assert e.errno == errno.ENOMEM and "shm_bytes" in str(e)
                size //= 2
        k[:] = rand(n, 6)
        v[:] = rand(n, 7)
        c.store("z", 0, 0, tk, v)                  # torch view of region memory: in place
        with pytest.raises(kvtier.Error) as e:
            c.store("z", 1, 0, rand(n, 8), rand(n, 9))   # would need staging room
        assert e.value.errno == errno.ENOMEM
        want = k.copy()
        k[:] = 0
        c.fetch("z", 0, 0, n, out=(k, v))
        assert np.array_equal(k, want)
        assert rest


def test_alloc_bfloat16_and_views(daemon):
    with kvtier.connect(model("bfloat16"), daemon.socket) as c:
        kb = c.alloc((8, H, D))
        assert isinstance(kb, torch.Tensor) and kb.dtype == torch.bfloat16 and kb.shape == (8, H, D)
        kb.copy_(torch.randn(8, H, D))
        c.store("ab", 0, 0, kb, kb)
        assert torch.allclose(c.fetch("ab", 0, 0, 8)[0].float(), kb.float(), atol=0.05)
        f = c.alloc(100, "float16")
        assert f.shape == (100,) and f.dtype == np.float16
        if not torch.cuda.is_available():
            assert c.pin_cuda() is False and "no CUDA" in c.pin_error


# ---- token prefixes ---------------------------------------------------------

@pytest.mark.daemon_flags("--quant", "none")
def test_prefixes(daemon):
    m = model(chunk=64)
    toks = list(range(1000, 1200))                 # 200 tokens: 3 chunks + 8
    kv = [(rand(200, 20 + i), rand(200, 40 + i)) for i in range(m.n_layers)]
    with kvtier.connect(m, daemon.socket) as c:
        assert c.chunk_tokens == 64
        assert c.match_tokens(toks) == 0
        with pytest.raises(kvtier.NotFound):
            c.fetch_tokens(toks)
        c.store_tokens(toks, kv)
        assert c.match_tokens(toks) == 200
        assert c.match_tokens(np.array(toks[:150])) == 128       # chunk boundary
        assert c.match_tokens(torch.tensor(toks[:64])) == 64
        assert c.match_tokens(toks[:100] + [7] * 100) == 64      # diverges in chunk 2
        assert c.match_tokens([7] + toks[1:]) == 0
        got = c.fetch_tokens(toks[:128])
        assert len(got) == m.n_layers
        for i in range(m.n_layers):
            assert np.array_equal(got[i][0], kv[i][0][:128]) and np.array_equal(got[i][1], kv[i][1][:128])
        whole = c.fetch_tokens(torch.tensor([toks]))             # [1, seq] as input_ids
        assert np.array_equal(whole[2][1], kv[2][1])
        sub = c.fetch_tokens(toks, layers=[1])
        assert len(sub) == 1 and np.array_equal(sub[0][0], kv[1][0])
        out = {0: (torch.empty(H, 200, D).permute(1, 0, 2), torch.empty(200, H, D))}
        assert c.fetch_tokens(toks, out=out) is out
        assert torch.equal(out[0][0], torch.from_numpy(kv[0][0]))
        # Named contexts and token prefixes do not collide.
        with pytest.raises(kvtier.NotFound):
            c.fetch("1000", 0, 0, 1)


# ---- across processes -------------------------------------------------------

STORE_CHILD = """
import json, numpy as np, kvtier
m = kvtier.Model("py-test", n_layers=3, n_kv_heads=4, head_dim=32, dtype="float32", chunk_tokens=64)
rng = np.random.default_rng(123)
kv = [(rng.standard_normal((130, 4, 32)).astype(np.float32),
       rng.standard_normal((130, 4, 32)).astype(np.float32)) for _ in range(3)]
with kvtier.connect(m) as c:
    c.store_tokens(list(range(5, 135)), kv)
    c.store("shared", 2, 0, kv[2][0], kv[2][1])
print(json.dumps([float(kv[i][j].sum()) for i in range(3) for j in range(2)]))
"""


@pytest.mark.daemon_flags("--quant", "none")
def test_across_processes(daemon):
    sums = json.loads(run_python(daemon, STORE_CHILD))
    rng = np.random.default_rng(123)
    want = [(rng.standard_normal((130, H, D)).astype(np.float32),
             rng.standard_normal((130, H, D)).astype(np.float32)) for _ in range(3)]
    assert sums == [float(want[i][j].sum()) for i in range(3) for j in range(2)]
    toks = list(range(5, 135))
    with kvtier.connect(model(), daemon.socket) as c:
        assert c.match_tokens(toks) == 130
        got = c.fetch_tokens(toks)
        for i in range(3):
            assert np.array_equal(got[i][0], want[i][0]) and np.array_equal(got[i][1], want[i][1])
        k, v = c.fetch("shared", 2, 0, 130)
        assert np.array_equal(k, want[2][0])
        c.store("back", 0, 0, want[0][1], want[0][0])
    # and the other way: this process stored, a new one fetches
    out = run_python(daemon, """
import numpy as np, kvtier
m = kvtier.Model("py-test", n_layers=3, n_kv_heads=4, head_dim=32, dtype="float32", chunk_tokens=64)
with kvtier.connect(m) as c:
    k, v = c.fetch("back", 0, 0, 130)
    print(float(k.sum()), float(v.sum()))
""")
    assert [float(x) for x in out.split()] == [float(want[0][1].sum()), float(want[0][0].sum())]


# ---- errors -------------------------------------------------------------------

def test_connect_errors(daemon, monkeypatch):
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(model(), daemon.dir + "/absent.sock")
    assert e.value.errno == errno.ENOENT and not isinstance(e.value, kvtier.NotFound)
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(kvtier.Model("x", 0, H, D), daemon.socket)
    assert e.value.errno == errno.EINVAL and "bad model" in str(e.value)
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(model(), daemon.socket, shm_bytes=3 << 30)
    assert e.value.errno == errno.EINVAL
    assert "max-client-shm (1024M)" in str(e.value) and "3072M" in str(e.value)
    monkeypatch.setenv("KVTIER_SHM_BYTES", "12 parsecs")
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(model(), daemon.socket)
    assert e.value.errno == errno.EINVAL and "KVTIER_SHM_BYTES" in str(e.value)
    monkeypatch.setenv("KVTIER_SHM_BYTES", "2M")
    with kvtier.connect(model(), daemon.socket) as c:
        assert c.region[1] == 2 << 20
    monkeypatch.setenv("KVTIER_SOCKET", daemon.socket)
    with kvtier.connect(model()) as c:             # socket None: $KVTIER_SOCKET
        assert c.length("nothing") == 0
    with pytest.raises(kvtier.Error) as e:
        kvtier.Model("x", 1, 1, 1, dtype="int4")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(kvtier.Error):
        kvtier.Client("not a model")
    daemon.stop()
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(model(), daemon.socket)     # socket file left, nobody listening
    assert e.value.errno in (errno.ECONNREFUSED, errno.ENOENT)


@pytest.mark.daemon_flags("--max-client-shm", "8M")
def test_max_client_shm_named(daemon):
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(model(), daemon.socket)     # default region 256M
    assert "256M" in str(e.value) and "max-client-shm (8M)" in str(e.value)
    with kvtier.connect(model(), daemon.socket, shm_bytes=8 << 20):
        pass


def test_call_errors(daemon):
    m = model()
    c = kvtier.connect(m, daemon.socket)
    k = rand(10, 1)
    c.store("x", 0, 0, k, k)
    cases = [
        (lambda: c.store("x", 3, 0, k, k), errno.EINVAL, "layer"),
        (lambda: c.store("x", -1, 0, k, k), errno.EINVAL, "layer"),
        (lambda: c.store("", 0, 0, k, k), errno.EINVAL, "context name"),
        (lambda: c.store("x" * 256, 0, 0, k, k), errno.EINVAL, "context name"),
        (lambda: c.store("a\0b", 0, 0, k, k), errno.EINVAL, "NUL"),
        (lambda: c.store("x", 0, 0, rand(10, 1)[:, :2], k), errno.EINVAL, "shape"),
        (lambda: c.store("x", 0, 0, k, rand(9, 1)), errno.EINVAL, "shape"),
        (lambda: c.store("x", 0, 0, k.astype(np.float16), k), errno.EINVAL, "dtype"),
        (lambda: c.store("x", 0, 0, k.tolist(), k), errno.EINVAL, "numpy array or torch"),
        (lambda: c.store("x", 0, 0, rand(0, 1), rand(0, 1)), errno.EINVAL, "zero tokens"),
        (lambda: c.store("x", 0, 2**32 - 5, k, k), errno.EOVERFLOW, "overflow"),
        (lambda: c.store_batch("x", []), errno.EINVAL, "no spans"),
        (lambda: c.store_batch("x", [(0, 0, k)]), errno.EINVAL, "(layer, token_start, k, v)"),
        (lambda: c.fetch("x", 0, 0, 10, out=(k,)), errno.EINVAL, "out must be"),
        (lambda: c.fetch("x", 0, 0, 10, out=(_ro(k), k.copy())), errno.EINVAL, "read-only"),
        (lambda: c.fetch("absent", 0, 0, 10), errno.ENOENT, "not cached"),
        (lambda: c.fetch("x", 0, 5, 10), errno.ENOENT, "not cached"),     # runs past the stored
        (lambda: c.sync(), errno.EOPNOTSUPP, "sync"),
        (lambda: c.store_tokens([], [(k, k)]), errno.EINVAL, "no tokens"),
        (lambda: c.match_tokens([]), errno.EINVAL, "no tokens"),
        (lambda: c.match_tokens([1.5, 2.5]), errno.EINVAL, "ints"),
        (lambda: c.match_tokens([2**31]), errno.EINVAL, "int32"),
        (lambda: c.match_tokens([[1, 2], [3, 4]]), errno.EINVAL, "one sequence"),
        (lambda: c.store_tokens(list(range(10)), [(k[:5], k[:5])]), errno.EINVAL, "holds 5 tokens"),
        (lambda: c.store_tokens(list(range(10)), [k]), errno.EINVAL, "(k, v) pair"),
        (lambda: c.store_tokens(list(range(10)), {7: (k, k)}), errno.EINVAL, "layer"),
        (lambda: c.fetch_tokens(list(range(10))), errno.ENOENT, "not cached"),
        (lambda: c.alloc((1 << 40,)), errno.ENOMEM, "KVTIER_SHM_BYTES"),
        (lambda: c.alloc((-1, 2)), errno.EINVAL, "negative"),
        (lambda: c.store("x", 0, 0, np.full((10, H, D), np.nan, np.float32), k), errno.EINVAL,
         "finite in int8 mode"),
    ]
    for i, (call, err, text) in enumerate(cases):
        with pytest.raises(kvtier.Error) as e:
            call()
        assert e.value.errno == err, (i, e.value)
        assert text in str(e.value), (i, str(e.value))
        assert isinstance(e.value, OSError)
        assert isinstance(e.value, kvtier.NotFound) == (err == errno.ENOENT), i
    # the refused int8 store of NaN changed nothing: "x" holds k
    assert int8_ok(c.fetch("x", 0, 0, 10)[0], k)
    c.close()
    assert c.closed
    with pytest.raises(kvtier.Error) as e:
        c.length("x")
    assert e.value.errno == errno.EBADF
    c.close()                                      # twice is fine


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.daemon_flags("--cold-path", "{dir}/cold.kvt", "--cold-bytes", "64M",
                         "--cold-region-bytes", "4M", "--quant", "none")
def test_sync_with_cold_tier(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        k = rand(64, 3)
        c.store("durable", 0, 0, k, k)
        c.sync()
    daemon.stop(9)                                 # kill -9: only the cold tier survives
    daemon.start()
    with kvtier.connect(model(), daemon.socket) as c:
        assert np.array_equal(c.fetch("durable", 0, 0, 64)[0], k)


@pytest.mark.daemon_flags("--quant", "none")
def test_reconnect_after_restart(daemon):
    with kvtier.connect(model(), daemon.socket) as c:
        k = rand(8, 1)
        c.store("r", 0, 0, k, k)
        daemon.stop()
        with pytest.raises(kvtier.Error) as e:
            c.length("r")
        assert e.value.errno in (errno.ECONNREFUSED, errno.ENOENT)
        daemon.start()
        c.store("r", 0, 0, k, k)                   # the handle re-attaches itself
        assert np.array_equal(c.fetch("r", 0, 0, 8)[0], k)


# ---- CUDA (skipped without a GPU) ---------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.daemon_flags("--quant", "none")
def test_cuda_round_trip(daemon):
    m = kvtier.Model("py-cuda", n_layers=4, n_kv_heads=8, head_dim=128, dtype="bfloat16")
    with kvtier.connect(m, daemon.socket) as c:
        n = 1000
        kv = [(torch.randn(1, 8, n, 128, device="cuda").bfloat16()[0].permute(1, 0, 2),
               torch.randn(n, 8, 128, device="cuda").bfloat16()) for _ in range(4)]
        c.store_tokens(list(range(n)), kv)
        assert c.pin_cuda()
        out = [(torch.empty(8, n, 128, device="cuda", dtype=torch.bfloat16).permute(1, 0, 2),
                torch.empty(n, 8, 128, device="cuda", dtype=torch.bfloat16)) for _ in range(4)]
        c.fetch_tokens(list(range(n)), out=out)
        torch.cuda.synchronize()
        for i in range(4):
            assert torch.equal(out[i][0], kv[i][0]) and torch.equal(out[i][1], kv[i][1])
        staged = c.alloc((n, 8, 128), "bfloat16")
        assert staged.is_pinned()                  # the region is page-locked for CUDA
