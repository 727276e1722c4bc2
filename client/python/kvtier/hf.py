"""kvtier.hf - transformers KV caches saved and restored by token prefix.

    kvtier.hf.save(c, input_ids, past_key_values)     # after a prefill
    cache, n = kvtier.hf.load(c, input_ids, device="cuda")
    out = model(input_ids[:, n:], past_key_values=cache)   # n < len: see load

Caches are legacy tuples of (k, v) per layer or a transformers Cache
(DynamicCache), each tensor [batch=1, kv_heads, seq, head_dim]. kvtier keeps
KV token-major ([seq, heads, dim] per layer); the transposed views are passed
as they are, and made dense on the tensors' own device while they cross.
Needs torch; transformers only to build a DynamicCache on load.
"""
import errno

from . import _arrays
from ._lib import Error


def _torch():
    t = _arrays.torch()
    if t is None:
        raise Error(errno.EOPNOTSUPP, "kvtier.hf needs torch")
    return t


def _layers(cache):
    """[(k, v)] per layer from a legacy tuple or a transformers Cache of
    any version (.layers of .keys/.values, .key_cache/.value_cache lists,
    or to_legacy_cache)."""
    layers = getattr(cache, "layers", None)
    if layers is not None and all(hasattr(x, "keys") for x in layers):
        return [(x.keys, x.values) for x in layers]
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    if hasattr(cache, "to_legacy_cache"):
        cache = cache.to_legacy_cache()
    try:
        return [(kv[0], kv[1]) for kv in cache]
    except (TypeError, IndexError, KeyError):
        raise Error(errno.EINVAL, "past_key_values must be a tuple of (k, v) per layer "
                    "or a transformers DynamicCache")


def _token_major(t, c, what):
    """[1, heads, seq, dim] -> a [seq, heads, dim] view (no copy)."""
    m = c.model
    if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != m.n_kv_heads or t.shape[3] != m.head_dim:
        raise Error(errno.EINVAL, "%s has shape %s, want [1, %d, seq, %d] (batch 1, the "
                    "model's kv heads and head dim)" % (what, tuple(t.shape), m.n_kv_heads,
                                                        m.head_dim))
    return t[0].permute(1, 0, 2)


def save(c, input_ids, past_key_values):
    """Store the cache's KV of input_ids (its first len(input_ids) positions,
    or as many as it holds) by token prefix; returns the tokens stored."""
    torch = _torch()
    tokens = _arrays.tokens_array(input_ids)
    layers = _layers(past_key_values)
    if len(layers) != c.model.n_layers:
        raise Error(errno.EINVAL, "the cache has %d layers, the model %d"
                    % (len(layers), c.model.n_layers))
    kv = []
    for i, (k, v) in enumerate(layers):
        k, v = _token_major(k, c, "layer %d key" % i), _token_major(v, c, "layer %d value" % i)
        kv.append((k, v))
    n = min(len(tokens), kv[0][0].shape[0])
    if n == 0:
        return 0
    want = _arrays.torch_dtype(c.model.dtype)
    kv = [(k[:n].to(want), v[:n].to(want)) for k, v in kv]
    c.store_tokens(tokens[:n], kv)
    return n


def _dynamic_cache(layers):
    try:
        from transformers import DynamicCache
    except ImportError:
        return None
    cache = DynamicCache()
    if _adopt(cache, layers):
        return cache
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def _adopt(cache, layers):
    """Newer DynamicCaches (a .layers list) copy what the first update
    gives them (a cat onto an empty tensor): 1 GiB more GPU memory and a
    few ms for an 8192-token Llama-3-8B prefix. Start each layer with no
    tokens, then hand it the loaded tensors themselves. False, for the
    plain update path, where this cache is of another shape."""
    if not hasattr(cache, "layers"):
        return False
    try:
        for i, (k, v) in enumerate(layers):
            cache.update(k[..., :0, :], v[..., :0, :], i)
            layer = cache.layers[i]
            if not (hasattr(layer, "keys") and hasattr(layer, "values")):
                return False
            layer.keys, layer.values = k, v
        n = layers[0][0].shape[-2] if layers else 0
        return all(cache.get_seq_length(i) == n for i in range(len(layers)))
    except (AttributeError, TypeError, IndexError, RuntimeError):
        return False


def _longest_prefix(c, tokens):
    """match_tokens stops at a chunk boundary unless all of tokens is
    stored; a saved prompt that ends inside the next chunk (a chat's earlier
    turn) is found by asking for each shorter length of that chunk, longest
    first: at most chunk_tokens - 1 small calls, only when the first
    answer falls short of a whole-prompt hit."""
    n = c.match_tokens(tokens)
    chunk = c.chunk_tokens
    if n == len(tokens) or not chunk or n % chunk:
        return n
    for m in range(min(len(tokens) - 1, n + chunk - 1), n, -1):
        if c.match_tokens(tokens[:m]) == m:
            return m
    return n


def _layer_views(t):
    """Per-layer [seq, heads, dim] views of t [layers, 1, heads, seq, dim]."""
    return t[:, 0].permute(0, 2, 1, 3).unbind(0)


def load(c, input_ids, device="cpu", dtype=None, legacy=None):
    """(cache, n): the KV of the longest stored prefix of input_ids and its
    length n, each layer [1, heads, n, dim] on device in dtype (default the
    model's), as a DynamicCache when transformers imports (legacy=True:
    the tuple of (k, v) per layer), or (None, 0) when nothing is stored.
    The caller evaluates input_ids[n:]; when n == len(input_ids) it must
    still feed one token to get logits (load a prefix one shorter)."""
    torch = _torch()
    tokens = _arrays.tokens_array(input_ids)
    if len(tokens) == 0:
        return None, 0
    n = _longest_prefix(c, tokens)
    if n == 0:
        return None, 0
    m = c.model
    model_dtype = _arrays.torch_dtype(m.dtype)
    dtype = dtype or model_dtype
    device = torch.device(device)
    # One allocation per K and V of all layers, filled through per-layer
    # [n, heads, dim] views (strided: the staging makes them dense).
    shape = (m.n_layers, 1, m.n_kv_heads, n, m.head_dim)
    k_all = torch.empty(shape, dtype=model_dtype, device=device)
    v_all = torch.empty(shape, dtype=model_dtype, device=device)
    out = list(zip(_layer_views(k_all), _layer_views(v_all)))
    made = []

    def build():
        # The cache holds the tensors, not their contents: built while the
        # rows cross to the GPU (a shared-block fetch), 1 ms off a restore.
        layers = tuple(zip(k_all.unbind(0), v_all.unbind(0)))
        made.append(layers if legacy else (_dynamic_cache(layers) or layers))

    if dtype == model_dtype:
        c._fetch_tokens(tokens[:n], out=out, meanwhile=build)
    else:
        c.fetch_tokens(tokens[:n], out=out)
        k_all, v_all = k_all.to(dtype), v_all.to(dtype)
        build()
    return made[0], n
