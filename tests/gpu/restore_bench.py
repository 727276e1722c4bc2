#!/usr/bin/env python3
"""restore_bench.py - restore a transformers KV cache from kvtier onto a GPU
against recomputing it, at the Llama-3-8B geometry (docs/performance.md).

    LD_LIBRARY_PATH=DIR python3 tests/gpu/restore_bench.py --build DIR \\
        [--quant none,none-shared,int8,int8-values] [--tokens 2048,8192] [--daemon-flags "--workers 16"]

It starts DIR/kvtierd (its shared libraries found through LD_LIBRARY_PATH)
and loads DIR/libkvtier.so ($KVTIER_LIB overrides). A LlamaForCausalLM is
built from a config (32 layers, 32 heads, 8 kv heads, head_dim 128, hidden
4096, intermediate 14336, vocab 128256) with seeded random weights, bf16 on
CUDA. For each daemon mode and prompt length N, one process prefills N
tokens and kvtier.hf.save()s the cache; another process kvtier.hf.load()s
it and runs 64 more tokens: with --quant none its logits must equal the
saving process's own (exit 1 if not); with int8 it reports the KL
divergence and top-1 agreement. int8 fetches move raw int8 rows to the GPU
and dequantize there (the default); int8-values (KVTIER_RAW_CUDA=0) moves
values in the model's dtype, for comparison; none-shared starts the lossless
daemon with --share-hot 1, so that the GPU copies the rows straight out of
its hot blocks (docs/python.md). Medians of 3 on a warm daemon: restore
(match, fetch, to GPU, cache built) and time to first token (restore and
one token's forward) against recompute (a forward of the N + 1 tokens);
and the pinned
host-to-GPU copy rate measured in the same process, against which restore's
client bytes per second are reported.

Where there is no CUDA it says so and exits 0 (CI has no GPU). --tiny
--device cpu runs the same steps on a 2-layer float32 model on the CPU (for
checking the script where transformers is installed but no GPU is).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PY_DIR = os.path.join(ROOT, "client", "python")
EXT_TOKENS = 64
SEED = 1234

LLAMA3_8B = dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 head_dim=128, hidden_size=4096, intermediate_size=14336, vocab_size=128256,
                 max_position_embeddings=16384, rms_norm_eps=1e-5)
TINY = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            hidden_size=64, intermediate_size=128, vocab_size=512,
            max_position_embeddings=16384, rms_norm_eps=1e-5)
# (Only fields every LlamaConfig version takes: newer ones refuse unknown
# keys and moved rope_theta into rope_parameters; RoPE's base does not
# change what is timed or compared.)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="build dir holding kvtierd and libkvtier.so (default: build)")
    p.add_argument("--quant", default="none,none-shared,int8,int8-values",
                   help="daemon modes to run, comma-separated")
    p.add_argument("--tokens", default="2048,8192", help="prompt lengths N, comma-separated")
    p.add_argument("--daemon-flags", default="", help="extra kvtierd flags, e.g. '--workers 16'")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer model instead of Llama-3-8B")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--role", choices=["save", "load"], help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ref", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def median(xs):
    return statistics.median(xs)


# ---- the model (child processes) ----------------------------------------------

def geometry(args):
    return TINY if args.tiny else LLAMA3_8B


def build_model(args, torch):
    """The same model in every process: weights from seeded generators,
    parameter by parameter in name order (transformers' own init is not
    promised to be reproducible across processes)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    dtype = torch.bfloat16 if args.device != "cpu" else torch.float32
    cfg = LlamaConfig(**geometry(args))
    try:
        cfg._attn_implementation = "sdpa"    # the default where torch has it
    except (AttributeError, ValueError):
        pass
    try:
        torch.set_default_dtype(dtype)       # built in bf16 directly, if torch lets us
    except (TypeError, RuntimeError):
        pass
    try:
        with torch.device(args.device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to(device=args.device, dtype=dtype).eval()
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(model.named_parameters())):
            g = torch.Generator(device=p.device).manual_seed(SEED + i)
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model


def prompt(args, torch, n):
    g = torch.Generator().manual_seed(SEED + n)
    vocab = geometry(args)["vocab_size"]
    ids = torch.randint(0, vocab, (1, n + EXT_TOKENS), generator=g)
    return ids[:, :n].to(args.device), ids[:, n:].to(args.device)


def kvtier_model(args, kvtier):
    g = geometry(args)
    return kvtier.Model("restore-bench-tiny" if args.tiny else "restore-bench-llama3-8b",
                        n_layers=g["num_hidden_layers"], n_kv_heads=g["num_key_value_heads"],
                        head_dim=g["head_dim"],
                        dtype="bfloat16" if args.device != "cpu" else "float32")


