"""_client - kvtier.Model, kvtier.connect and kvtier.Client."""
import concurrent.futures
import ctypes
import errno
import os
import sys
import threading

from . import _arrays, _shared, _staged
from ._lib import Error, Span, _Model, check, error, lib


class Model:
    """A model namespace: clients with the same name, geometry and
    chunk_tokens share stored KV, whatever their dtype."""

    def __init__(self, name, n_layers, n_kv_heads, head_dim, dtype="float16", chunk_tokens=0):
        self.name = name
        self.n_layers, self.n_kv_heads, self.head_dim = int(n_layers), int(n_kv_heads), int(head_dim)
        self.dtype = _arrays.dtype_name(dtype)
        self.chunk_tokens = int(chunk_tokens)

    def __repr__(self):
        return ("kvtier.Model(%r, n_layers=%d, n_kv_heads=%d, head_dim=%d, dtype=%r, "
                "chunk_tokens=%d)" % (self.name, self.n_layers, self.n_kv_heads, self.head_dim,
                                      self.dtype, self.chunk_tokens))


def connect(model, socket=None, shm_bytes=0):
    """Connect to kvtierd (socket None: $KVTIER_SOCKET, else the default) and
    attach to model's namespace. shm_bytes: size of the shared region that
    alloc() and staging carve up (0: $KVTIER_SHM_BYTES, else 256 MiB; the
    daemon refuses more than its max-client-shm)."""
    return Client(model, socket, shm_bytes)


def _u32(value, what):
    value = int(value)
    if not 0 <= value < 2**32:
        raise Error(errno.EINVAL, "%s must be 0..2^32-1, got %d" % (what, value))
    return value


def _nothing():
    pass


def _ctx(ctx):
    if isinstance(ctx, str):
        ctx = ctx.encode()
    if not isinstance(ctx, bytes) or b"\0" in ctx:
        raise Error(errno.EINVAL, "context name must be a str or bytes without NUL")
    return ctx


