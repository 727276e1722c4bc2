"""_staged - buffers the daemon cannot reach in place: strided or on a GPU.

They cross through two staging buffers in the shared region, so the daemon
reads and writes them in place (no copy in libkvtier) and, once the region
is registered with CUDA (page-locked), the host-device copies run at pinned
speed. Spans are cut into pieces (at most STAGE_MAX bytes of K or V each,
one layer's span for a typical prefix) and piped: a fetch has the daemon
fill piece i+1 (on the client's worker thread; ctypes releases the GIL)
while piece i is copied to the tensor, a store copies piece i+1 off the GPU
while the daemon stores piece i.
"""
import ctypes
import errno

from . import _arrays
from ._lib import Error, Span, lib

STAGE_MAX = 32 << 20     # bytes of K (and as much of V) per staging buffer
ALIGN = 64


class Piece:
    __slots__ = ("layer", "start", "n", "k", "v")

    def __init__(self, layer, start, n, k, v):
        self.layer, self.start, self.n, self.k, self.v = layer, start, n, k, v


def _cudart_functions(torch):
    """cudaHostRegister/Unregister: torch's binding, else libcudart's."""
    rt = torch.cuda.cudart()
    if hasattr(rt, "cudaHostRegister"):
        return rt.cudaHostRegister, rt.cudaHostUnregister
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
        try:
            so = ctypes.CDLL(name)
        except OSError:
            continue
        so.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        so.cudaHostUnregister.argtypes = [ctypes.c_void_p]
        return so.cudaHostRegister, so.cudaHostUnregister
    return None, None


def register_cuda(base, nbytes):
    """Page-lock the region for CUDA: (undo function, None), or (None, why)
    when torch has no CUDA or the runtime refused (copies then still work,
    at pageable speed). A user without torch does the same with
    cudaHostRegister(base, bytes, cudaHostRegisterPortable) on the
    address and size kvt_region() gives (docs/python.md)."""
    torch = _arrays.torch()
    if torch is None or not torch.cuda.is_available():
        return None, "torch has no CUDA"
    torch.cuda.init()
    register, unregister = _cudart_functions(torch)
    if register is None:
        return None, "no cudaHostRegister: neither torch.cuda.cudart() nor libcudart has it"
    err = register(base, nbytes, 1)             # cudaHostRegisterPortable
    code = int(getattr(err, "value", err))
    if code != 0:
        return None, "cudaHostRegister of the %d-byte region failed (cudaError %d)" % (nbytes, code)
    return (lambda: unregister(base)), None


