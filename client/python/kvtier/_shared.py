"""_shared - fetches that copy rows straight out of the daemon's RAM.

A daemon started with share-hot keeps each chunk block of its hot tier in a
memfd of its own that only the daemon can write and that only ever holds
one sharing domain's chunks (docs/protocol.md, "Shared hot blocks"). A
fetch into torch tensors then asks where the rows lie (kvt_locate_tokens)
and copies them to the GPU from there: the host's memory is read once per
byte, by the GPU's copy engine, instead of read and written by the daemon
and read again by the GPU.

Copies of 1 MiB (one block) ran at 0.55-0.87 of the copy engine's rate,
32 MiB ones at 1.0 (docs/performance.md), so the blocks of a group of
spans' chunks are mapped side by side (kvt_block_map_run) and page-locked
together: one copy moves the group into a staging buffer laid out as the
blocks are (each block's K rows, then its V rows, then its tail page), and
the caller's stream moves the rows from there into the caller's tensors
(one copy each for K and V where their layers lie evenly spaced). Runs
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

import numpy as np

from . import _arrays
from ._lib import Block, Error, Located, Span, check, lib

# cudaHostRegisterPortable | cudaHostRegisterReadOnly: the mapping is
# PROT_READ, and the copy engine only reads it.
_REGISTER_FLAGS = 1 | 8
_TAIL = 4096                 # the block's last page: struct kvt_block_tail
_GEN_AT, _DEAD_AT = 16, 40   # offsets of gen and dead in it (proto.h)
MAX_RUNS = 4096
# A list that fetch appends (what, time.perf_counter()) marks to: start,
# located (per group of spans), issued, meanwhile, copied, checked. For
# profiling, and for tests that act between the copies and the gen check;
# None: no marks.
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


# Spans located per request: at least LOCATE_GROUP, and enough to move
# LOCATE_BYTES. The first copies start after a short locate, and the next
# spans are located while they run; short spans come in bigger groups, as
# each group costs a request and some Python.
LOCATE_GROUP = 4
LOCATE_BYTES = 64 << 20


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
    return np.frombuffer(located, dtype=np.uint64).reshape(total, 6)


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


def _piece(span, cn, C):
    """(layer, start, n): the tokens of span (layer, start, k, v) in chunk cn."""
    layer, start, k, _ = span
    lo = max(start, cn * C)
    return layer, lo, min(start + k.shape[0], cn * C + C) - lo


def _together(ts):
    """Tensors of one shape, strides and dtype, evenly spaced in memory
    (the layers of kvtier.hf.load's [layers, 1, heads, seq, dim] tensors),
    as one tensor [len(ts), *shape] over the same memory; else None."""
    torch = _arrays.torch()
    t0 = ts[0]
    step = ts[1].data_ptr() - t0.data_ptr() if len(ts) > 1 else 0
    es = t0.element_size()
    if step < 0 or step % es or (len(ts) > 1 and step == 0):
        return None
    for i, t in enumerate(ts):
        if t.shape != t0.shape or t.stride() != t0.stride() or t.dtype != t0.dtype \
                or t.device != t0.device or t.data_ptr() != t0.data_ptr() + i * step:
            return None
    try:     # out of t0's storage's bounds (another allocation): refused
        return torch.as_strided(t0, (len(ts),) + tuple(t0.shape), (step // es,) + t0.stride(),
                                t0.storage_offset())
    except RuntimeError:
        return None


def _copy_group(group, rows, C):
    """Copy a group's rows, rows [spans * chunks, 2, C, heads, dim] in span
    then chunk order, into the spans' K and V with one copy each for the
    whole chunks of every span and one for their partial last chunks:
    where the spans cover the same tokens from a chunk's start and their
    tensors lie evenly spaced in memory. False (nothing done) where not."""
    start, n = group[0][1], group[0][2].shape[0]
    if start % C or any(s != start or k.shape[0] != n for _, s, k, _ in group):
        return False
    kg = _together([k for _, _, k, _ in group])
    vg = _together([v for _, _, _, v in group]) if kg is not None else None
    if vg is None:
        return False
    g, m = len(group), n // C                 # m whole chunks, then n % C tokens
    rows = rows.view((g, rows.shape[0] // g) + tuple(rows.shape[1:]))
    for i, dst in ((0, kg), (1, vg)):
        if m:
            dst[:, :m * C].view(g, m, C, *dst.shape[2:]).copy_(rows[:, :m, i])
        if n % C:
            dst[:, m * C:].copy_(rows[:, m, i, :n % C])
    return True


def _copy_spans(group, rows, own_span, own_chunk, C):
    """Copy rows (as _copy_group's) of the run's blocks, block r holding
    chunk own_chunk[r] of span own_span[r], into the spans' K and V: one
    strided copy per stretch of whole chunks, one per partial chunk."""
    for si, (layer, start, k, v) in enumerate(group):
        sel = np.nonzero(own_span == si)[0]
        pairs = list(zip(sel.tolist(), own_chunk[sel].tolist()))
        n = k.shape[0]
        for p0, p1 in _stretches(pairs):
            r0, c0 = pairs[p0]
            m = p1 - p0
            lo, hi = max(start, c0 * C), min(start + n, (c0 + m) * C)
            if lo == c0 * C and hi == (c0 + m) * C:
                k[lo - start:hi - start].view(m, C, *k.shape[1:]).copy_(rows[r0:r0 + m, 0])
                v[lo - start:hi - start].view(m, C, *v.shape[1:]).copy_(rows[r0:r0 + m, 1])
                continue
            for r, cn in pairs[p0:p1]:   # a stretch with a partial chunk
                a, b = max(lo, cn * C), min(hi, cn * C + C)
                k[a - start:b - start].copy_(rows[r, 0, a - cn * C:b - cn * C])
                v[a - start:b - start].copy_(rows[r, 1, a - cn * C:b - cn * C])


def fetch(client, ptr, n_call, spans, meanwhile):
    """Fetch spans [(layer, token_start, k, v)] (torch tensors on one
    device) of a token call through shared blocks, calling meanwhile()
    once the copies are issued, before waiting for them. Returns the spans'
    pieces still to fetch the ordinary way, [(layer, start, k, v)], or None
    when the daemon shares no blocks (nothing was done, meanwhile not
    called)."""
    _mark("start")
    torch = _arrays.torch()
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
    per = max(LOCATE_GROUP, -(-LOCATE_BYTES // (2 * spans[0][2].shape[0] * row)))
    for g in range(0, len(spans), per):
        group = spans[g:g + per]
        entries = _locate(client, ptr, n_call, group)
        if entries is None:
            if g == 0:
                return None
            raise Error(errno.EPROTO, "fetch_tokens: the daemon stopped sharing its blocks")
        _mark("located")
        # The group's chunks in shared blocks, laid out as a lossless
        # chunk is (K of its C tokens, then V: chunk.h), in one run of
        # blocks side by side: one copy for the group. Entry i is chunk
        # chunk_no[i] of span span_of[i] of the group.
        starts = np.array([s for _, s, _, _ in group], dtype=np.int64)
        nchs = [_chunks(s, k.shape[0], C) for _, s, k, _ in group]
        span_of = np.repeat(np.arange(len(group)), nchs)
        first = np.cumsum([0] + nchs[:-1])
        chunk_no = starts[span_of] // C + np.arange(len(span_of)) - first[span_of]
        pos = (np.maximum(starts[span_of], chunk_no * C) % C).astype(np.uint64)
        ok = (entries[:, 0] != 0) & (entries[:, 2] == pos * np.uint64(row)) & \
            (entries[:, 3] == entries[:, 2] + np.uint64(C * row))
        for j in np.nonzero(~ok)[0]:
            later.append(_piece(group[span_of[j]], int(chunk_no[j]), C))
        use = np.nonzero(ok)[0]
        ids, gens = entries[use, 0].tolist(), entries[use, 1]
        own_span, own_chunk = span_of[use], chunk_no[use]
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
            if not (nb == len(entries) and _copy_group(group, rows, C)):
                _copy_spans(group, rows, own_span[j0:j0 + nb], own_chunk[j0:j0 + nb], C)
            checks.append((run, gens[j0:j0 + nb], group, own_span[j0:j0 + nb],
                           own_chunk[j0:j0 + nb]))
        for i in np.nonzero(~placed)[0]:    # blocks gone before they were mapped
            later.append(_piece(group[own_span[i]], int(own_chunk[i]), C))
    _mark("issued")
    meanwhile()
    _mark("meanwhile")
    if cuda:
        side.synchronize()               # every copy out of the blocks is done
    _mark("copied")
    for run, want, group, own_span, own_chunk in checks:
        for i in np.nonzero(run.tail_field(_GEN_AT) != want)[0]:
            later.append(_piece(group[own_span[i]], int(own_chunk[i]), C))
    _mark("checked")
    rest = []
    for layer, s, n in later:
        for L, start, k, v in spans:
            if L == layer and start <= s < start + k.shape[0]:
                rest.append((layer, s, k[s - start:s - start + n], v[s - start:s - start + n]))
                break
    return rest
