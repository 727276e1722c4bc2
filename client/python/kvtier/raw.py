"""raw.py - dequantize raw int8 rows (Client.fetch_tokens_raw) with torch ops,
on whatever device they lie, bit-identical to the daemon's own dequantization
(simd/scalar.c): value = f32(q) * f32 scale, rounded once to the destination
dtype (round to nearest even); the kept outliers are f16 values, exact in f32,
rounded once the same way."""


def dequantize(raw, n_kv_heads, head_dim, outliers, dtype):
    """raw: a uint8 torch tensor [n, row_bytes]; returns [n, H, D] of dtype."""
    import torch
    H, D, O = n_kv_heads, head_dim, outliers
    n = raw.shape[0]
    if raw.shape[1] != H * (4 + 4 * O + D):
        raise ValueError("raw rows of %d bytes, geometry wants %d" % (raw.shape[1], H * (4 + 4 * O + D)))
    raw = raw.contiguous()
    scale = raw[:, :4 * H].contiguous().view(torch.float32).view(n, H)
    q = raw[:, H * (4 + 4 * O):].contiguous().view(torch.int8).view(n, H, D)
    value = q.float() * scale[..., None]
    if O:
        pairs = raw[:, 4 * H:H * (4 + 4 * O)].contiguous().view(torch.int16).view(n, 2, H, O)
        # int16 holds the u16 bits; 0xFFFF (padding) reads -1, a valid index
        # is < 1024: map padding to column D, the extra one dropped below.
        idx = pairs[:, 0].long()
        idx = torch.where(idx < 0, torch.full_like(idx, D), idx)
        val = pairs[:, 1].contiguous().view(torch.float16).float()
        wide = torch.cat([value, value.new_zeros(n, H, 1)], dim=2)
        wide.scatter_(2, idx, val)
        value = wide[:, :, :D]
    return value.to(dtype)
