"""Large staged fetches in two lanes (kvtier._staged): the client's own
connection and a second one it opens, asking for alternate pieces, so the
daemon holds the next request while it serves the current one."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

import kvtier
import kvtier._staged as staged
from conftest import BUILD, run_python

H, D, LAYERS, N = 4, 32, 12, 700


def admin(daemon, *cmd):
    out = subprocess.run([os.path.join(BUILD, "kvtierctl"), "--socket", daemon.admin, "--json"]
                         + list(cmd), check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def strided(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(H, n, D, generator=g).permute(1, 0, 2)     # [n, H, D], not dense


def stored(c, name="ctx"):
    ks = [strided(N, 2 * i) for i in range(LAYERS)]
    vs = [strided(N, 2 * i + 1) for i in range(LAYERS)]
    c.store_batch(name, [(i, 0, ks[i], vs[i]) for i in range(LAYERS)])
    return ks, vs


def empty_out():
    return [(torch.empty(H, N, D).permute(1, 0, 2), torch.empty(H, N, D).permute(1, 0, 2))
            for _ in range(LAYERS)]


def model():
    return kvtier.Model("py-lanes", n_layers=LAYERS, n_kv_heads=H, head_dim=D, dtype="float32",
                        chunk_tokens=64)


@pytest.fixture
def small_stage(monkeypatch):
    """Pieces of 20 tokens (10 KiB of K each), so one fetch makes hundreds."""
    monkeypatch.setattr(staged, "STAGE_MAX", 20 * H * D * 4)


@pytest.mark.daemon_flags("--quant", "none")
def test_two_lanes_fetch_every_value(daemon, small_stage):
    with kvtier.connect(model(), daemon.socket, shm_bytes=4 << 20) as c:
        ks, vs = stored(c)
        fetches = admin(daemon, "stats")["fetches"]
        assert c._lane_client is None
        outs = empty_out()
        c.fetch_batch("ctx", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        for i in range(LAYERS):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])
        # The second connection is open, and asked for about half the pieces.
        lane = c._lane_client
        assert lane is not None and c.lane_error is None
        assert admin(daemon, "stats")["clients"] == 2
        pieces = admin(daemon, "stats")["fetches"] - fetches
        assert pieces >= 4 * staged.LANE_MIN_PIECES
        # Again, by tokens and into other tensors: the same lane is reused.
        toks = np.arange(N, dtype=np.int32)
        c.store_tokens(toks, list(zip(ks, vs)))
        outs = empty_out()
        c.fetch_tokens(toks, out=outs)
        assert c._lane_client is lane
        for i in range(LAYERS):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])
        assert admin(daemon, "stats")["clients"] == 2
    assert admin(daemon, "stats")["clients"] == 0      # close() closed both


@pytest.mark.daemon_flags("--quant", "none")
def test_one_lane_when_asked(daemon, small_stage, monkeypatch):
    monkeypatch.setattr(staged, "STAGE_LANES", 1)
    with kvtier.connect(model(), daemon.socket, shm_bytes=4 << 20) as c:
        ks, vs = stored(c)
        outs = empty_out()
        c.fetch_batch("ctx", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        assert c._lane_client is None and admin(daemon, "stats")["clients"] == 1
        for i in range(LAYERS):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])


@pytest.mark.daemon_flags("--quant", "none", "--max-clients-per-uid", "1")
def test_lane_refused_keeps_one_lane(daemon, small_stage):
    """The daemon refuses a second connection: the fetch still completes,
    on one lane, and says why; a second fetch does not ask again."""
    with kvtier.connect(model(), daemon.socket, shm_bytes=4 << 20) as c:
        ks, vs = stored(c)
        for _ in range(2):
            outs = empty_out()
            c.fetch_batch("ctx", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
            for i in range(LAYERS):
                assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])
            assert c._lane_client is None
            assert "max-clients-per-uid" in c.lane_error
        assert admin(daemon, "stats")["connections"]["refused_per_uid"] == 1


@pytest.mark.daemon_flags("--quant", "none")
@pytest.mark.parametrize("missing", [LAYERS - 1, LAYERS - 2])
def test_error_on_either_lane(daemon, small_stage, missing):
    """A layer absent near the end fails a late piece, on one lane or the
    other: the fetch raises NotFound (no hang), every staging buffer is
    given back, and the next fetch works."""
    with kvtier.connect(model(), daemon.socket, shm_bytes=4 << 20) as c:
        ks, vs = stored(c)
        c.store_batch("gap", [(i, 0, ks[i], vs[i]) for i in range(LAYERS) if i != missing])
        outs = empty_out()
        with pytest.raises(kvtier.NotFound):
            c.fetch_batch("gap", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        assert c._lane_client is not None
        for client in (c, c._lane_client):
            whole = client.region[1]
            buf = client.alloc(whole // 4 * 3 // 4, dtype="float32")   # 3/4 of the region
            del buf
        c.fetch_batch("ctx", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
        for i in range(LAYERS):
            assert torch.equal(outs[i][0], ks[i]) and torch.equal(outs[i][1], vs[i])


@pytest.mark.daemon_flags("--quant", "none")
def test_lanes_from_two_processes(daemon, small_stage):
    """Stored by this process, fetched by another through two lanes."""
    with kvtier.connect(model(), daemon.socket, shm_bytes=4 << 20) as c:
        ks, vs = stored(c)
        want = float(sum(k.sum() + v.sum() for k, v in zip(ks, vs)))
    out = run_python(daemon, """
import kvtier, kvtier._staged as staged, torch
staged.STAGE_MAX = 20 * %d * %d * 4
m = kvtier.Model("py-lanes", n_layers=%d, n_kv_heads=%d, head_dim=%d, dtype="float32",
                 chunk_tokens=64)
with kvtier.connect(m, shm_bytes=4 << 20) as c:
    outs = [(torch.empty(%d, %d, %d).permute(1, 0, 2), torch.empty(%d, %d, %d).permute(1, 0, 2))
            for _ in range(%d)]
    c.fetch_batch("ctx", [(i, 0, k, v) for i, (k, v) in enumerate(outs)])
    assert c._lane_client is not None
    print(repr(float(sum(k.sum() + v.sum() for k, v in outs))))
""" % (H, D, LAYERS, H, D, H, N, D, H, N, D, LAYERS))
    assert float(out.strip().splitlines()[-1]) == want
