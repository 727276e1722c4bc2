"""_staged - buffers the daemon cannot reach in place: strided or on a GPU.

They cross through two staging buffers in the shared region, so the daemon
reads and writes them in place (no copy in libkvtier) and, once the region
is registered with CUDA (page-locked), the host-device copies run at pinned
speed. Spans are cut into pieces (at most STAGE_MAX bytes of K or V each, the
spans of several layers in one request for a short prefix) and piped: a fetch has the daemon
fill piece i+1 (on the client's worker thread; ctypes releases the GIL)
while piece i is copied to the tensor (three buffers, so the next request
never waits for this thread), a store copies piece i+1 off the GPU while the
daemon stores piece i.
"""
import ctypes
import errno
import os
import queue
import threading

from . import _arrays
from . import raw as _raw
from ._lib import Error, Span, lib

def _stage_bytes():
    """Bytes of K (and as much of V) per staging buffer: 32 MiB, or
    KVTIER_STAGE_BYTES (read at import; 64 KiB to 1 GiB, else ignored)."""
    try:
        n = int(os.environ.get("KVTIER_STAGE_BYTES", ""))
    except ValueError:
        return 32 << 20
    return n if (64 << 10) <= n <= (1 << 30) else 32 << 20


STAGE_MAX = _stage_bytes()
ALIGN = 64


class Cut:
    """Tokens [start, start + n) of one layer: src/dst k, v, and where in
    the staging buffer they go (tokens from its start)."""
    __slots__ = ("layer", "start", "n", "k", "v", "at")

    def __init__(self, layer, start, n, k, v, at):
        self.layer, self.start, self.n, self.k, self.v, self.at = layer, start, n, k, v, at


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