def _stage_tokens(row, want_tokens):
    """Tokens per staging buffer: what the pieces need, at most STAGE_MAX."""
    return max(1, min(want_tokens, STAGE_MAX // row))


def _alloc_buffers(handle, row, n_tokens, count):
    """count staging buffers of K then V for n_tokens each, halving the
    tokens while the region has no room; [] and ENOMEM if not even one."""
    while True:
        half = (n_tokens * row + ALIGN - 1) // ALIGN * ALIGN
        bufs = []
        for _ in range(count):
            p = lib.kvt_alloc(handle, 2 * half)
            if not p:
                break
            bufs.append(p)
        if len(bufs) == count:
            return n_tokens, half, bufs
        for p in bufs:
            lib.kvt_free(handle, p)
        if n_tokens == 1:
            raise Error(errno.ENOMEM, "the shared region has no room to stage one token of "
                        "K and V; free alloc() buffers or connect with a larger shm_bytes")
        n_tokens = (n_tokens + 1) // 2


def _pieces(spans, cap):
    out = []
    for layer, start, k, v in spans:
        n = k.shape[0]
        for a in range(0, n, cap):
            b = min(n, a + cap)
            out.append(Piece(layer, start + a, b - a, k[a:b], v[a:b]))
    return out


def _copy(dst, src):
    if _arrays.is_torch(dst) or _arrays.is_torch(src):
        torch = _arrays.torch()
        if not _arrays.is_torch(src):
            src = torch.from_numpy(src)
        if not _arrays.is_torch(dst):
            dst = torch.from_numpy(dst)
        if src.device.type != "cpu" and not src.is_contiguous():
            src = src.contiguous()      # dense on its own device, then one DMA
        dst.copy_(src, non_blocking=True)
    else:
        _arrays.np.copyto(dst, src)


def _cuda_event(p):
    """An event after the copies of piece p issued so far, None on CPU."""
    t = p.k if _arrays.is_cuda(p.k) else p.v if _arrays.is_cuda(p.v) else None
    if t is None:
        return None
    torch = _arrays.torch()
    ev = torch.cuda.Event()
    ev.record(torch.cuda.current_stream(t.device))
    return ev


def _wait(ev):
    if ev is not None:
        ev.synchronize()


def run(client, spans, store, call):
    """Store or fetch spans [(layer, token_start, k, v)] through staging;
    call(span) does the C request for one Span whose buffers are staging."""
    row, shape, dtype = client._row, client._head_shape, client.model.dtype
    want = max(k.shape[0] for _, _, k, _ in spans)
    pieces = _pieces(spans, _stage_tokens(row, want))
    n_bufs = 1 if len(pieces) == 1 else 2
    cap, half, bufs = _alloc_buffers(client._h, row, max(p.n for p in pieces), n_bufs)
    if cap < max(p.n for p in pieces):
        pieces = _pieces(spans, cap)

    def views(j, p):
        base = bufs[j % n_bufs]
        as_torch = _arrays.is_torch(p.k) or _arrays.is_torch(p.v)
        k = _arrays.typed(_arrays.view(base, p.n * row), dtype, (p.n,) + shape, as_torch)
        v = _arrays.typed(_arrays.view(base + half, p.n * row), dtype, (p.n,) + shape, as_torch)
        return k, v

    def request(j, p):
        base = bufs[j % n_bufs]
        return call(Span(p.layer, p.start, p.n, base, base + half))

    # Piped with two buffers; one piece (or one buffer) goes in step.
    pool = client._worker() if n_bufs == 2 and len(pieces) > 1 else None
    fut, events = None, [None, None]
    try:
        if pool is None:
            for j, p in enumerate(pieces):
                if store:
                    k, v = views(j, p)
                    _copy(k, p.k)
                    _copy(v, p.v)
                    _wait(_cuda_event(p))
                    request(j, p)
                else:
                    request(j, p)
                    k, v = views(j, p)
                    _copy(p.k, k)
                    _copy(p.v, v)
                    _wait(_cuda_event(p))     # the buffer is reused next
        elif store:
            for j, p in enumerate(pieces):
                k, v = views(j, p)
                _copy(k, p.k)                # while the daemon stores piece j-1
                _copy(v, p.v)
                ev = _cuda_event(p)
                if fut is not None:
                    fut.result()             # piece j-1 stored: its buffer is free
                _wait(ev)
                fut = pool.submit(request, j, p)
            fut.result()
        else:
            fut = pool.submit(request, 0, pieces[0])
            for j, p in enumerate(pieces):
                fut.result()
                fut = None
                if j + 1 < len(pieces):
                    nxt = (j + 1) % 2
                    _wait(events[nxt])       # piece j-1 has left that buffer
                    fut = pool.submit(request, j + 1, pieces[j + 1])
                k, v = views(j, p)
                _copy(p.k, k)                # while the daemon fills piece j+1
                _copy(p.v, v)
                events[j % 2] = _cuda_event(p)
    finally:
        if fut is not None:
            try:
                fut.result()
            except Exception:
                pass
        for ev in events:
            _wait(ev)
        for b in bufs:
            lib.kvt_free(client._h, b)


def spans_need_staging(spans):
    """True when some buffer is not a dense CPU buffer."""
    for _, _, k, v in spans:
        for a in (k, v):
            if _arrays.is_cuda(a) or _arrays.direct_pointer(a, False) is None:
                return True
    return False
