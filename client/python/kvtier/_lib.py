"""_lib - libkvtier through ctypes: loading, the C structs, errors.

ctypes, not a C extension or cffi: it is in every python3, so the package
needs no compiler, no python3-dev and no build step to install or to run
from a build tree, and it releases the GIL during each call, which the
layer-by-layer CUDA pipeline relies on (the daemon fills layer i+1 on one
thread while this one copies layer i to the GPU). A call costs about a
microsecond more than from C; the calls move megabytes.
"""
import ctypes
import errno as _errno
import os

_u32 = ctypes.c_uint32


class _Model(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("n_layers", _u32), ("n_kv_heads", _u32),
                ("head_dim", _u32), ("dtype", ctypes.c_int), ("chunk_tokens", _u32)]


class Span(ctypes.Structure):
    _fields_ = [("layer", _u32), ("token_start", _u32), ("n_tokens", _u32),
                ("k", ctypes.c_void_p), ("v", ctypes.c_void_p)]


class Located(ctypes.Structure):
    _fields_ = [("block", ctypes.c_uint64), ("gen", ctypes.c_uint64), ("k_at", ctypes.c_uint64),
                ("v_at", ctypes.c_uint64), ("span", _u32), ("tok", _u32), ("n", _u32),
                ("reserved", _u32)]


class Block(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("base", ctypes.c_void_p), ("map_bytes", ctypes.c_size_t),
                ("data_bytes", ctypes.c_size_t)]


class Error(OSError):
    """A libkvtier call failed: .errno is the positive errno value, .strerror
    the daemon's or the library's reason."""


class NotFound(Error, KeyError):
    """The data asked for is absent (never stored, dropped or evicted)."""

    __str__ = OSError.__str__


def _candidates():
    """Where libkvtier may be: $KVTIER_LIB, $KVTIER_BUILD, the build tree
    this package sits in (client/python/kvtier -> build/), the loader's
    search path (LD_LIBRARY_PATH, the installed library)."""
    if os.environ.get("KVTIER_LIB"):
        yield os.environ["KVTIER_LIB"]
        return
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.normpath(os.path.join(here, "..", "..", ".."))
    if os.environ.get("KVTIER_BUILD"):
        yield os.path.join(tree, os.environ["KVTIER_BUILD"], "libkvtier.so")
        yield os.path.join(os.environ["KVTIER_BUILD"], "libkvtier.so")
    if os.path.exists(os.path.join(tree, "client", "kvtier.h")):
        yield os.path.join(tree, "build", "libkvtier.so")
    yield "libkvtier.so.0"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("kvtier: cannot load libkvtier; tried " + "; ".join(tried) +
                      ". Set KVTIER_LIB to its path or LD_LIBRARY_PATH to its folder.")


lib = _load()
_c = ctypes.c_void_p
_p32 = ctypes.POINTER(_u32)
_i32p = ctypes.POINTER(ctypes.c_int32)
_spans = ctypes.POINTER(Span)
for name, res, args in [
    ("kvt_connect_region", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_Model), ctypes.c_size_t,
                                          ctypes.POINTER(_c)]),
    ("kvt_disconnect", None, [_c]),
    ("kvt_strerror", ctypes.c_char_p, [ctypes.c_int]),
    ("kvt_last_error", ctypes.c_char_p, [_c]),
    ("kvt_chunk_tokens", _u32, [_c]),
    ("kvt_region", ctypes.c_int, [_c, ctypes.POINTER(_c), ctypes.POINTER(ctypes.c_size_t)]),
    ("kvt_store_batch", ctypes.c_int, [_c, ctypes.c_char_p, _spans, ctypes.c_size_t]),
    ("kvt_fetch_batch", ctypes.c_int, [_c, ctypes.c_char_p, _spans, ctypes.c_size_t]),
    ("kvt_length", ctypes.c_int, [_c, ctypes.c_char_p, _p32]),
    ("kvt_drop", ctypes.c_int, [_c, ctypes.c_char_p]),
    ("kvt_sync", ctypes.c_int, [_c]),
    ("kvt_store_tokens", ctypes.c_int, [_c, _i32p, _u32, _spans, ctypes.c_size_t]),
    ("kvt_fetch_tokens", ctypes.c_int, [_c, _i32p, _u32, _spans, ctypes.c_size_t]),
    ("kvt_match_tokens", ctypes.c_int, [_c, _i32p, _u32, _p32]),
    ("kvt_fetch_tokens_raw", ctypes.c_int, [_c, _i32p, _u32, _spans, _u32, _u32]),
    ("kvt_raw_row_bytes", ctypes.c_size_t, [_c, _u32]),
    ("kvt_raw_outliers", ctypes.c_int, [_c]),
    ("kvt_locate_tokens", ctypes.c_int, [_c, _i32p, _u32, _spans, ctypes.c_size_t,
                                         ctypes.POINTER(Located), ctypes.c_size_t,
                                         ctypes.POINTER(ctypes.c_size_t)]),
    ("kvt_block_map", ctypes.c_int, [_c, ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t,
                                     ctypes.POINTER(Block)]),
    ("kvt_block_map_run", ctypes.c_int, [_c, ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t,
                                         ctypes.POINTER(Block), ctypes.POINTER(_c)]),
    ("kvt_block_unmap", None, [ctypes.POINTER(Block)]),
    ("kvt_block_gen", ctypes.c_uint64, [ctypes.POINTER(Block)]),
    ("kvt_block_dead", ctypes.c_int, [ctypes.POINTER(Block)]),
    ("kvt_alloc", _c, [_c, ctypes.c_size_t]),
    ("kvt_free", None, [_c, _c]),
]:
    fn = getattr(lib, name)
    fn.restype = res
    fn.argtypes = args


def error(err, what, reason=""):
    """The exception for errno value err (positive) of call `what`."""
    text = reason or lib.kvt_strerror(-err).decode(errors="replace")
    cls = NotFound if err == _errno.ENOENT and what != "connect" else Error
    return cls(err, "%s: %s" % (what, text))


def check(rc, handle, what):
    """Raise for a negative return code, with the handle's reason."""
    if rc >= 0:
        return rc
    reason = lib.kvt_last_error(handle)
    raise error(-rc, what, reason.decode(errors="replace") if reason else "")