def _piece_sizes(total, cap):
    """Tokens of each piece: cap, but the first three and the last three
    smaller (cap/8, /4, /2 and back) when there is room, so that the first
    copy to the GPU starts sooner and the last one, which nothing covers,
    is short."""
    ramp = [max(1, cap // 8), max(1, cap // 4), max(1, cap // 2)]
    if total <= 2 * sum(ramp):
        sizes, left = [], total
        for n in ramp + [cap] * (total // cap + 1):
            if left <= 0:
                break
            sizes.append(min(n, left))
            left -= sizes[-1]
        return sizes
    middle = total - 2 * sum(ramp)
    return ramp + [cap] * (middle // cap) + ([middle % cap] if middle % cap else []) + ramp[::-1]


def _pieces(spans, cap):
    """Requests of at most cap tokens of K (and as many of V) each, a
    request holding the cuts of one or more layers, so that a short prefix
    takes few round trips; sized by _piece_sizes."""
    sizes = iter(_piece_sizes(sum(k.shape[0] for _, _, k, _ in spans), cap))
    out, cur, used, limit = [], [], 0, next(sizes)
    for layer, start, k, v in spans:
        n, a = k.shape[0], 0
        while a < n:
            if used == limit:
                out.append(cur)
                cur, used, limit = [], 0, next(sizes)
            b = min(n, a + limit - used)
            cur.append(Cut(layer, start + a, b - a, k[a:b], v[a:b], used))
            used += b - a
            a = b
    if cur:
        out.append(cur)
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


_copy_streams = {}


def _copy_stream(torch, dev):
    """One stream per device for raw rows crossing to the GPU."""
    key = dev.index if dev.index is not None else torch.cuda.current_device()
    if key not in _copy_streams:
        _copy_streams[key] = torch.cuda.Stream(device=key)
    return _copy_streams[key]


def _cuda_event(piece):
    """An event after the copies of piece issued so far, None on CPU."""
    for c in piece:
        t = c.k if _arrays.is_cuda(c.k) else c.v if _arrays.is_cuda(c.v) else None
        if t is not None:
            torch = _arrays.torch()
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(t.device))
            return ev
    return None


def _wait(ev):
    if ev is not None:
        ev.synchronize()


def run(client, spans, store, call, raw_outliers=None):
    """Store or fetch spans [(layer, token_start, k, v)] through staging;
    call([Span]) does the C request for Spans whose buffers are staging.
    raw_outliers (a fetch into CUDA tensors from an int8 daemon): the
    staging holds raw int8 rows with that many outliers (call asks for
    them), which cross to the GPU and are dequantized there."""
    raw = raw_outliers is not None
    row = lib.kvt_raw_row_bytes(client._h, raw_outliers) if raw else client._row
    shape, dtype = client._head_shape, client.model.dtype
    total = sum(k.shape[0] for _, _, k, _ in spans)
    pieces = _pieces(spans, _stage_tokens(row, total))
    n_bufs = 1 if len(pieces) == 1 else 2 if store or len(pieces) == 2 else 3
    need = max(sum(c.n for c in p) for p in pieces)
    cap, half, bufs = _alloc_buffers(client._h, row, need, n_bufs)
    if cap < need:
        pieces = _pieces(spans, cap)

    def views(j, c):
        base = bufs[j % n_bufs] + c.at * row
        as_torch = _arrays.is_torch(c.k) or _arrays.is_torch(c.v)
        k = _arrays.typed(_arrays.view(base, c.n * row), dtype, (c.n,) + shape, as_torch)
        v = _arrays.typed(_arrays.view(base + half, c.n * row), dtype, (c.n,) + shape, as_torch)
        return k, v

    def request(j, p):
        base = bufs[j % n_bufs]
        return call([Span(c.layer, c.start, c.n, base + c.at * row, base + half + c.at * row)
                     for c in p])

    def to_stage(j, p):
        for c in p:
            k, v = views(j, c)
            _copy(k, c.k)
            _copy(v, c.v)
        return _cuda_event(p)

    def from_stage(j, p):
        for c in p:
            k, v = views(j, c)
            _copy(c.k, k)
            _copy(c.v, v)
        return _cuda_event(p)

    def from_stage_raw(j, p):
        """The piece's raw rows of K and of V: two copies to the GPU on a
        stream of their own, then, on the caller's stream once they are
        there, one dequantization of both and a copy into each cut's
        tensors. The event returned marks the rows' crossing, so the
        daemon refills the buffer while the GPU dequantizes, and the next
        piece crosses while this one is dequantized (one stream for both
        would queue each piece's kernels behind its copy and the next
        copy behind those kernels)."""
        torch = _arrays.torch()
        dev = p[0].k.device
        rows = sum(c.n for c in p)
        base = bufs[j % n_bufs]
        def cross():
            gpu = torch.empty((2, rows, row), dtype=torch.uint8, device=dev)
            for side, off in ((0, 0), (1, half)):
                host = _arrays.view(base + off, rows * row).reshape(rows, row)
                gpu[side].copy_(torch.from_numpy(host), non_blocking=True)
            return gpu
        crossed = None
        if dev.type == "cuda":
            # At most two pieces' kernels queued: each holds its rows and
            # values on the GPU until they have run.
            while len(dequantized) >= 2:
                dequantized.pop(0).synchronize()
            compute, side_stream = torch.cuda.current_stream(dev), _copy_stream(torch, dev)
            with torch.cuda.stream(side_stream):
                try:
                    gpu = cross()
                except BaseException:
                    side_stream.synchronize()   # K's rows may be crossing
                    raise
                crossed = torch.cuda.Event()
                crossed.record(side_stream)
            compute.wait_event(crossed)
            gpu.record_stream(compute)  # not reused before the kernels read it
        else:
            gpu = cross()               # rows in torch's memory (tests)
        try:
            vals = _raw.dequantize(gpu.view(2 * rows, row), shape[0], shape[1], raw_outliers,
                                   _arrays.torch_dtype(dtype))
            for c in p:
                c.k.copy_(vals[c.at:c.at + c.n])
                c.v.copy_(vals[rows + c.at:rows + c.at + c.n])
        except BaseException:
            _wait(crossed)              # the buffer is freed next: let the copy finish
            raise
        if crossed is None:
            return _cuda_event(p)
        dequantized.append(_cuda_event(p))
        return crossed

    dequantized = []                    # events after each raw piece's kernels
    if raw:
        from_stage = from_stage_raw
    if n_bufs == 1:
        try:
            for j, p in enumerate(pieces):
                if store:
                    _wait(to_stage(j, p))
                    request(j, p)
                else:
                    request(j, p)
                    _wait(from_stage(j, p))   # the buffer is reused next
        finally:
            lib.kvt_free(client._h, bufs[0])
        return
    try:
        if store:
            _store_piped(client._worker(), pieces, to_stage, request)
        else:
            _fetch_piped(client._worker(), pieces, n_bufs, from_stage, request)
    finally:
        for b in bufs:
            lib.kvt_free(client._h, b)


def _store_piped(pool, pieces, to_stage, request):
    """Copy piece j into its buffer while the daemon stores piece j-1."""
    fut = None
    try:
        for j, p in enumerate(pieces):
            ev = to_stage(j, p)
            if fut is not None:
                fut.result()             # piece j-1 stored: its buffer is free
            _wait(ev)
            fut = pool.submit(request, j, p)
        fut.result()
        fut = None
    finally:
        if fut is not None:
            try:
                fut.result()
            except Exception:
                pass


def _fetch_piped(pool, pieces, n_bufs, from_stage, request):
    """A producer thread asks the daemon for piece after piece, each into
    the next buffer once the copy out of that buffer's last piece is done;
    this thread copies each filled piece out. The daemon never waits for
    this thread to be scheduled, only for a buffer to drain."""
    free = threading.Semaphore(n_bufs)
    drained = [None] * n_bufs        # event after the copy out of each buffer
    filled = queue.Queue()
    stop = threading.Event()

    def produce():
        for j, p in enumerate(pieces):
            free.acquire()
            if stop.is_set():
                return
            try:
                _wait(drained[j % n_bufs])
                request(j, p)
            except BaseException as e:
                filled.put(e)
                return
            filled.put(j)

    fut = pool.submit(produce)
    try:
        for _ in pieces:
            j = filled.get()
            if isinstance(j, BaseException):
                raise j
            drained[j % n_bufs] = from_stage(j, pieces[j])
            free.release()
    finally:
        stop.set()
        for _ in range(n_bufs):
            free.release()
        fut.result()
        for ev in drained:
            _wait(ev)


def raw_fits(spans, any_device=False):
    """True when every buffer is a CUDA tensor on one device (any_device:
    a torch tensor on one device, the CPU too, which tests use): a fetch
    may then move raw int8 rows and dequantize them there."""
    bufs = [a for _, _, k, v in spans for a in (k, v)]
    ok = _arrays.is_torch if any_device else _arrays.is_cuda
    return all(ok(a) for a in bufs) and len({a.device for a in bufs}) == 1


def spans_need_staging(spans):
    """True when some buffer is not a dense CPU buffer."""
    for _, _, k, v in spans:
        for a in (k, v):
            if _arrays.is_cuda(a) or _arrays.direct_pointer(a, False) is None:
                return True
    return False