def forward(model, ids, cache=None, last_only=False):
    """model(ids) with the cache; last_only: the last position's logits
    alone, as an engine computes them (the whole vocab for every prompt
    token would add a 128256-wide matrix product per token to recompute)."""
    kw = {"past_key_values": cache, "use_cache": True}
    if last_only:
        try:
            return model(ids, logits_to_keep=1, **kw)
        except TypeError:
            pass
    return model(ids, **kw)


def sync(torch, args):
    if args.device != "cpu":
        torch.cuda.synchronize()


def role_save(args):
    """Prefill N tokens, save the cache, and write the reference logits of
    the 64 tokens after it (computed on this process's own cache)."""
    import torch
    import kvtier
    import kvtier.hf
    model = build_model(args, torch)
    ids, ext = prompt(args, torch, args.n)
    with torch.no_grad(), kvtier.connect(kvtier_model(args, kvtier), args.socket) as c:
        out = forward(model, ids, last_only=True)
        sync(torch, args)
        t0 = time.perf_counter()
        stored = kvtier.hf.save(c, ids, out.past_key_values)
        sync(torch, args)
        t_save = time.perf_counter() - t0
        ref = forward(model, ext, out.past_key_values).logits.float()
        torch.save(ref.cpu(), args.ref)
    print(json.dumps({"stored": stored, "save_s": t_save}))


def pinned_h2d_rate(torch, nbytes, repeats):
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return nbytes / median(times)


