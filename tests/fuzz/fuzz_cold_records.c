/* fuzz_cold_records.c - cold file contents through the cold tier's real
 * recovery and read path: the input becomes the records of a cold file
 * whose file and region headers come from a real file that cache/cold.c
 * made (LLVMFuzzerInitialize), then cold_open rebuilds the index from it
 * and every key named in the input is looked up and read back with
 * cold_get. The input layout is in fuzz_input.h. With COLD_IN_FIX_SUMS the
 * harness rewrites each record's checksum (and region_seq, and a version
 * this build knows to the region's) the way the writer would, so the fuzzer
 * reaches what lies behind the checksum: shapes, lengths, LZ4 blocks,
 * tombstones, name blocks, sequence order. With COLD_IN_V1 the file and region headers
 * are of format 1, as a format-1 kvtierd left them (cold_format.h).
 *
 * Checked for every input, besides what the sanitizers catch:
 *   - cold_open of a file with valid headers succeeds, whatever the records;
 *   - a file of format 1 is upgraded: its header is the current format
 *     after open;
 *   - a record cold_get returns is one the file holds: some record of the
 *     input has its key, its region's version (and, in format 1, no
 *     outliers), a checksum that verifies, its shape, its presence
 *     bitmap and (decompressed) its data; cold_lookup's leading tokens agree
 *     with the bitmap returned; bits past the shape's tokens are zero;
 *   - a record cold_get rejects as corrupt (-EBADMSG) is gone from the index
 *     afterwards; an absent key is absent for cold_lookup too; nothing else
 *     (-EIO, -ENOMEM, -EINVAL) comes back;
 *   - every name cold_names lists is a name record of the input (format 3
 *     on), within bounds, hashing to its key; a name key is absent for
 *     cold_lookup and cold_get;
 *   - the first chunk (layer 0, chunk 0) of each of the first 8 keys' objects
 *     puts into the recovered tier; a key of a name's layer is refused;
 *   - with COLD_IN_PUT_REOPEN: a record put into the recovered tier,
 *     synced, survives close and reopen exactly.
 */
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cold.h"
#include "cache/cold_format.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_util.h"

#define REC_HDR sizeof(struct cold_record_header)
#define PAYLOAD_MAX (COLD_FUZZ_REGION_BYTES - COLD_BLOCK)
#define MAX_KEYS 64
#define DATA_CAP (16u << 20)
#define BITMAP_WORDS (KVT_CHUNK_MAX_TOKENS / 64)
/* A log cannot hold 2^64 records; the harness keeps fixed-up sequence
 * numbers below this so next_record_seq cannot wrap (which no real file
 * can make happen). */
#define SEQ_LIMIT (UINT64_C(1) << 48)

static char dir[256], path[300];
static uint8_t file_header[COLD_BLOCK], region_header[COLD_BLOCK];
static uint64_t seed;
static uint32_t region_version;        /* of this input's region headers */
static uint8_t payload[2][PAYLOAD_MAX];
static size_t payload_len[2];
static uint8_t data_buf[DATA_CAP], want_buf[DATA_CAP];

static struct kvt_cold_config cold_config(void)
{
    return (struct kvt_cold_config){ .path = path, .bytes = COLD_FUZZ_FILE_BYTES,
                                     .region_bytes = COLD_FUZZ_REGION_BYTES,
                                     .force_pread = true, .write_buffers = 1,
                                     .write_buffer_bytes = 64u << 10 };
}

static void remove_files(void)
{
    unlink(path);
    rmdir(dir);
}

static void read_block(int fd, void *buf, uint64_t off)
{
    FUZZ_CHECK(pread(fd, buf, COLD_BLOCK, (off_t)off) == COLD_BLOCK, "%s", strerror(errno));
}

/* Let cache/cold.c make a file with one record: its file header and the
 * header of the region it used are the template of every input's file. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");
    struct kvt_cold_config cfg;
    struct kvt_cold *cold;
    static uint64_t present[BITMAP_WORDS] = { ~UINT64_C(0) };
    static uint8_t data[4096];
    struct kvt_chunk_image img = { .key = { .ns_id = 1 },
                                   .shape = { .tokens = 16, .heads = 1, .dim = 8,
                                              .elem = KVT_CHUNK_INT8 },
                                   .present = present, .data = data };
    struct cold_file_header fh;

    (void)argc, (void)argv;
    snprintf(dir, sizeof(dir), "%s/kvtier-fuzz-cold.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FUZZ_CHECK(mkdtemp(dir), "%s", strerror(errno));
    snprintf(path, sizeof(path), "%s/cold.kvt", dir);
    atexit(remove_files);
    cfg = cold_config();
    FUZZ_CHECK(cold_open(&cfg, &cold) == 0, "cannot make the template file");
    FUZZ_CHECK(cold_put(cold, &img) == 0 && cold_sync(cold) == 0, "cannot write a record");
    cold_close(cold);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "%s", strerror(errno));
    read_block(fd, file_header, 0);
    read_block(fd, region_header, COLD_BLOCK);     /* region 0: the first one used */
    close(fd);
    memcpy(&fh, file_header, sizeof(fh));
    seed = fh.seed;
    return 0;
}

