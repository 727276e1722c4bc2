"""_arrays - numpy arrays and torch tensors as libkvtier buffers.

Buffers are per layer [n_tokens, n_kv_heads, head_dim] in the model dtype.
A dense CPU buffer goes to the C library as a pointer (into the shared
region when it came from Client.alloc: zero copy). Anything else, strided
or on a GPU, goes through region staging buffers (see _staged).
"""
import ctypes
import errno
import sys

import numpy as np

from ._lib import Error

DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
NUMPY = {"float32": np.float32, "float16": np.float16}


def torch():
    """torch if the caller has it (imported or importable), else None."""
    mod = sys.modules.get("torch")
    if mod is not None:
        return mod
    try:
        import torch as mod
    except ImportError:
        return None
    return mod


def dtype_name(dtype):
    """'float32', 'float16' or 'bfloat16' from a name, numpy or torch dtype."""
    if isinstance(dtype, str):
        name = {"f32": "float32", "f16": "float16", "bf16": "bfloat16",
                "half": "float16", "float": "float32"}.get(dtype, dtype)
    else:
        name = str(dtype).replace("torch.", "")
        if not name.startswith("bfloat"):
            try:
                name = np.dtype(dtype).name
            except TypeError:
                pass
    if name not in DTYPES:
        raise Error(errno.EINVAL, "dtype must be float32, float16 or bfloat16, not %r" % (dtype,))
    return name


def is_torch(a):
    t = sys.modules.get("torch")
    return t is not None and isinstance(a, t.Tensor)


def is_cuda(a):
    return is_torch(a) and a.device.type != "cpu"


_ELEM_NAMES = {}     # dtype object -> elem_name's answer: checks of many tensors


def elem_name(a):
    """The dtype name of an array or tensor, '' for one kvtier cannot take."""
    name = _ELEM_NAMES.get(a.dtype)
    if name is None:
        try:
            name = dtype_name(a.dtype)
        except Error:
            name = ""
        _ELEM_NAMES[a.dtype] = name
    return name


def check_buffer(a, what, shape, dtype):
    """Refuse an array of the wrong kind, shape or dtype (EINVAL)."""
    if not (isinstance(a, np.ndarray) or is_torch(a)):
        raise Error(errno.EINVAL, "%s must be a numpy array or torch tensor, not %s"
                    % (what, type(a).__name__))
    if tuple(a.shape) != tuple(shape):
        raise Error(errno.EINVAL, "%s has shape %s, want %s [n_tokens, n_kv_heads, head_dim]"
                    % (what, tuple(a.shape), tuple(shape)))
    if elem_name(a) != dtype:
        raise Error(errno.EINVAL, "%s is %s, the model's dtype is %s" % (what, a.dtype, dtype))


def direct_pointer(a, write):
    """The address of a dense CPU buffer, None if it must be staged."""
    if isinstance(a, np.ndarray):
        if write and not a.flags.writeable:
            raise Error(errno.EINVAL, "a fetch cannot write into a read-only array")
        return a.ctypes.data if a.flags.c_contiguous else None
    if a.device.type == "cpu" and a.is_contiguous():
        return a.data_ptr()
    return None


def view(addr, nbytes):
    """A uint8 numpy array over nbytes at addr (memory it does not own)."""
    return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(addr), dtype=np.uint8)


def typed(raw, dtype, shape, as_torch):
    """raw (uint8 numpy) as an array of dtype and shape: numpy, or torch when
    as_torch or bfloat16 (numpy has none). Shares raw's memory."""
    if dtype == "bfloat16" or as_torch:
        t = torch()
        if t is None:
            raise Error(errno.EOPNOTSUPP, "bfloat16 buffers need torch (numpy has no bfloat16)")
        return t.from_numpy(raw).view(torch_dtype(dtype)).view(*shape)
    return raw.view(NUMPY[dtype]).reshape(shape)


def torch_dtype(name):
    """The torch dtype of a dtype name ('float32', 'float16', 'bfloat16')."""
    t = torch()
    return {"float32": t.float32, "float16": t.float16, "bfloat16": t.bfloat16}[name]


def empty(shape, dtype):
    """A new dense CPU buffer: numpy, or torch for bfloat16."""
    if dtype == "bfloat16":
        t = torch()
        if t is None:
            raise Error(errno.EOPNOTSUPP, "a bfloat16 model returns torch tensors: install torch")
        return t.empty(shape, dtype=t.bfloat16)
    return np.empty(shape, dtype=NUMPY[dtype])


def tokens_array(tokens):
    """Any sequence of ints (list, numpy, torch) as dense int32 numpy."""
    if is_torch(tokens):
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]          # [batch=1, seq], as transformers passes input_ids
    if arr.ndim != 1:
        raise Error(errno.EINVAL, "tokens must be one sequence of ints, got shape %s" % (arr.shape,))
    if arr.size and arr.dtype.kind not in "iu":
        raise Error(errno.EINVAL, "tokens must be ints, got %s" % arr.dtype)
    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
        raise Error(errno.EINVAL, "token ids must fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)
