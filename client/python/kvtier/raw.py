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
    if raw.stride(1) != 1 or raw.stride(0) % 4:
        raw = raw.contiguous()
    scale = raw[:, :4 * H].view(torch.float32)                       # [n, H]
    q = raw[:, H * (4 + 4 * O):].view(torch.int8).view(n, H, D)
    if not O:
        return torch.mul(q, scale[..., None]).to(dtype)
    # One spare column D takes the padding (index 0xFFFF), dropped at the end.
    wide = torch.empty((n, H, D + 1), dtype=torch.float32, device=raw.device)
    torch.mul(q, scale[..., None], out=wide[..., :D])
    pairs = raw[:, 4 * H:H * (4 + 4 * O)].view(torch.int16)          # [n, 2 H O]
    # int16 holds the u16 bits: 0xFFFF reads -1, which mod D + 1 is D; a
    # valid index (< D) stays itself.
    idx = torch.remainder(pairs[:, :H * O].view(n, H, O), D + 1).long()
    val = pairs[:, H * O:].view(torch.float16).view(n, H, O).float()
    wide.scatter_(2, idx, val)
    return wide[..., :D].to(dtype)