/* The template's file header, in format version. */
static void put_file_header(int fd, uint32_t version)
{
    struct cold_file_header h;
    uint8_t block[COLD_BLOCK];

    memcpy(block, file_header, COLD_BLOCK);
    memcpy(&h, block, sizeof(h));
    h.version = version;
    h.checksum = XXH3_64bits(&h, offsetof(struct cold_file_header, checksum));
    memcpy(block, &h, sizeof(h));
    FUZZ_CHECK(pwrite(fd, block, COLD_BLOCK, 0) == COLD_BLOCK, "%s", strerror(errno));
}

static uint32_t file_version(void)
{
    struct cold_file_header h;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    FUZZ_CHECK(fd >= 0 && pread(fd, &h, sizeof(h), 0) == sizeof(h), "%s", strerror(errno));
    close(fd);
    return h.version;
}

static void put_region_header(int fd, uint32_t r, uint64_t seq)
{
    struct cold_region_header h;
    uint8_t block[COLD_BLOCK];

    memcpy(block, region_header, COLD_BLOCK);
    memcpy(&h, block, sizeof(h));
    h.index = r;
    h.seq = seq;
    h.version = region_version;
    h.checksum = XXH3_64bits_withSeed(&h, offsetof(struct cold_region_header, checksum), seed);
    memcpy(block, &h, sizeof(h));
    FUZZ_CHECK(pwrite(fd, block, COLD_BLOCK, (off_t)(COLD_BLOCK + (uint64_t)r *
                                                    COLD_FUZZ_REGION_BYTES)) == COLD_BLOCK,
               "%s", strerror(errno));
}

/* Bytes of the record whose header is h, as the writer lays it out, or 0
 * when the header could not be one (too many tokens to size). */
static uint64_t record_bytes(const struct cold_record_header *h)
{
    if (h->kind == COLD_REC_NAME)
        return h->stored_len <= COLD_NAME_BLOCK_MAX ? REC_HDR + (uint64_t)h->stored_len : 0;
    if (h->kind != COLD_REC_CHUNK)
        return REC_HDR;
    if (h->shape.tokens > KVT_CHUNK_MAX_TOKENS)
        return 0;
    return REC_HDR + chunk_bitmap_bytes(h->shape.tokens) + (uint64_t)h->stored_len;
}

static uint64_t record_sum(const uint8_t *rec, uint64_t n)
{
    static uint8_t copy[PAYLOAD_MAX];
    static const uint64_t zero;

    memcpy(copy, rec, n);
    memcpy(copy + offsetof(struct cold_record_header, checksum), &zero, sizeof(zero));
    return XXH3_64bits_withSeed(copy, n, seed);
}

/* What the writer would have written: each record in log order gets this
 * region's use and a checksum that verifies. Non-records are skipped to
 * the next block, as recovery skips padding. */
static void fix_records(uint8_t *p, size_t len, uint64_t region_seq)
{
    size_t at = 0;

    while (at + REC_HDR <= len) {
        struct cold_record_header h;
        memcpy(&h, p + at, REC_HDR);
        if (h.magic != COLD_RECORD_MAGIC) {
            at = (at / COLD_BLOCK + 1) * COLD_BLOCK;
            continue;
        }
        uint64_t n = record_bytes(&h);
        if (n == 0 || at + n > len)
            return;
        h.region_seq = region_seq;
        h.seq %= SEQ_LIMIT;
        /* Versions this build knows become the region's; others stay, for
         * the reader to refuse. */
        if (h.version >= COLD_FORMAT_VERSION_MIN && h.version <= COLD_FORMAT_VERSION)
            h.version = (uint16_t)region_version;
        memcpy(p + at, &h, REC_HDR);
        h.checksum = record_sum(p + at, n);
        memcpy(p + at, &h, REC_HDR);
        at += n;
    }
}

