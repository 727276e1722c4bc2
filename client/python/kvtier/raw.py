"""raw.py - dequantize raw int8 rows (Client.fetch_tokens_raw) with torch ops,
on whatever device they lie, bit-identical to the daemon's own dequantization
(simd/scalar.c): value = f32(q) * f32 scale, rounded once to the destination
dtype (round to nearest even); the kept outliers are f16 values, exact in f32,
rounded once the same way."""


def dequantize(raw, n_kv_heads, head_dim, outliers, dtype):
    """raw: a uint8 torch tensor [n, row_bytes] (rows may be strided, each
    row dense); returns [n, H, D] of dtype. Six kernels on a GPU: the fields
    are read in place through dtype views of the rows."""
    import torch
    H, D, O = n_kv_heads, head_dim, outliers
    n, row = raw.shape[0], H * (4 + 4 * O + D)
    if raw.shape[1] != row:
        raise ValueError("raw rows of %d bytes, geometry wants %d" % (raw.shape[1], row))
    def field(a, b, t):
        """Bytes [a, b) of each row as dtype t: a view when aligned."""
        f = raw[:, a:b]
        size = torch.empty((), dtype=t).element_size()
        if f.stride(1) != 1 or f.stride(0) % size or f.storage_offset() % size:
            f = f.contiguous()
        return f.view(t)
    scale = field(0, 4 * H, torch.float32)                           # [n, H]
    q = field(H * (4 + 4 * O), row, torch.int8).view(n, H, D)
    # f32(q) * scale rounded once to dtype: mul computes in f32 and rounds
    # on storing into a dtype output. One spare column D takes the padding
    # (index 0xFFFF), dropped at the end.
    out = torch.empty((n, H, D + 1 if O else D), dtype=dtype, device=raw.device)
    torch.mul(q, scale[..., None], out=out[..., :D])
    if not O:
        return out
    pairs = field(4 * H, H * (4 + 4 * O), torch.int16)               # [n, 2 H O]
    # int16 holds the u16 bits: 0xFFFF reads -1, which mod D + 1 is D; a
    # valid index (< D) stays itself. f16 -> dtype rounds once, via f32.
    idx = torch.remainder(pairs[:, :H * O].view(n, H, O), D + 1).long()
    val = pairs[:, H * O:].contiguous().view(torch.float16).view(n, H, O).to(dtype)
    out.scatter_(2, idx, val)
    return out[..., :D]
