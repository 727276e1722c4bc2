#!/usr/bin/env python3
"""fetch_profile.py - where a GPU restore's time goes (docs/performance.md).

    LD_LIBRARY_PATH=DIR python3 tests/gpu/fetch_profile.py --build DIR

For each daemon mode (--quant none, int8) it stores 8192 tokens of 32
layers of the Llama-3-8B KV geometry (8 kv heads x 128, bfloat16: 1 GiB)
from CUDA tensors, then measures, in one process:
  zc_*       the daemon's zero-copy fetch into region buffers (alloc),
             one layer a call and all 32 in one call;
  h2d        pinned host-to-GPU copies out of the region;
  both_*     the two at once, on separate buffers (they share the host's
             memory bandwidth);
  staged_*   fetch_tokens into CUDA tensors through the staging pipeline,
             with the time spent inside the daemon's calls (int8: raw
             rows dequantized on the GPU; staged_values_*: int8 values);
  tl_*       one such fetch call by call: the gap between a reply and the
             next request, the daemon's rate in full-size calls, and (for
             lossless) the GPU's rate between full-size pieces' copies;
  raw_zc     int8: the daemon's raw-row fetch into region buffers, one
             call of 32 layers, in client bytes per second;
  dequant    int8: kvtier.raw.dequantize of one layer's K on the GPU, and
             of a whole staged piece (K and V), beside that piece's
             pinned host-to-GPU copy (h2d_ms_piece);
  hf_*       kvtier.hf.load's steps: match, GPU allocation, fetch, cache.
Each figure is the best (or median, *_med) of 5. Needs CUDA; exits 0
without it.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))

L, N, H, D = 32, 8192, 8, 128
NB = N * H * D * 2 * 2        # one layer's K and V bytes in bfloat16


def start_daemon(build, tmp, mode):
    sock, admin = os.path.join(tmp, mode + ".sock"), os.path.join(tmp, mode + "-admin.sock")
    d = subprocess.Popen([os.path.join(build, "kvtierd"), "--socket", sock, "--admin-socket", admin,
                          "--hot-bytes", "8G", "--cold-bytes", "0", "--quant", mode,
                          "--max-client-shm", "4G", "--log-level", "warning"])
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.01)
    time.sleep(0.2)
    return d, sock


def timed(torch, f, reps=5):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def gbps(nbytes, s):
    return round(nbytes / s / 1e9, 1)


def timeline(torch, st, c, toks, views, calls, res):
    """One staged fetch, call by call (int8: of raw rows; rates in client
    bytes): the gap between one call's reply and the next call (the daemon
    idle for this client), the daemon's rate in the full-size calls, and
    the GPU's rate between the ends of successive full-size pieces' copies
    (lossless only: raw pieces end on their own stream)."""
    done, cuda_event = [], st._cuda_event
    def timed_event(piece):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream())
        done.append(ev)
        return ev
    st._cuda_event = timed_event
    try:
        c.fetch_tokens(toks, out=views)          # warm
        torch.cuda.synchronize()
        calls.clear()
        done.clear()
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        c.fetch_tokens(toks, out=views)
        torch.cuda.synchronize()
    finally:
        st._cuda_event = cuda_event
    row = c._row                                 # rates in client bytes
    full = max(n for _, _, n in calls)
    gaps = [b[0] - a[1] for a, b in zip(calls, calls[1:])]
    steady = [(b - a, n) for a, b, n in calls if n == full]
    res["tl_calls"], res["tl_full_call_tokens"] = len(calls), full
    res["tl_gap_us_med"] = round(statistics.median(gaps) * 1e6, 1) if gaps else None
    res["tl_gap_us_max"] = round(max(gaps) * 1e6, 1) if gaps else None
    res["tl_daemon_full_call_GBps"] = gbps(sum(2 * n * row for _, n in steady),
                                           sum(t for t, _ in steady))
    if c.raw_outliers is None and len(done) == len(calls):
        ends = [start.elapsed_time(ev) / 1e3 for ev in done]
        pairs = [(ends[i] - ends[i - 1], calls[i][2]) for i in range(1, len(calls))
                 if calls[i][2] == full and calls[i - 1][2] == full]
        if pairs:
            res["tl_gpu_full_piece_GBps"] = gbps(sum(2 * n * row for _, n in pairs),
                                                 sum(t for t, _ in pairs))
        res["tl_first_copy_done_ms"], res["tl_last_copy_done_ms"] = (round(ends[0] * 1e3, 2),
                                                                     round(ends[-1] * 1e3, 2))


def profile(torch, kvtier, c, res):
    import kvtier._staged as st
    import kvtier.hf as hf
    import kvtier.raw
    from kvtier._lib import Span, lib
    toks = torch.arange(N, dtype=torch.int32).numpy()
    g = torch.Generator(device="cuda").manual_seed(1)
    kv = [(torch.randn((N, H, D), generator=g, device="cuda").bfloat16(),
           torch.randn((N, H, D), generator=g, device="cuda").bfloat16()) for _ in range(L)]
    res["pinned"] = c.pin_cuda()
    c.store_tokens(toks, kv)

    out = [(c.alloc((N, H, D)), c.alloc((N, H, D))) for _ in range(L)]
    c.fetch_tokens(toks, out=out)
    for per in (1, L):
        def f():
            for l0 in range(0, L, per):
                c.fetch_tokens(toks, out={l: out[l] for l in range(l0, min(L, l0 + per))})
        best, med = timed(torch, f)
        res["zc_%dlayers_GBps" % per], res["zc_%dlayers_med_GBps" % per] = gbps(L * NB, best), gbps(L * NB, med)

    dst = torch.empty((N, H, D), dtype=torch.bfloat16, device="cuda")
    def h2d():
        for k, v in out:
            dst.copy_(k, non_blocking=True)
            dst.copy_(v, non_blocking=True)
    res["h2d_GBps"] = gbps(L * NB, timed(torch, h2d)[0])

    src = [(c.alloc((N, H, D)), c.alloc((N, H, D))) for _ in range(L)]
    stop, moved = threading.Event(), [0, 0.0]
    def pump():
        t0 = time.perf_counter()
        while not stop.is_set():
            for k, v in src:
                dst.copy_(k, non_blocking=True)
                dst.copy_(v, non_blocking=True)
            torch.cuda.synchronize()
            moved[0] += L * NB
        moved[1] = time.perf_counter() - t0
    th = threading.Thread(target=pump)
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    for _ in range(5):
        c.fetch_tokens(toks, out=dict(enumerate(out)))
    res["both_zc_GBps"] = gbps(5 * L * NB, time.perf_counter() - t0)
    stop.set()
    th.join()
    res["both_h2d_GBps"] = gbps(moved[0], moved[1])
    out = src = None

    shape = (L, 1, H, N, D)
    k_all = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
    v_all = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
    views = [(k_all[i, 0].permute(1, 0, 2), v_all[i, 0].permute(1, 0, 2)) for i in range(L)]
    inside, run, calls = [0.0, 0], st.run, []
    def traced(client, spans, store, call, **kw):
        def one(group):
            t = time.perf_counter()
            call(group)
            t1 = time.perf_counter()
            inside[0] += t1 - t
            inside[1] += 1
            calls.append((t, t1, sum(s.n_tokens for s in group)))
        return run(client, spans, store, one, **kw)
    st.run = traced
    timeline(torch, st, c, toks, views, calls, res)
    # int8: raw rows to the GPU (the default), then values, for comparison
    for tag, raw in (("staged", True), ("staged_values", False)):
        if tag == "staged_values" and c.raw_outliers is None:
            continue
        c._raw_cuda = raw
        try:
            c.fetch_tokens(toks, out=views)
            inside[:] = [0.0, 0]
            best, med = timed(torch, lambda: c.fetch_tokens(toks, out=views))
        finally:
            c._raw_cuda = True
        res[tag + "_GBps"], res[tag + "_ms"] = gbps(L * NB, med), round(med * 1e3, 2)
        res[tag + "_daemon_ms"], res[tag + "_calls"] = round(inside[0] / 5 * 1e3, 2), inside[1] // 5
    st.run = run
    res["raw_fetches"] = c.raw_fetches
    res["equal"] = all(torch.equal(views[i][0], kv[i][0]) and torch.equal(views[i][1], kv[i][1])
                       for i in range(L))
    o = c.raw_outliers
    if o is not None:
        row = lib.kvt_raw_row_bytes(c._handle(), o)
        bufs = [lib.kvt_alloc(c._handle(), N * row) for _ in range(2 * L)]
        arr = (Span * L)(*[Span(l, 0, N, bufs[2 * l], bufs[2 * l + 1]) for l in range(L)])
        tok = (ctypes.c_int32 * N)(*range(N))
        def raw_zc():
            assert lib.kvt_fetch_tokens_raw(c._handle(), tok, N, arr, L, o) == 0
        best, med = timed(torch, raw_zc)
        res["raw_zc_client_GBps"], res["raw_zc_ms"] = gbps(L * NB, best), round(best * 1e3, 2)
        host = torch.from_numpy(kvtier._arrays.view(bufs[0], N * row).reshape(N, row))
        gpu = host.cuda()
        best, _ = timed(torch, lambda: kvtier.raw.dequantize(gpu, H, D, o, torch.bfloat16))
        res["dequant_gpu_ms_per_layer_k"] = round(best * 1e3, 3)
        # a whole piece of the staged fetch (STAGE_MAX bytes of K and of V)
        per = max(1, 2 * (st.STAGE_MAX // row) // N)
        piece = torch.cat([torch.from_numpy(kvtier._arrays.view(bufs[i], N * row).reshape(N, row))
                           for i in range(min(per, len(bufs)))]).cuda()
        best, _ = timed(torch, lambda: kvtier.raw.dequantize(piece, H, D, o, torch.bfloat16))
        res["dequant_gpu_ms_piece"], res["dequant_piece_rows"] = round(best * 1e3, 3), piece.shape[0]
        hp = torch.empty(piece.shape, dtype=torch.uint8).pin_memory()
        best, _ = timed(torch, lambda: piece.copy_(hp, non_blocking=True))
        res["h2d_ms_piece"] = round(best * 1e3, 3)
        for b in bufs:
            lib.kvt_free(c._handle(), b)

    steps = {"match": [], "alloc": [], "fetch": [], "cache": []}
    for r in range(4):
        del k_all, v_all, views
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = hf._longest_prefix(c, toks)
        t1 = time.perf_counter()
        k_all = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
        v_all = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
        views = [(k_all[i, 0].permute(1, 0, 2), v_all[i, 0].permute(1, 0, 2)) for i in range(L)]
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        c.fetch_tokens(toks[:n], out=views)
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        cache = hf._dynamic_cache(tuple((k_all[i], v_all[i]) for i in range(L)))
        torch.cuda.synchronize()
        t4 = time.perf_counter()
        del cache
        if r:
            for key, a, b in (("match", t0, t1), ("alloc", t1, t2), ("fetch", t2, t3), ("cache", t3, t4)):
                steps[key].append(b - a)
    for key, ts in steps.items():
        res["hf_%s_ms" % key] = round(statistics.median(ts) * 1e3, 2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="build dir holding kvtierd and libkvtier.so (default: build)")
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("fetch_profile: no torch; nothing to measure")
        return 0
    if not torch.cuda.is_available():
        print("fetch_profile: no CUDA; nothing to measure")
        return 0
    os.environ.setdefault("KVTIER_LIB", os.path.join(args.build, "libkvtier.so"))
    import kvtier
    tmp = tempfile.mkdtemp(prefix="kvtier-profile-")
    for mode in ("none", "int8"):
        d, sock = start_daemon(args.build, tmp, mode)
        res = {"mode": mode}
        try:
            m = kvtier.Model("fetch-profile", n_layers=L, n_kv_heads=H, head_dim=D, dtype="bfloat16")
            with torch.no_grad(), kvtier.connect(m, sock, shm_bytes=(3 << 30) + (512 << 20)) as c:
                profile(torch, kvtier, c, res)
        finally:
            d.terminate()
            d.wait()
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
