"""_shared - fetches that copy rows straight out of the daemon's RAM.

A daemon started with share-hot keeps each chunk block of its hot tier in a
memfd of its own that only the daemon can write and that only ever holds
one sharing domain's chunks (docs/protocol.md, "Shared hot blocks"). A
fetch into torch tensors then asks where the rows lie (kvt_locate_tokens)
and copies them to the GPU from there: the host's memory is read once per
byte, by the GPU's copy engine, instead of read and written by the daemon
and read again by the GPU.

Copies of 1 MiB (one block) run at 0.87 of the copy engine's rate, 32 MiB
ones at 1.0 (docs/performance.md), so the blocks of a span's chunks are
mapped side by side (kvt_block_map_run) and page-locked together: one copy
moves a whole layer's span into a staging buffer laid out as the blocks
are (each block's K rows, then its V rows, then its tail page), and the
caller's stream moves the rows from there into the caller's tensors. Runs
are kept for the next fetch of the same chunks (a warm prefix), and
dropped once one of their blocks is let go of by the daemon.

The blocks stay the daemon's: a located chunk's rows are good while the
block's gen is what it was when located. So the copies run first, then the
gens are read again, and the tokens of any chunk whose block changed
meanwhile (an overwrite, an eviction), or that was not in a shared block
(only on SSD, not in RAM), are fetched the ordinary way, which writes them
over whatever the first pass left there.
"""
import collections
import ctypes
import errno
import os

from . import _arrays
from ._lib import Block, Error, Located, Span, check, lib

# cudaHostRegisterPortable | cudaHostRegisterReadOnly: the mapping is
# PROT_READ, and the copy engine only reads it.
_REGISTER_FLAGS = 1 | 8
_TAIL = 4096                 # the block's last page: struct kvt_block_tail
_GEN_AT, _DEAD_AT = 16, 40   # offsets of gen and dead in it (proto.h)
MAX_RUNS = 4096
# A list that fetch appends (what, time.perf_counter()) marks to: start,
# located (per group of spans), issued, copied, checked. For profiling, and
# for tests that act between the copies and the gen check; None: no marks.
marks = None


def _mark(what):
    if marks is not None:
        import time
        marks.append((what, time.perf_counter()))


def mode():
    """KVTIER_SHARED: 1 (default) fetches into CUDA tensors use shared
    blocks where the daemon offers them; 0 never; "all" any torch tensors,
    the CPU's too (tests)."""
    return os.environ.get("KVTIER_SHARED", "1")


class Run:
    """Blocks mapped side by side: ids, their Blocks, a uint8 tensor (and
    numpy array) over the whole range, the block stride, and the CUDA
    unregistration."""
    __slots__ = ("ids", "blocks", "data", "stride", "unregister", "tails")

    def tail_field(self, at):
        """A field of every block's tail, as a numpy uint64 or uint32 view."""
        np = _arrays.np
        dt = np.uint64 if at == _GEN_AT else np.uint32
        return np.ndarray((len(self.ids),), dtype=dt, buffer=self.tails,
                          offset=self.stride - _TAIL + at, strides=(self.stride,))


