"""kvtier - the kvtier KV-cache store for Python engines, over libkvtier.

    import kvtier
    m = kvtier.Model("llama-3.1-8b", n_layers=32, n_kv_heads=8, head_dim=128,
                     dtype="float16")
    with kvtier.connect(m) as c:
        c.store_tokens(tokens, kv)          # kv[layer] = (k, v), [n, heads, dim]
        n = c.match_tokens(tokens)
        kv = c.fetch_tokens(tokens[:n])

Buffers are numpy arrays or torch tensors (CPU or CUDA, any strides), per
layer [n_tokens, n_kv_heads, head_dim]. See docs/python.md.
"""
from ._lib import Error, NotFound
from ._client import Client, Model, connect

__all__ = ["Client", "Error", "Model", "NotFound", "connect"]
__version__ = "0.1.0"
