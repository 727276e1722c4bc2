"""raw_dequant_cpu_vs_cuda.py - proves that kvtier.raw.dequantize gives the same bits on
CUDA as on the CPU (where tests/python/test_raw_fetch.py ties it to the daemon), for
f16, bf16 and f32, with padded outlier slots. Run from the tree root on a GPU host."""
import sys, torch
sys.path.insert(0, "client/python")
import importlib.util
spec = importlib.util.spec_from_file_location("raw", "client/python/kvtier/raw.py"); raw = importlib.util.module_from_spec(spec); spec.loader.exec_module(raw)
H, D, O, n = 8, 128, 4, 8192
g = torch.Generator().manual_seed(1)
scale = (torch.rand(n, H, generator=g) * 0.5 + 1e-3).float()
idx = torch.stack([torch.randperm(D, generator=g)[:O] for _ in range(n * H)]).view(n, H, O).to(torch.int16)
idx[:, :, 3] = -1
val = (torch.randn(n, H, O, generator=g) * 30).half()
q = torch.randint(-127, 128, (n, H, D), generator=g, dtype=torch.int8)
rows = torch.cat([scale.view(torch.uint8).view(n, -1), idx.view(torch.uint8).view(n, -1),
                  val.view(torch.uint8).view(n, -1), q.view(torch.uint8).view(n, -1)], 1)
for dt in (torch.float16, torch.bfloat16, torch.float32):
    a = raw.dequantize(rows, H, D, O, dt)
    b = raw.dequantize(rows.cuda(), H, D, O, dt).cpu()
    print(dt, torch.equal(a.view(torch.uint8), b.view(torch.uint8)))