static uint32_t leading_tokens(const uint64_t *present, uint32_t tokens)
{
    uint32_t n = 0;

    while (n < tokens && (present[n / 64] >> (n % 64) & 1))
        n++;
    return n;
}

/* Is there a record in the input, anywhere, that verifies and decodes to
 * exactly this? */
static bool held_by_file(const struct kvt_chunk_key *key, const struct kvt_chunk_shape *shape,
                         const uint64_t *present, const uint8_t *data)
{
    for (int r = 0; r < 2; r++) {
        const uint8_t *p = payload[r];
        for (size_t at = 0; at + REC_HDR <= payload_len[r]; at++) {
            struct cold_record_header h;
            memcpy(&h, p + at, REC_HDR);
            if (h.magic != COLD_RECORD_MAGIC || h.kind != COLD_REC_CHUNK ||
                h.version != region_version || (h.version == 1 && h.shape.outliers) ||
                memcmp(&h.key, key, sizeof(*key)) || memcmp(&h.shape, shape, sizeof(*shape)))
                continue;
            uint64_t n = record_bytes(&h);
            uint32_t bitmap = chunk_bitmap_bytes(shape->tokens);
            /* The stored bitmap as cold_get hands it back: bits past the
             * chunk's tokens cleared. */
            uint64_t stored_bits[KVT_CHUNK_MAX_TOKENS / 64] = { 0 };
            if (n == 0 || at + n > payload_len[r] || record_sum(p + at, n) != h.checksum ||
                h.raw_len > DATA_CAP || bitmap > sizeof(stored_bits))
                continue;
            memcpy(stored_bits, p + at + REC_HDR, bitmap);
            if (shape->tokens % 64)
                stored_bits[shape->tokens / 64] &= (UINT64_C(1) << (shape->tokens % 64)) - 1;
            if (memcmp(stored_bits, present, bitmap))
                continue;
            const uint8_t *stored = p + at + REC_HDR + bitmap;
            if (h.flags & COLD_REC_LZ4) {
                if (LZ4_decompress_safe((const char *)stored, (char *)want_buf, (int)h.stored_len,
                                        (int)h.raw_len) != (int)h.raw_len)
                    continue;
                stored = want_buf;
            }
            if (memcmp(stored, data, h.raw_len) == 0)
                return true;
        }
    }
    return false;
}

/* Keys of everything in the input that looks like a record header. */
static size_t input_keys(struct kvt_chunk_key *keys)
{
    size_t n = 0;

    for (int r = 0; r < 2; r++)
        for (size_t at = 0; at + REC_HDR <= payload_len[r] && n < MAX_KEYS; at++) {
            struct cold_record_header h;
            memcpy(&h, payload[r] + at, REC_HDR);
            if (h.magic != COLD_RECORD_MAGIC)
                continue;
            size_t i = 0;
            while (i < n && memcmp(&keys[i], &h.key, sizeof(h.key)))
                i++;
            if (i == n)
                keys[n++] = h.key;
        }
    return n;
}

static void check_key(struct kvt_cold *cold, const struct kvt_chunk_key *key)
{
    static uint64_t present[BITMAP_WORDS];
    struct kvt_chunk_shape shape;
    uint32_t lead = 0, lead_after;
    int looked = cold_lookup(cold, key, &lead);
    int rc = cold_get(cold, key, &shape, present, data_buf, DATA_CAP);

    FUZZ_CHECK(looked == 0 || looked == -ENOENT, "cold_lookup = %d", looked);
    switch (rc) {
    case 0:
        FUZZ_CHECK(looked == 0, "cold_get found what cold_lookup did not");
        FUZZ_CHECK(lead == leading_tokens(present, shape.tokens),
                   "cold_lookup says %u leading tokens, the bitmap %u", lead,
                   leading_tokens(present, shape.tokens));
        /* cold.h: bits past shape.tokens come back zeroed, whatever the
         * record holds there. */
        for (uint32_t t = shape.tokens; t < KVT_CHUNK_MAX_TOKENS; t++)
            FUZZ_CHECK(!(present[t / 64] >> (t % 64) & 1), "bit %u set past %u tokens", t,
                       shape.tokens);
        FUZZ_CHECK(held_by_file(key, &shape, present, data_buf),
                   "cold_get returned a record the file does not hold");
        break;
    case -EBADMSG:
        FUZZ_CHECK(cold_lookup(cold, key, &lead_after) == -ENOENT,
                   "a corrupt record stayed in the index");
        break;
    case -ENOENT:
        FUZZ_CHECK(looked == -ENOENT, "cold_lookup found what cold_get did not");
        break;
    case -ENOSPC:
        break;                 /* a shape larger than DATA_CAP */
    default:
        FUZZ_CHECK(0, "cold_get = %d (%s)", rc, strerror(-rc));
    }
}