class Runs:
    """A client's runs of mapped shared blocks, by their ids."""

    def __init__(self, client):
        self._client = client
        self.runs = collections.OrderedDict()
        self.register_error = None     # why CUDA refused to page-lock a run

    def close(self):
        while self.runs:
            self._drop(next(iter(self.runs)))

    def _drop(self, key):
        run = self.runs.pop(key)
        if run.unregister is not None:
            run.unregister()
        for b in run.blocks:
            lib.kvt_block_unmap(ctypes.byref(b))

    def _register(self, base, nbytes):
        from ._staged import _cudart_functions
        register, unregister = _cudart_functions(_arrays.torch())
        if register is None:
            self.register_error = "no cudaHostRegister"
            return None
        err = register(base, nbytes, _REGISTER_FLAGS)
        code = int(getattr(err, "value", err))
        if code != 0:
            self.register_error = "cudaHostRegister of shared blocks failed (cudaError %d)" % code
            return None
        return lambda: unregister(base)

    def _prune(self):
        """Drop runs holding a block the daemon let go of, and the oldest
        beyond MAX_RUNS."""
        for key in [k for k, r in self.runs.items() if r.tail_field(_DEAD_AT).any()]:
            self._drop(key)
        while len(self.runs) >= MAX_RUNS:
            self._drop(next(iter(self.runs)))

    def get(self, ids, cuda):
        """Runs covering ids in order: [(first index, Run)]; ids the daemon
        no longer has are left out."""
        key = tuple(ids)
        run = self.runs.get(key)
        if run is not None:
            self.runs.move_to_end(key)
            return [(0, run)]
        self._prune()
        out, at = [], 0
        while at < len(ids):
            run = self._map(ids[at:at + 250], cuda)
            if run is None:          # ids[at] is gone
                at += 1
                continue
            out.append((at, run))
            at += len(run.ids)
        if len(out) == 1 and len(out[0][1].ids) == len(ids):
            self.runs[key] = out[0][1]
        else:
            for _, run in out:
                self.runs[tuple(run.ids)] = run
        return out

    def _map(self, ids, cuda):
        torch = _arrays.torch()
        h = self._client._handle()
        arr = (ctypes.c_uint64 * len(ids))(*ids)
        blocks = (Block * len(ids))()
        base = ctypes.c_void_p()
        rc = lib.kvt_block_map_run(h, arr, len(ids), blocks, ctypes.byref(base))
        if rc == -errno.ENOENT:
            return None
        check(rc, h, "map shared blocks")
        run = Run()
        run.ids = list(ids[:rc])
        run.blocks = [blocks[i] for i in range(rc)]
        run.stride = blocks[0].map_bytes
        total = rc * run.stride
        run.tails = _arrays.view(base.value, total)
        run.data = torch.from_numpy(run.tails)
        run.unregister = self._register(base.value, total) if cuda else None
        return run


def _chunks(start, n, C):
    return (start + n - 1) // C - start // C + 1


# Spans located per request: the first copies start after a short locate,
# and the next spans are located while they run.
LOCATE_GROUP = 4


def _locate(client, ptr, n_call, group):
    """kvt_locate_tokens of spans group: a numpy [entries, 6] uint64 view
    (block, gen, k_at, v_at, span | tok << 32, n | reserved << 32), or
    None when the daemon shares no blocks."""
    h = client._handle()
    C = client.chunk_tokens
    total = sum(_chunks(start, k.shape[0], C) for _, start, k, _ in group)
    arr = (Span * len(group))()
    for i, (layer, start, k, _) in enumerate(group):
        arr[i] = Span(layer, start, k.shape[0], None, None)
    located = (Located * total)()
    got = ctypes.c_size_t()
    rc = lib.kvt_locate_tokens(h, ptr, n_call, arr, len(group), located, total,
                               ctypes.byref(got))
    if rc == -errno.EOPNOTSUPP:
        return None
    check(rc, h, "locate")
    return _arrays.np.frombuffer(located, dtype=_arrays.np.uint64).reshape(total, 6)


def _stretches(pairs):
    """Maximal runs of pairs (r, j) in which both r and j go up by one:
    [(i0, i1)] index ranges of pairs."""
    out, s0 = [], 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i][0] != pairs[i - 1][0] + 1 or \
                pairs[i][1] != pairs[i - 1][1] + 1:
            out.append((s0, i))
            s0 = i
    return out