class Client:
    """One connection (kvt_client). Use it from one thread at a time, or
    one Client per thread. A context manager: closing frees alloc() memory."""

    def __init__(self, model, socket=None, shm_bytes=0):
        if not isinstance(model, Model):
            raise Error(errno.EINVAL, "model must be a kvtier.Model")
        self.model = model
        self._h = None
        self._pool = None
        self._unpin = None
        self._pinned = False
        # KVTIER_RAW_CUDA: 1 (default) fetches into CUDA tensors move raw
        # int8 rows; 0 never; "all" any torch tensors, the CPU's too (tests).
        raw_env = os.environ.get("KVTIER_RAW_CUDA", "1")
        self._raw_cuda = raw_env != "0"
        self._raw_any_device = raw_env == "all"
        self.raw_fetches = 0       # fetch_tokens calls served by raw rows
        self.raw_oom_fallbacks = 0 # raw fetches redone as values: GPU out of memory
        self.pin_error = None      # why the region is not page-locked, once asked
        self._shared_mode = _shared.mode()
        self._shared_off = self._shared_mode == "0"
        self._runs = None          # _shared.Runs once a fetch used shared blocks
        self.shared_fetches = 0    # fetch_tokens calls served from shared blocks
        self.shared_refetched = 0  # ... pieces of them fetched again (changed, not in RAM)
        name = model.name.encode() if isinstance(model.name, str) else model.name
        self._cmodel = _Model(name, model.n_layers, model.n_kv_heads, model.head_dim,
                              _arrays.DTYPES[model.dtype], model.chunk_tokens)
        h = ctypes.c_void_p()
        sock = socket.encode() if isinstance(socket, str) else socket
        rc = lib.kvt_connect_region(sock, ctypes.byref(self._cmodel), int(shm_bytes), ctypes.byref(h))
        if rc < 0:
            reason = lib.kvt_last_error(None)
            raise error(-rc, "connect", reason.decode(errors="replace") if reason else "")
        self._h = h
        self._head_shape = (model.n_kv_heads, model.head_dim)
        self._row = model.n_kv_heads * model.head_dim * _arrays.ITEMSIZE[model.dtype]
        base, size = ctypes.c_void_p(), ctypes.c_size_t()
        check(lib.kvt_region(h, ctypes.byref(base), ctypes.byref(size)), h, "region")
        self.region = (base.value, size.value)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            self.pin_cuda()        # the process already has a CUDA context: no cost to ask

    # ---- lifetime ------------------------------------------------------
    def close(self):
        """Disconnect; alloc() arrays must not be used afterwards."""
        if self._h is None:
            return
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._runs is not None:
            self._runs.close()
            self._runs = None
        if self._unpin is not None:
            self._unpin()
            self._unpin = None
        lib.kvt_disconnect(self._h)
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        return self._h is None

    def _handle(self):
        if self._h is None:
            raise Error(errno.EBADF, "the kvtier client is closed")
        return self._h

    def _worker(self):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kvtier")
        return self._pool

    @property
    def chunk_tokens(self):
        """Tokens per chunk the daemon uses for this namespace."""
        return lib.kvt_chunk_tokens(self._handle())

    @property
    def raw_outliers(self):
        """Outliers per vector the daemon keeps in the int8 chunks it makes
        (what fetch_tokens_raw asks for by default); None when it is lossless."""
        rc = lib.kvt_raw_outliers(self._handle())
        return None if rc < 0 else rc

    def pin_cuda(self):
        """Register the shared region with CUDA (page-locked) once; done by
        itself on first use of a CUDA tensor. False when it could not be
        (no CUDA, or the runtime refused: pin_error says why), and CUDA
        copies then run at pageable speed."""
        self._handle()
        if not self._pinned and self.pin_error is None:
            self._unpin, self.pin_error = _staged.register_cuda(*self.region)
            self._pinned = self._unpin is not None
        return self._pinned

    # ---- buffers -------------------------------------------------------
    def alloc(self, shape, dtype=None):
        """A numpy array (torch tensor for bfloat16) in the shared region:
        spans over it are read and written by the daemon in place."""
        h = self._handle()
        dtype = _arrays.dtype_name(dtype or self.model.dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(int(x) for x in shape)
        n = _arrays.ITEMSIZE[dtype]
        for x in shape:
            if x < 0:
                raise Error(errno.EINVAL, "alloc shape %s has a negative size" % (shape,))
            n *= x
        p = lib.kvt_alloc(h, n) if n else None
        if not p:
            raise Error(errno.ENOMEM, "alloc of %d bytes: the shared region (%d bytes) has no "
                        "such free block; connect with shm_bytes= or set KVTIER_SHM_BYTES "
                        "(at most the daemon's max-client-shm)" % (n, self.region[1]))
        return _arrays.typed(_arrays.view(p, n), dtype, shape, False)

    # ---- spans ---------------------------------------------------------
    def _spans(self, items):
        """Checked (layer, token_start, k, v) tuples."""
        out, cuda = [], False
        for it in items:
            try:
                layer, start, k, v = it
            except (TypeError, ValueError):
                raise Error(errno.EINVAL, "a span is (layer, token_start, k, v)")
            layer, start = _u32(layer, "layer"), _u32(start, "token_start")
            n = k.shape[0] if hasattr(k, "shape") and len(k.shape) == 3 else -1
            shape = (n,) + self._head_shape
            _arrays.check_buffer(k, "k", shape, self.model.dtype)
            _arrays.check_buffer(v, "v", shape, self.model.dtype)
            if n == 0:
                raise Error(errno.EINVAL, "a span has zero tokens")
            cuda = cuda or _arrays.is_cuda(k) or _arrays.is_cuda(v)
            out.append((layer, start, k, v))
        if not out:
            raise Error(errno.EINVAL, "no spans")
        if cuda:
            self.pin_cuda()
        return out

    def _spans_call(self, spans, store, call_batch, what):
        """One C batch call when every buffer is dense on the CPU, else
        the staged pipeline (one call per piece of one or more layers)."""
        h = self._handle()
        if not _staged.spans_need_staging(spans):
            arr = (Span * len(spans))()
            for i, (layer, start, k, v) in enumerate(spans):
                arr[i] = Span(layer, start, k.shape[0], _arrays.direct_pointer(k, not store),
                              _arrays.direct_pointer(v, not store))
            check(call_batch(h, arr, len(spans)), h, what)
            return

        def some(group):
            arr = (Span * len(group))(*group)
            check(call_batch(h, arr, len(group)), h, what)
        _staged.run(self, spans, store, some)

    def store_batch(self, ctx, spans):
        """spans: [(layer, token_start, k, v), ...], k and v [n, heads, dim]."""
        name = _ctx(ctx)
        self._spans_call(self._spans(spans), True,
                         lambda h, s, n: lib.kvt_store_batch(h, name, s, n), "store")

    def fetch_batch(self, ctx, spans):
        """spans: [(layer, token_start, k_out, v_out), ...]; fills them."""
        name = _ctx(ctx)
        self._spans_call(self._spans(spans), False,
                         lambda h, s, n: lib.kvt_fetch_batch(h, name, s, n), "fetch")

    def store(self, ctx, layer, token_start, k, v):
        self.store_batch(ctx, [(layer, token_start, k, v)])

    def fetch(self, ctx, layer, token_start, n_tokens, out=None):
        """New arrays of the model dtype (torch for bfloat16), or fills
        out=(k, v) (any arrays or tensors, CPU or CUDA) and returns it."""
        if out is None:
            n = _u32(n_tokens, "n_tokens")
            out = (_arrays.empty((n,) + self._head_shape, self.model.dtype),
                   _arrays.empty((n,) + self._head_shape, self.model.dtype))
        elif len(out) != 2 or out[0].shape[0] != n_tokens:
            raise Error(errno.EINVAL, "out must be (k, v), each [n_tokens=%d, heads, dim]" % n_tokens)
        self.fetch_batch(ctx, [(layer, token_start, out[0], out[1])])
        return out

    def length(self, ctx):
        """L such that tokens [0, L) are present in every layer."""
        h, n = self._handle(), ctypes.c_uint32()
        check(lib.kvt_length(h, _ctx(ctx), ctypes.byref(n)), h, "length")
        return n.value

    def drop(self, ctx):
        h = self._handle()
        check(lib.kvt_drop(h, _ctx(ctx)), h, "drop")

    def sync(self):
        h = self._handle()
        check(lib.kvt_sync(h), h, "sync")

    # ---- token-addressed prefixes -------------------------------------
    def _tokens(self, tokens):
        arr = _arrays.tokens_array(tokens)
        if len(arr) == 0:
            raise Error(errno.EINVAL, "no tokens")
        ptr = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        return arr, ptr

    def _layer_spans(self, kv, n, write):
        items = kv.items() if isinstance(kv, dict) else enumerate(kv)
        spans = []
        for layer, pair in items:
            try:
                k, v = pair
            except (TypeError, ValueError):
                raise Error(errno.EINVAL, "kv[layer] must be a (k, v) pair")
            if k.shape[0] != n or v.shape[0] != n:
                raise Error(errno.EINVAL, "kv[%d] holds %d tokens, the call has %d"
                            % (layer, k.shape[0], n))
            spans.append((layer, 0, k, v))
        return self._spans(spans)

    def store_tokens(self, tokens, kv):
        """Store KV addressed by token ids: kv[layer] = (k, v), each
        [len(tokens), heads, dim] (a list over layers, or a dict)."""
        arr, ptr = self._tokens(tokens)
        spans = self._layer_spans(kv, len(arr), False)
        self._spans_call(spans, True,
                         lambda h, s, n: lib.kvt_store_tokens(h, ptr, len(arr), s, n),
                         "store_tokens")

    def match_tokens(self, tokens):
        """Largest L such that the KV of tokens[:L] is stored in every layer."""
        h = self._handle()
        arr, ptr = self._tokens(tokens)
        n = ctypes.c_uint32()
        check(lib.kvt_match_tokens(h, ptr, len(arr), ctypes.byref(n)), h, "match_tokens")
        return n.value

    def fetch_tokens(self, tokens, out=None, layers=None):
        """The KV of tokens (all of them, which must be stored): a list over
        layers of (k, v) new arrays, or out (same form as store_tokens' kv,
        any arrays or tensors) filled and returned. layers: a subset."""
        return self._fetch_tokens(tokens, out, layers)

    def _fetch_tokens(self, tokens, out=None, layers=None, meanwhile=None):
        """fetch_tokens, calling meanwhile() once while the copies into out
        run where they run asynchronously (a shared-block fetch into CUDA
        tensors), else after them: work on the CPU that needs out's tensors
        but not their contents (kvtier.hf builds its cache there). Not
        called when the fetch fails."""
        if meanwhile is None:
            meanwhile = _nothing
        arr, ptr = self._tokens(tokens)
        n = len(arr)
        if out is None:
            shape = (n,) + self._head_shape
            want = range(self.model.n_layers) if layers is None else layers
            out = [(_arrays.empty(shape, self.model.dtype), _arrays.empty(shape, self.model.dtype))
                   for _ in want]
            kv = dict(zip(want, out))
        else:
            kv = out
        spans = self._layer_spans(kv, n, True)
        if (self._raw_cuda and _staged.raw_fits(spans, self._raw_any_device)
                and self._fetch_raw_cuda(ptr, n, spans)):
            meanwhile()
            return out
        if (not self._shared_off
                and _staged.raw_fits(spans, self._shared_mode == "all")):
            rest = _shared.fetch(self, ptr, n, spans, meanwhile)
            if rest is None:
                self._shared_off = True       # the daemon shares no blocks
            else:
                self.shared_fetches += 1
                self.shared_refetched += len(rest)
                if rest:
                    self._spans_call(rest, False,
                                     lambda h, s, m: lib.kvt_fetch_tokens(h, ptr, n, s, m),
                                     "fetch_tokens")
                return out
        self._spans_call(spans, False,
                         lambda h, s, m: lib.kvt_fetch_tokens(h, ptr, n, s, m), "fetch_tokens")
        meanwhile()
        return out

    def _fetch_raw_cuda(self, ptr, n, spans):
        """Fetch into CUDA tensors as raw int8 rows, dequantized on the GPU
        (bit-identical; fewer bytes cross PCIe): True when done, False when
        the daemon cannot (lossless, a chunk with more outliers than it
        keeps now, a daemon without raw fetch) and the caller fetches values."""
        o = self.raw_outliers
        if o is None:
            return False
        h = self._handle()
        # The daemon's count, then (chunks made under a larger setting) the
        # most a chunk can hold; then values.
        for asked in (o, 16) if o < 16 else (o,):
            def some(group):
                arr = (Span * len(group))(*group)
                check(lib.kvt_fetch_tokens_raw(h, ptr, n, arr, len(group), asked), h,
                      "fetch_tokens")
            try:
                _staged.run(self, spans, False, some, raw_outliers=asked)
            except Error as e:
                if e.errno == errno.EBADMSG:
                    self._raw_cuda = False    # a daemon without raw fetch
                    return False
                if e.errno == errno.ERANGE:
                    continue
                if e.errno == errno.EOPNOTSUPP:
                    return False
                raise
            except RuntimeError as e:
                # The GPU had no room for a piece's raw rows or their
                # dequantization: the value fetch needs none (it copies
                # into the caller's tensors), and rewrites every row.
                if "out of memory" not in str(e):
                    raise
                self.raw_oom_fallbacks += 1
                return False
            self.raw_fetches += 1
            return True
        return False

    def fetch_tokens_raw(self, tokens, outliers=None, layers=None):
        """The stored int8 rows of tokens (int8 daemons only): a list over
        layers of (k, v) uint8 numpy arrays [len(tokens), row_bytes], each
        row `float scale[H]; u16 out_idx[H][O]; u16 out_val[H][O] (f16);
        int8 q[H][D]` (O = outliers). kvtier.raw.dequantize turns them into
        values bit-identical to fetch_tokens'. outliers: default the
        daemon's (raw_outliers). Raises Error: EOPNOTSUPP
        (lossless daemon or one without raw fetch), ERANGE (a chunk holds
        more outliers than asked)."""
        h = self._handle()
        arr, ptr = self._tokens(tokens)
        n = len(arr)
        if outliers is None:
            outliers = self.raw_outliers
            if outliers is None:
                raise Error(errno.EOPNOTSUPP, "fetch_tokens_raw: the daemon is lossless")
        row = lib.kvt_raw_row_bytes(h, outliers)
        if row == 0:
            raise Error(errno.EINVAL, "fetch_tokens_raw: outliers must be 0..16")
        want = list(range(self.model.n_layers) if layers is None else layers)
        ptrs = []
        try:
            for _ in range(2 * len(want)):
                p = lib.kvt_alloc(h, n * row)
                if not p:
                    raise Error(errno.ENOMEM, "fetch_tokens_raw: the shared region has no "
                                "free block of %d bytes" % (n * row))
                ptrs.append(p)
            bufs = [tuple(_arrays.view(p, n * row).reshape(n, row) for p in ptrs[2 * i:2 * i + 2])
                    for i in range(len(want))]
            spans = (Span * len(want))()
            for i, layer in enumerate(want):
                spans[i] = Span(layer, 0, n, ptrs[2 * i], ptrs[2 * i + 1])
            check(lib.kvt_fetch_tokens_raw(h, ptr, n, spans, len(want), outliers), h,
                  "fetch_tokens_raw")
            return [(k.copy(), v.copy()) for k, v in bufs]
        finally:
            for p in ptrs:
                lib.kvt_free(h, p)