/* Whether the input holds a name record of n's key whose block says n. */
static bool name_held_by_file(const struct kvt_cold_name *n)
{
    for (int r = 0; r < 2; r++)
        for (size_t at = 0; at + REC_HDR <= payload_len[r]; at++) {
            struct cold_record_header h;
            struct cold_name_block b;
            const uint8_t *block = payload[r] + at + REC_HDR;
            memcpy(&h, payload[r] + at, REC_HDR);
            if (h.magic != COLD_RECORD_MAGIC || h.kind != COLD_REC_NAME ||
                h.key.ns_id != n->ns_id || h.key.obj_hi != n->obj_hi ||
                h.key.obj_lo != n->obj_lo || h.key.domain != n->domain ||
                h.raw_len != sizeof(b) + n->model_len + n->name_len ||
                at + REC_HDR + h.raw_len > payload_len[r])
                continue;
            memcpy(&b, block, sizeof(b));
            if (b.layers == n->layers && b.heads == n->heads && b.dim == n->dim &&
                b.chunk_tokens == n->chunk_tokens &&
                !memcmp(block + sizeof(b), n->model, n->model_len) &&
                !memcmp(block + sizeof(b) + n->model_len, n->name, n->name_len))
                return true;
        }
    return false;
}

/* Every name the tier lists is a name record of the input, within bounds,
 * NUL-terminated, hashing to its key; a format-1 file holds none. */
static void check_names(struct kvt_cold *cold)
{
    struct kvt_cold_name *names;
    size_t n;

    FUZZ_CHECK(cold_names(cold, &names, &n) == 0, "cold_names failed");
    FUZZ_CHECK(n == 0 || region_version >= COLD_NAME_FIRST_VERSION,
               "%zu names from a file of format %u", n, region_version);
    for (size_t i = 0; i < n; i++) {
        const struct kvt_cold_name *nm = &names[i];
        FUZZ_CHECK(nm->name_len >= 1 && nm->name_len <= COLD_NAME_CONTEXT_MAX &&
                   nm->model_len >= 1 && nm->model_len <= COLD_NAME_MODEL_MAX &&
                   strlen(nm->name) == nm->name_len && strlen(nm->model) == nm->model_len,
                   "a name out of bounds");
        XXH128_hash_t h = XXH3_128bits(nm->name, nm->name_len);
        FUZZ_CHECK(h.high64 == nm->obj_hi && h.low64 == nm->obj_lo,
                   "a name that does not hash to its key");
        FUZZ_CHECK(name_held_by_file(nm), "a name the file does not hold");
    }
    free(names);
}

/* The first chunk (layer 0, chunk 0) of the objects of the first keys put
 * into the recovered tier, without a name: a put that follows a name
 * (cold_put_named) reads what recovery left in the name's slot. The
 * input's own key is refused if it is a name's. Bounded: a few puts. */
#define FIRST_CHUNK_PUTS 8
static void put_first_chunks(struct kvt_cold *cold, const struct kvt_chunk_key *keys,
                             size_t n_keys)
{
    static uint64_t present[BITMAP_WORDS] = { 0xff };
    static uint8_t data[640];
    struct kvt_chunk_image img = { .shape = { .tokens = 8, .heads = 2, .dim = 16,
                                              .elem = KVT_CHUNK_INT8 },
                                   .present = present, .data = data };

    FUZZ_CHECK(chunk_data_bytes(&img.shape) == sizeof(data), "shape and data disagree");
    for (size_t i = 0; i < n_keys && i < FIRST_CHUNK_PUTS; i++) {
        img.key = keys[i];
        if (img.key.layer == COLD_NAME_LAYER)
            FUZZ_CHECK(cold_put(cold, &img) == -EINVAL, "a chunk keyed as a name was put");
        img.key.layer = 0;
        img.key.chunk_idx = 0;
        int rc = cold_put(cold, &img);
        FUZZ_CHECK(rc == 0, "cold_put of a first chunk: %d (%s)", rc, strerror(-rc));
    }
}