def fetch(client, ptr, n_call, spans):
    """Fetch spans [(layer, token_start, k, v)] (torch tensors on one
    device) of a token call through shared blocks. Returns the spans'
    pieces still to fetch the ordinary way, [(layer, start, k, v)], or None
    when the daemon shares no blocks (nothing was done)."""
    _mark("start")
    torch = _arrays.torch()
    np = _arrays.np
    C = client.chunk_tokens
    row = client._row
    dev = spans[0][2].device
    cuda = dev.type == "cuda"
    if client._runs is None:
        client._runs = Runs(client)
    runs = client._runs
    dtype = _arrays.torch_dtype(client.model.dtype)
    heads = client._head_shape[0]
    compute = torch.cuda.current_stream(dev) if cuda else None
    side = None
    if cuda:
        from ._staged import _copy_stream
        side = _copy_stream(torch, dev)
    later, checks = [], []
    for g in range(0, len(spans), LOCATE_GROUP):
        group = spans[g:g + LOCATE_GROUP]
        entries = _locate(client, ptr, n_call, group)
        if entries is None:
            if g == 0:
                return None
            raise Error(errno.EPROTO, "fetch_tokens: the daemon stopped sharing its blocks")
        _mark("located")
        # The group's chunks in shared blocks, laid out as a lossless
        # chunk is (K of its C tokens, then V: chunk.h), in one run of
        # blocks side by side: one copy for the group. owner[i] = (span of
        # the group, chunk number) of the run's block i.
        ids, gens, owner, at = [], [], [], 0
        for si, (layer, start, k, v) in enumerate(group):
            n = k.shape[0]
            nch = _chunks(start, n, C)
            ent = entries[at:at + nch]
            at += nch
            chunk_no = start // C + np.arange(nch)
            pos = np.maximum(start, chunk_no * C) % C
            ok = (ent[:, 0] != 0) & (ent[:, 2] == pos * row) & (ent[:, 3] == ent[:, 2] + C * row)
            for j in np.nonzero(~ok)[0]:
                lo = max(start, int(chunk_no[j]) * C)
                later.append((layer, lo, min(start + n, lo - lo % C + C) - lo))
            use = np.nonzero(ok)[0]
            ids.extend(int(x) for x in ent[use, 0])
            gens.extend(int(x) for x in ent[use, 1])
            owner.extend((si, int(chunk_no[j])) for j in use)
        got = runs.get(ids, cuda) if ids else []
        placed = np.zeros(len(ids), dtype=bool)
        for j0, run in got:
            nb = len(run.ids)
            placed[j0:j0 + nb] = True
            stage = torch.empty((nb, run.stride), dtype=torch.uint8, device=dev)
            if cuda:
                with torch.cuda.stream(side):
                    stage.view(-1).copy_(run.data, non_blocking=True)
                compute.wait_stream(side)
            else:
                stage.view(-1).copy_(run.data)
            rows = stage[:, :2 * C * row].view(nb, 2, C, heads, -1).view(dtype)
            for si, (layer, start, k, v) in enumerate(group):
                pairs = [(r, owner[j0 + r][1]) for r in range(nb) if owner[j0 + r][0] == si]
                n = k.shape[0]
                for p0, p1 in _stretches(pairs):
                    r0, c0 = pairs[p0]
                    m = p1 - p0
                    lo, hi = max(start, c0 * C), min(start + n, (c0 + m) * C)
                    if lo == c0 * C and hi == (c0 + m) * C:
                        # Whole chunks: one strided copy each for K and V.
                        k[lo - start:hi - start].view(m, C, heads, -1).copy_(rows[r0:r0 + m, 0])
                        v[lo - start:hi - start].view(m, C, heads, -1).copy_(rows[r0:r0 + m, 1])
                        continue
                    for r, cn in pairs[p0:p1]:   # a stretch with a partial chunk
                        a, b = max(lo, cn * C), min(hi, cn * C + C)
                        k[a - start:b - start].copy_(rows[r, 0, a - cn * C:b - cn * C])
                        v[a - start:b - start].copy_(rows[r, 1, a - cn * C:b - cn * C])
            checks.append((run, np.array(gens[j0:j0 + nb], dtype=np.uint64),
                           [(group[owner[j0 + r][0]], owner[j0 + r][1]) for r in range(nb)]))
        for i in np.nonzero(~placed)[0]:    # blocks gone before they were mapped
            (layer, start, k, _), cn = group[owner[i][0]], owner[i][1]
            lo = max(start, cn * C)
            later.append((layer, lo, min(start + k.shape[0], cn * C + C) - lo))
    _mark("issued")
    if cuda:
        side.synchronize()               # every copy out of the blocks is done
    _mark("copied")
    for run, want, where in checks:
        for i in np.nonzero(run.tail_field(_GEN_AT) != want)[0]:
            (layer, start, k, _), cn = where[i]
            lo = max(start, cn * C)
            later.append((layer, lo, min(start + k.shape[0], cn * C + C) - lo))
    _mark("checked")
    rest = []
    for layer, s, n in later:
        for L, start, k, v in spans:
            if L == layer and start <= s < start + k.shape[0]:
                rest.append((layer, s, k[s - start:s - start + n], v[s - start:s - start + n]))
                break
    return rest
