"""Fetches that copy rows straight out of the daemon's shared hot blocks
(kvtierd --share-hot 1, client/python/kvtier/_shared.py), against a real
daemon. CUDA's path is taken here on CPU tensors (KVTIER_SHARED=all): the
same locate, block runs, staging layout and gen checks, with synchronous
copies."""
import os
import subprocess

import pytest
import torch

import kvtier
import kvtier._shared
import kvtier.hf
from conftest import BUILD, run_python

L, H, D, C = 3, 2, 64, 256       # 128 KiB blocks: the smallest that are shared
SHARE = ("--quant", "none", "--share-hot", "1", "--cold-path", "{dir}/cold.kvt",
         "--cold-bytes", "256M")


def model():
    return kvtier.Model("shared", L, H, D, "bfloat16", chunk_tokens=C)


def values(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, H, D, generator=g).to(torch.bfloat16),
             torch.randn(n, H, D, generator=g).to(torch.bfloat16)) for _ in range(L)]


def hf_views(n):
    """Per-layer [n, H, D] views of [L, 1, H, n, D] tensors, as kvtier.hf.load
    hands fetch_tokens."""
    k = torch.full((L, 1, H, n, D), float("nan"), dtype=torch.bfloat16)
    v = torch.full((L, 1, H, n, D), float("nan"), dtype=torch.bfloat16)
    return [(k[i, 0].permute(1, 0, 2), v[i, 0].permute(1, 0, 2)) for i in range(L)]


def same(a, b):
    return all(torch.equal(x.view(torch.int16), y.view(torch.int16))
               for (x, xv), (y, yv) in zip(a, b) for x, y in ((x, y), (xv, yv)))


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setenv("KVTIER_SHARED", "all")


def apart(n):
    """Per-layer tensors of their own: no copy moves more than one layer."""
    return [(torch.full((n, H, D), float("nan"), dtype=torch.bfloat16),
             torch.full((n, H, D), float("nan"), dtype=torch.bfloat16)) for _ in range(L)]