/* A record put into the recovered tier survives sync, close and reopen. */
static void put_and_reopen(struct kvt_cold **cold)
{
    static uint64_t present[BITMAP_WORDS] = { 0xffff };
    static uint64_t got_present[BITMAP_WORDS];
    static uint8_t data[1280];
    struct kvt_chunk_shape got;
    struct kvt_cold_config cfg = cold_config();
    struct kvt_chunk_image img = { .key = { .ns_id = UINT64_C(0xf022ed), .obj_hi = 1,
                                            .obj_lo = 2, .domain = 7, .layer = 3 },
                                   .shape = { .tokens = 16, .heads = 2, .dim = 16,
                                              .elem = KVT_CHUNK_INT8 },
                                   .present = present, .data = data };

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    FUZZ_CHECK(chunk_data_bytes(&img.shape) == sizeof(data), "shape and data disagree");
    FUZZ_CHECK(cold_put(*cold, &img) == 0, "cold_put into a recovered file failed");
    FUZZ_CHECK(cold_sync(*cold) == 0, "cold_sync failed");
    cold_close(*cold);
    FUZZ_CHECK(cold_open(&cfg, cold) == 0, "reopen failed");
    int rc = cold_get(*cold, &img.key, &got, got_present, data_buf, DATA_CAP);
    FUZZ_CHECK(rc == 0, "the synced record is gone after reopen: %d", rc);
    FUZZ_CHECK(!memcmp(&got, &img.shape, sizeof(got)) && got_present[0] == present[0] &&
               !memcmp(data_buf, data, sizeof(data)), "the synced record came back different");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvt_chunk_key keys[MAX_KEYS];
    struct kvt_cold_config cfg = cold_config();
    struct kvt_cold *cold;
    int fds_before = fuzz_fd_count();

    if (size < 1)
        return 0;
    unsigned flags = data[0];
    size_t at = 1, split = size - 1;
    if (flags & COLD_IN_TWO_REGIONS) {
        if (size < 3)
            return 0;
        split = (size_t)data[1] | (size_t)data[2] << 8;
        at = 3;
        if (split > size - at)
            split = size - at;
    }
    payload_len[0] = split < PAYLOAD_MAX ? split : PAYLOAD_MAX;
    memcpy(payload[0], data + at, payload_len[0]);
    at += split;
    payload_len[1] = size - at < PAYLOAD_MAX ? size - at : PAYLOAD_MAX;
    memcpy(payload[1], data + at, payload_len[1]);

    /* Region 0's use is 1 (what the template's records say) unless region
     * 1 is in use and older. */
    uint64_t seq0 = (flags & COLD_IN_TWO_REGIONS) && !(flags & COLD_IN_R1_NEWER) ? 2 : 1;
    uint64_t seq1 = 3 - seq0;
    region_version = flags & COLD_IN_V1 ? 1 : COLD_FORMAT_VERSION;
    if (flags & COLD_IN_FIX_SUMS) {
        fix_records(payload[0], payload_len[0], seq0);
        fix_records(payload[1], payload_len[1], seq1);
    }

    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0 && ftruncate(fd, COLD_FUZZ_FILE_BYTES) == 0, "%s", strerror(errno));
    put_file_header(fd, region_version);
    put_region_header(fd, 0, seq0);
    if (flags & COLD_IN_TWO_REGIONS)
        put_region_header(fd, 1, seq1);
    for (uint32_t r = 0; r < 2; r++) {
        off_t off = (off_t)(COLD_BLOCK + (uint64_t)r * COLD_FUZZ_REGION_BYTES + COLD_BLOCK);
        FUZZ_CHECK(pwrite(fd, payload[r], payload_len[r], off) == (ssize_t)payload_len[r],
                   "%s", strerror(errno));
    }
    close(fd);

    int rc = cold_open(&cfg, &cold);
    FUZZ_CHECK(rc == 0, "cold_open of a file with valid headers: %d (%s)", rc, strerror(-rc));
    FUZZ_CHECK(file_version() == COLD_FORMAT_VERSION, "the file header is format %u after "
               "open, not %u", file_version(), COLD_FORMAT_VERSION);
    size_t n_keys = input_keys(keys);
    check_names(cold);
    for (size_t i = 0; i < n_keys; i++)
        check_key(cold, &keys[i]);
    put_first_chunks(cold, keys, n_keys);
    if (flags & COLD_IN_PUT_REOPEN)
        put_and_reopen(&cold);
    cold_close(cold);

    int fds_after = fuzz_fd_count();
    FUZZ_CHECK(fds_after == fds_before, "%d fds open before the input, %d after",
               fds_before, fds_after);
    return 0;
}