def role_load(args):
    """Restore (timed), run the 64 tokens, compare with the reference, and
    time recompute and the pinned copy rate in this same process."""
    import torch
    import kvtier
    import kvtier.hf
    model = build_model(args, torch)
    ids, ext = prompt(args, torch, args.n)
    g = geometry(args)
    dt = torch.bfloat16 if args.device != "cpu" else torch.float32
    client_bytes = (args.n * g["num_hidden_layers"] * 2 * g["num_key_value_heads"] * g["head_dim"]
                    * torch.finfo(dt).bits // 8)
    res = {"n": args.n, "mode": args.mode, "client_bytes": client_bytes}
    with torch.no_grad(), kvtier.connect(kvtier_model(args, kvtier), args.socket) as c:
        if args.device != "cpu":
            res["region_pinned"] = c.pin_cuda()
            res["pin_error"] = c.pin_error
        # warm-up: CUDA registration of the region, kernels, allocator
        cache, n = kvtier.hf.load(c, ids, device=args.device)
        assert n == args.n, "restored %d of %d tokens" % (n, args.n)
        forward(model, ext[:, :1], cache)
        forward(model, torch.cat([ids, ext[:, :1]], dim=1), last_only=True)
        sync(torch, args)
        restore, ttft_restore, ttft_recompute = [], [], []
        for _ in range(args.repeats):
            del cache
            sync(torch, args)
            t0 = time.perf_counter()
            cache, n = kvtier.hf.load(c, ids, device=args.device)
            sync(torch, args)
            t1 = time.perf_counter()
            forward(model, ext[:, :1], cache)
            sync(torch, args)
            t2 = time.perf_counter()
            restore.append(t1 - t0)
            ttft_restore.append(t2 - t0)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            forward(model, torch.cat([ids, ext[:, :1]], dim=1), last_only=True)
            sync(torch, args)
            ttft_recompute.append(time.perf_counter() - t0)
        # accuracy: the 64 tokens after the restored prefix
        cache, n = kvtier.hf.load(c, ids, device=args.device)
        got = forward(model, ext, cache).logits.float().cpu()
        res["raw_fetches"] = c.raw_fetches
        res["shared_fetches"] = getattr(c, "shared_fetches", 0)
        res["shared_refetched"] = getattr(c, "shared_refetched", 0)
        blocks = getattr(c, "_runs", None)
        if blocks is not None and blocks.register_error:
            res["shared_register_error"] = blocks.register_error
    ref = torch.load(args.ref)
    res["logits_equal"] = bool(torch.equal(got, ref))
    logp_ref, logp = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    res["kl_mean"] = float((logp_ref.exp() * (logp_ref - logp)).sum(-1).mean())
    res["top1_agree"] = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    res["restore_s"] = median(restore)
    res["ttft_restore_s"] = median(ttft_restore)
    res["ttft_recompute_s"] = median(ttft_recompute)
    res["speedup"] = res["ttft_recompute_s"] / res["ttft_restore_s"]
    res["restore_GBps"] = client_bytes / res["restore_s"] / 1e9
    if args.device != "cpu":
        res["pinned_h2d_GBps"] = pinned_h2d_rate(torch, client_bytes, args.repeats) / 1e9
        res["rate_vs_pinned"] = res["restore_GBps"] / res["pinned_h2d_GBps"]
    print(json.dumps(res))


# ---- the driver -----------------------------------------------------------------

def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_daemon(args, tmp, mode):
    sock = os.path.join(tmp, "kvtier-%s.sock" % mode)
    cmd = [os.path.join(args.build, "kvtierd"), "--socket", sock,
           "--admin-socket", os.path.join(tmp, "admin-%s.sock" % mode),
           "--hot-bytes", "24G", "--cold-bytes", "0", "--quant", mode.split("-")[0],
           "--log-level", "warning"] + args.daemon_flags.split()
    if mode.endswith("-shared"):
        cmd += ["--share-hot", "1"]     # the GPU copies out of the hot blocks
    log = open(os.path.join(tmp, "kvtierd-%s.log" % mode), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    for _ in range(1000):
        if accepts(sock):
            return proc, sock
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    with open(log.name, "rb") as f:
        sys.exit("kvtierd did not start (%s): %s" % (" ".join(cmd), f.read().decode(errors="replace")))


def child(args, role, sock, n, mode, ref):
    argv = [sys.executable, os.path.abspath(__file__), "--role", role, "--socket", sock,
            "--n", str(n), "--mode", mode, "--ref", ref, "--device", args.device,
            "--repeats", str(args.repeats), "--build", args.build] + (["--tiny"] if args.tiny else [])
    env = child_env(args)
    if mode.endswith("-values"):
        env["KVTIER_RAW_CUDA"] = "0"      # int8 values cross PCIe, not raw rows
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s process failed (N=%d, %s):\n%s%s" % (role, n, mode, r.stdout, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def child_env(args):
    env = dict(os.environ)
    env["PYTHONPATH"] = PY_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("KVTIER_LIB", os.path.join(args.build, "libkvtier.so"))
    return env


def table(results):
    lines = ["| mode | N | restore ms | TTFT restore ms | TTFT recompute ms | recompute / restore | "
             "TTFT speedup | restore GB/s | pinned H2D GB/s | ratio | logits | KL | top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %s | %d | %.1f | %.1f | %.1f | %.1fx | %.1fx | %.1f | %s | %s | %s | %.2e | %.3f |" % (
            r["mode"], r["n"], r["restore_s"] * 1e3, r["ttft_restore_s"] * 1e3,
            r["ttft_recompute_s"] * 1e3, r["ttft_recompute_s"] / r["restore_s"], r["speedup"],
            r["restore_GBps"],
            "%.1f" % r["pinned_h2d_GBps"] if "pinned_h2d_GBps" in r else "-",
            "%.2f" % r["rate_vs_pinned"] if "rate_vs_pinned" in r else "-",
            "equal" if r["logits_equal"] else "differ", r["kl_mean"], r["top1_agree"]))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.build = os.path.abspath(args.build)
    if args.role:
        sys.path.insert(0, PY_DIR)
        return role_save(args) if args.role == "save" else role_load(args)
    try:
        import torch
    except ImportError:
        print("restore_bench: torch is not installed: skipped")
        return 0
    if args.device != "cpu" and not torch.cuda.is_available():
        print("restore_bench: no CUDA device: skipped")
        return 0
    try:
        import transformers  # noqa: F401  (the children use it)
    except ImportError:
        print("restore_bench: transformers is not installed: skipped")
        return 0
    for f in ("kvtierd", "libkvtier.so"):
        if not os.path.exists(os.path.join(args.build, f)):
            sys.exit("restore_bench: %s/%s not found (give --build DIR)" % (args.build, f))
    results, failed = [], False
    tmp = tempfile.mkdtemp(prefix="kvtier-bench-")
    try:
        for mode in args.quant.split(","):
            proc, sock = start_daemon(args, tmp, mode)
            try:
                for n in (int(x) for x in args.tokens.split(",")):
                    ref = os.path.join(tmp, "ref-%s-%d.pt" % (mode, n))
                    saved = child(args, "save", sock, n, mode, ref)
                    r = child(args, "load", sock, n, mode, ref)
                    r["save_s"] = saved["save_s"]
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if mode.split("-")[0] == "none" and not r["logits_equal"]:
                        failed = True
                        print("restore_bench: N=%d lossless: logits differ from the run "
                              "without kvtier" % n)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
