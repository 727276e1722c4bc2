/* llama_state.h - llama.cpp's sequence state format: checked parse and build.
 *
 * What llama_state_seq_get_data writes (flags 0) for a KV-cache model,
 * llama.cpp's src/llama-context.cpp (io_magic) and src/llama-kv-cache.cpp
 * (state_write, state_write_meta, state_write_data), all little-endian:
 *
 *   u32 magic 0xaf143cd8 | i32 seq_id | u32 n_stream
 *   per stream: u32 cell_count; when not 0:
 *     per cell:  i32 pos | u32 n_seq_id (1 for one sequence) | i32 seq_id
 *     u32 v_trans (0/1) | u32 n_layer
 *     per layer: i32 k_type | u64 k_row_bytes | cell_count K rows
 *     v_trans 0, per layer: i32 v_type | u64 v_row_bytes | cell_count V rows
 *     v_trans 1, per layer: i32 v_type | u32 v_elem_bytes | u32 n_embd_v |
 *                           n_embd_v rows of cell_count elements
 *
 * A row is one cell's [n_kv_heads][head_dim] elements, kvtier's layout. A
 * sequence lives in one stream. Anything else (another magic, several
 * streams with cells, cells with extra fields as M-RoPE models write, other
 * types or row sizes, layers without V, bytes left over) is refused with
 * -EOPNOTSUPP: the parse reads only what it checked. Pure C, no llama.h:
 * the spans it fills are kvtier's.
 */
#ifndef KVT_LLAMA_STATE_H
#define KVT_LLAMA_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/kvtier.h"

#define LSTATE_MAGIC 0xaf143cd8u
#define LSTATE_CELL_BYTES 12      /* pos, n_seq_id, seq_id */
#define LSTATE_LAYER_HEAD 12      /* type + row size, or type + elem + n_embd */

/* What the state must look like for this model and connection. */
struct lstate_geom {
    uint32_t layers;
    uint32_t row_elems;           /* n_kv_heads * head_dim */
    uint32_t elem_bytes;          /* of the cache type, = the client dtype's */
    int32_t type;                 /* ggml type id of K and V */
};

/* Where a (parsed or built) state keeps its parts; offsets into its bytes. */
struct lstate_view {
    uint32_t n_stream;
    uint32_t cells;               /* of the sequence; 0: empty */
    bool v_trans;
    size_t meta_off;              /* cells x LSTATE_CELL_BYTES */
    size_t k_off, v_off;          /* layer 0's rows; layer l at + l * layer_stride */
    size_t layer_stride;
};

/* Bytes of one layer's K (or V) rows for `cells` cells. */
size_t lstate_rows_bytes(const struct lstate_geom *g, uint32_t cells);

/* Check a state of `size` bytes for sequence `seq` against g, every field;
 * fill *v. An empty sequence gives v->cells 0 (and no layers). Returns 0 or
 * -EOPNOTSUPP. */
int lstate_parse(const uint8_t *st, size_t size, const struct lstate_geom *g,
                 int32_t seq, struct lstate_view *v);

/* Position of cell i of a parsed or built state. */
int32_t lstate_pos(const uint8_t *st, const struct lstate_view *v, uint32_t i);

/* Bytes of a state holding `cells` cells of one sequence in a context of
 * n_stream streams; 0 when that overflows. */
size_t lstate_size(const struct lstate_geom *g, uint32_t n_stream, uint32_t cells);

/* Write into st (lstate_size bytes) every field of such a state, cells at
 * positions 0..cells-1 of `seq` in stream 0 (llama.cpp restores a sequence
 * into its own stream whichever the file names), and fill *v: the caller
 * then writes the K and V rows where it says. The rows are zeroed. */
void lstate_build(uint8_t *st, const struct lstate_geom *g, uint32_t n_stream,
                  int32_t seq, uint32_t cells, bool v_trans, struct lstate_view *v);

/* cell_of[p] = the cell of parsed state v holding position p, for p < n;
 * *in_order when those cells are consecutive from cell_of[0]. Returns 0,
 * or -EINVAL if a position of 0..n-1 is missing or held twice (positions
 * past n are left out). */
int lstate_cells_by_position(const uint8_t *st, const struct lstate_view *v, uint32_t n,
                             uint32_t *cell_of, bool *in_order);

/* Point span l (layer l, tokens 0..n-1) at positions 0..n-1's K and V rows:
 * inside the state where they lie there in order and untransposed, else
 * gathered (and V untransposed) into scratch, 2 * layers * n rows, laid out
 * [layer][K rows, V rows]; scratch may be NULL when in_order && !v_trans. */
void lstate_spans(const uint8_t *st, const struct lstate_view *v, const struct lstate_geom *g,
                  const uint32_t *cell_of, bool in_order, uint32_t n, uint8_t *scratch,
                  kvt_span *spans);

/* Between kvtier's token-major rows [cells][row_elems] and a transposed V
 * block [row_elems][stride] (cell c of token t: cell_of[t]; NULL: t). */
void lstate_untranspose(const struct lstate_geom *g, const uint8_t *block, uint32_t stride,
                        const uint32_t *cell_of, uint32_t n, uint8_t *rows);
void lstate_transpose(const struct lstate_geom *g, const uint8_t *rows, uint32_t n,
                      uint8_t *block);

#endif
