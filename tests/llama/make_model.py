#!/usr/bin/env python3
"""make_model.py - write a small Llama-architecture GGUF with seeded random
weights and llama.cpp's own SentencePiece vocabulary, for the llama.cpp glue's
tests and bench (nothing can be downloaded, and the tests need no trained
weights: they compare logits of the same weights two ways).

A few channels of every layer's key projection are scaled up, so the keys
carry the outlier channels of real models (the int8 mode keeps those exact).
They come in RoPE pairs (2i, 2i+1: llama.cpp's "normal" rope rotates those
together), as in real models: rotation spreads a channel's magnitude over
its pair, so an unpaired outlier would make two.

Usage: make_model.py OUT.gguf VOCAB.gguf LAYERS EMBD HEADS KV_HEADS FFN SEED
Needs the gguf package of the same llama.cpp tree (PYTHONPATH=.../gguf-py).
"""
import sys

import numpy as np
import gguf

OUTLIER_PAIRS = 2         # per kv head: 4 channels, the daemon's default outliers
OUTLIER_SCALE = 24.0


def vocab_fields(path):
    r = gguf.GGUFReader(path)
    f = r.fields
    def scalar(name):
        return f[name].contents()
    return {
        "model": scalar("tokenizer.ggml.model"),
        "pre": scalar("tokenizer.ggml.pre"),
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "scores": f["tokenizer.ggml.scores"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "unk": scalar("tokenizer.ggml.unknown_token_id"),
    }


def main():
    out, vocab_path = sys.argv[1], sys.argv[2]
    layers, embd, heads, kv_heads, ffn, seed = (int(a) for a in sys.argv[3:9])
    head_dim = embd // heads
    v = vocab_fields(vocab_path)
    n_vocab = len(v["tokens"])
    rng = np.random.default_rng(seed)

    def weight(rows, cols, dtype=np.float16):
        # Scaled so activations stay O(1) through the layers.
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(dtype)

    w = gguf.GGUFWriter(out, "llama")
    w.add_name("kvtier-test-%dx%d" % (layers, embd))
    w.add_context_length(8192)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model(v["model"])
    w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    w.add_token_scores(v["scores"])
    w.add_token_types(v["types"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    w.add_unk_token_id(v["unk"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    w.add_tensor("token_embd.weight", weight(n_vocab, embd) * np.float16(8))
    w.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    w.add_tensor("output.weight", weight(n_vocab, embd))
    for i in range(layers):
        b = "blk.%d." % i
        wk = weight(kv_heads * head_dim, embd).astype(np.float32)
        for h in range(kv_heads):
            pairs = rng.choice(head_dim // 2, OUTLIER_PAIRS, replace=False)
            for p in pairs:
                wk[h * head_dim + 2 * p: h * head_dim + 2 * p + 2, :] *= OUTLIER_SCALE
        w.add_tensor(b + "attn_norm.weight", np.ones(embd, dtype=np.float32))
        w.add_tensor(b + "attn_q.weight", weight(embd, embd))
        w.add_tensor(b + "attn_k.weight", wk.astype(np.float16))
        w.add_tensor(b + "attn_v.weight", weight(kv_heads * head_dim, embd))
        w.add_tensor(b + "attn_output.weight", weight(embd, embd))
        w.add_tensor(b + "ffn_norm.weight", np.ones(embd, dtype=np.float32))
        w.add_tensor(b + "ffn_gate.weight", weight(ffn, embd))
        w.add_tensor(b + "ffn_up.weight", weight(ffn, embd))
        w.add_tensor(b + "ffn_down.weight", weight(embd, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
