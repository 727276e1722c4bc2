#!/usr/bin/env python3
"""shared_profile.py - where a lossless restore out of shared hot blocks
spends its time (docs/performance.md, "Lossless straight out of the hot
tier").

    LD_LIBRARY_PATH=DIR python3 tests/gpu/shared_profile.py --build DIR

It starts DIR/kvtierd with --quant none --share-hot 1, saves N tokens of
32 layers of the Llama-3-8B KV geometry (8 kv heads x 128, bfloat16) with
kvtier.hf.save, and runs kvtier.hf.load six times per N, printing the
marks kvtier._shared records (ms from the start of hf.load): start of
the fetch, each group located, copies issued, the cache built while they
run (meanwhile), copies done, gens checked, and the whole load. Then it
copies 1 GiB from a pinned buffer to the GPU in pieces of 1 to 32 MiB, on
one and on two streams, to show what the copy size costs. Needs CUDA;
exits 0 without it.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
from restore_bench import accepts  # noqa: E402  (a daemon's socket answers)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--tokens", default="2048,8192")
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("shared_profile: torch is not installed: skipped")
        return 0
    if not torch.cuda.is_available():
        print("shared_profile: no CUDA device: skipped")
        return 0
    os.environ.setdefault("KVTIER_LIB", os.path.join(os.path.abspath(args.build), "libkvtier.so"))
    import kvtier
    import kvtier.hf
    from kvtier import _shared

    tmp = tempfile.mkdtemp(prefix="kvtier-shprof-")
    sock = os.path.join(tmp, "kvtier.sock")
    daemon = subprocess.Popen([os.path.join(args.build, "kvtierd"), "--socket", sock,
                               "--admin-socket", os.path.join(tmp, "admin.sock"),
                               "--hot-bytes", "24G", "--cold-bytes", "0", "--quant", "none",
                               "--share-hot", "1", "--log-level", "warning"])
    try:
        for _ in range(1000):
            if accepts(sock):
                break
            time.sleep(0.01)
        L, H, D = 32, 8, 128
        c = kvtier.connect(kvtier.Model("llama-3-8b", L, H, D, "bfloat16"), socket=sock)
        for n in (int(x) for x in args.tokens.split(",")):
            ids = (torch.arange(n) + n).unsqueeze(0)
            kv = tuple((torch.randn(1, H, n, D, device="cuda").to(torch.bfloat16),
                        torch.randn(1, H, n, D, device="cuda").to(torch.bfloat16))
                       for _ in range(L))
            kvtier.hf.save(c, ids[0], kv)
            for _ in range(6):
                torch.cuda.synchronize()
                _shared.marks = []
                t0 = time.perf_counter()
                kvtier.hf.load(c, ids, device="cuda")
                torch.cuda.synchronize()
                t1 = time.perf_counter()
                marks, _shared.marks = _shared.marks, None
                print("N=%d load %.1f ms: %s" % (n, (t1 - t0) * 1e3, " ".join(
                    "%s %.1f" % (what, (t - t0) * 1e3) for what, t in marks)), flush=True)
        c.close()
    finally:
        daemon.terminate()
        daemon.wait()

    size = 1 << 30
    pinned = torch.empty(size, dtype=torch.uint8).pin_memory()
    gpu = torch.empty(size, dtype=torch.uint8, device="cuda")
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for mib in (1, 2, 4, 8, 32):
        piece = mib << 20
        for n_streams in (1, 2):
            best = None
            for _ in range(3):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for i in range(size // piece):
                    with torch.cuda.stream(streams[i % n_streams]):
                        gpu[i * piece:(i + 1) * piece].copy_(pinned[i * piece:(i + 1) * piece],
                                                             non_blocking=True)
                torch.cuda.synchronize()
                t = time.perf_counter() - t0
                best = t if best is None else min(best, t)
            print("pinned 1 GiB in %d MiB copies, %d stream(s): %.1f ms (%.1f GB/s)"
                  % (mib, n_streams, best * 1e3, size / best / 1e9), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