@pytest.mark.parametrize("layout", [hf_views, apart])
@pytest.mark.parametrize("n", [3 * C, 700, 40])
@pytest.mark.daemon_flags(*SHARE)
def test_fetch_copies_out_of_the_blocks(daemon, shared, monkeypatch, n, layout):
    """Whole chunks, a partial last chunk, a prefix inside one chunk: the
    tensors get the stored bits, every chunk from a shared block. Layers
    evenly spaced in one tensor (hf.load's) are filled a group at a time,
    others a layer at a time."""
    tokens = list(range(100, 100 + n))
    kv = values(n, 1)
    by_layer = []
    copy_spans = kvtier._shared._copy_spans
    monkeypatch.setattr(kvtier._shared, "_copy_spans",
                        lambda *a: by_layer.append(1) or copy_spans(*a))
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        out = layout(n)
        c.fetch_tokens(tokens, out=out)
        assert (c.shared_fetches, c.shared_refetched) == (1, 0)
        assert same(out, kv)
        assert len(by_layer) == (0 if layout is hf_views else 1)
        runs = dict(c._runs.runs)         # one run of blocks per group of layers
        assert len(runs) == 1 and sum(len(r.ids) for r in runs.values()) == L * ((n + C - 1) // C)
        out = layout(n)                   # again: the run is kept, not mapped again
        c.fetch_tokens(tokens, out=out)
        assert same(out, kv) and c.shared_fetches == 2
        assert dict(c._runs.runs) == runs


@pytest.mark.daemon_flags(*SHARE)
def test_fetch_a_layer_per_locate(daemon, shared, monkeypatch):
    """Layers located and copied a group at a time, here one layer per
    group: each group its own run of blocks, the same bits."""
    monkeypatch.setattr(kvtier._shared, "LOCATE_GROUP", 1)
    monkeypatch.setattr(kvtier._shared, "LOCATE_BYTES", 0)
    n = 700
    tokens = list(range(n))
    kv = values(n, 4)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert (c.shared_fetches, c.shared_refetched) == (1, 0)
        assert same(out, kv)
        assert sorted(len(r.ids) for r in c._runs.runs.values()) == [3] * L


@pytest.mark.daemon_flags(*SHARE)
def test_stored_by_one_process_fetched_by_another(daemon, shared):
    n = 2 * C + 17
    tokens = list(range(7, 7 + n))
    code = ("import torch, kvtier\n"
            "L, H, D, C = %d, %d, %d, %d\n"
            "g = torch.Generator().manual_seed(5)\n"
            "kv = [(torch.randn(%d, H, D, generator=g).to(torch.bfloat16),"
            " torch.randn(%d, H, D, generator=g).to(torch.bfloat16)) for _ in range(L)]\n"
            "c = kvtier.connect(kvtier.Model('shared', L, H, D, 'bfloat16', chunk_tokens=C))\n"
            "c.store_tokens(list(range(7, 7 + %d)), kv)\n" % (L, H, D, C, n, n, n))
    run_python(daemon, code)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert (c.shared_fetches, c.shared_refetched) == (1, 0)
        assert same(out, values(n, 5))


class _OverwriteWhenIssued(list):
    """_shared.marks that stores new values from another client once the
    copies are issued, before their gens are checked."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def append(self, mark):
        super().append(mark)
        if mark[0] == "issued":
            self.action()


@pytest.mark.daemon_flags(*SHARE)
def test_overwrite_during_the_copy_is_fetched_again(daemon, shared, monkeypatch):
    """Blocks that change between locate and the gen check (another client
    overwrites the tokens) are fetched again the ordinary way: the tensors
    hold the new values, none of the old."""
    n = 2 * C
    tokens = list(range(n))
    old, new = values(n, 1), values(n, 2)
    with kvtier.connect(model(), socket=daemon.socket) as c, \
            kvtier.connect(model(), socket=daemon.socket) as other:
        c.store_tokens(tokens, old)
        monkeypatch.setattr(kvtier._shared, "marks",
                            _OverwriteWhenIssued(lambda: other.store_tokens(tokens, new)))
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        monkeypatch.setattr(kvtier._shared, "marks", None)
        assert c.shared_fetches == 1
        assert c.shared_refetched == L * 2        # every chunk of every layer
        assert same(out, new)


@pytest.mark.daemon_flags(*SHARE)
def test_chunks_not_in_ram_come_the_ordinary_way(daemon, shared):
    """After the hot tier is evicted, locate finds nothing in RAM: the
    whole fetch comes from SSD (promoted); the blocks the client mapped
    before changed gen (pooled for the domain's next chunks), and the
    promoted chunks are in shared blocks again."""
    n = 3 * C
    tokens = list(range(n))
    kv = values(n, 3)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        c.fetch_tokens(tokens, out=hf_views(n))
        runs = list(c._runs.runs.values())
        gens = [run.tail_field(kvtier._shared._GEN_AT).copy() for run in runs]
        c.sync()
        r = subprocess.run([os.path.join(BUILD, "kvtierctl"), "--socket", daemon.admin,
                            "evict", "--tier", "hot"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert all((run.tail_field(kvtier._shared._GEN_AT) != g).all()
                   for run, g in zip(runs, gens))
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert same(out, kv)
        assert c.shared_refetched == L * 3        # every chunk, from SSD
        out = hf_views(n)                         # promoted: shared again
        c.fetch_tokens(tokens, out=out)
        assert same(out, kv) and c.shared_refetched == L * 3


@pytest.mark.daemon_flags("--quant", "none")
def test_daemon_without_share_hot_serves_the_ordinary_fetch(daemon, shared):
    n = C + 5
    tokens = list(range(n))
    kv = values(n, 4)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert same(out, kv)
        assert c.shared_fetches == 0 and c._shared_off      # asked once, then not
        c.fetch_tokens(tokens, out=hf_views(n))


@pytest.mark.daemon_flags("--quant", "int8", "--share-hot", "1")
def test_int8_daemon_serves_the_ordinary_fetch(daemon, shared, monkeypatch):
    monkeypatch.setenv("KVTIER_RAW_CUDA", "0")
    n = C
    tokens = list(range(n))
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, values(n, 6))
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert c.shared_fetches == 0 and c._shared_off
        assert not torch.isnan(out[0][0].float()).any()


@pytest.mark.daemon_flags(*SHARE)
def test_shared_off_in_the_environment(daemon, monkeypatch):
    monkeypatch.setenv("KVTIER_SHARED", "0")
    n = C
    tokens = list(range(n))
    kv = values(n, 8)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        out = hf_views(n)
        c.fetch_tokens(tokens, out=out)
        assert same(out, kv) and c.shared_fetches == 0


@pytest.mark.daemon_flags(*SHARE)
def test_hf_load_builds_its_cache_while_the_rows_cross(daemon, shared, monkeypatch):
    """kvtier.hf.load out of shared blocks: the cache (a DynamicCache where
    transformers imports, else the tuple) is made after the copies are
    issued and before they are waited for, and holds the stored bits; with
    another dtype, after the fetch, converted."""
    n = 2 * C + 3
    tokens = list(range(40, 40 + n))
    kv = values(n, 9)
    with kvtier.connect(model(), socket=daemon.socket) as c:
        c.store_tokens(tokens, kv)
        marks = []
        monkeypatch.setattr(kvtier._shared, "marks", marks)
        made = kvtier.hf._dynamic_cache
        monkeypatch.setattr(kvtier.hf, "_dynamic_cache",
                            lambda layers: marks.append(("cache", 0)) or made(layers))
        cache, got = kvtier.hf.load(c, tokens)
        monkeypatch.setattr(kvtier._shared, "marks", None)
        names = [what for what, _ in marks]
        assert got == n and c.shared_fetches == 1
        assert names.index("issued") < names.index("cache") < names.index("copied")
        if not isinstance(cache, tuple):
            cache = tuple((x.keys, x.values) for x in cache.layers) \
                if hasattr(cache, "layers") else tuple(zip(cache.key_cache, cache.value_cache))
        assert len(cache) == L
        assert same([(k[0].permute(1, 0, 2), v[0].permute(1, 0, 2)) for k, v in cache], kv)
        cache, got = kvtier.hf.load(c, tokens, dtype=torch.float32, legacy=True)
        assert got == n and c.shared_fetches == 2 and cache[0][0].dtype == torch.float32
        for (k, v), (wk, wv) in zip(cache, kv):
            assert torch.equal(k[0].permute(1, 0, 2), wk.float())
            assert torch.equal(v[0].permute(1, 0, 2), wv.float())
