/* fuzz_input.h - how the fuzz targets read their input bytes, shared with
 * the seed corpus generator (make_corpus.c) so both agree on the layout. */
#ifndef KVT_FUZZ_INPUT_H
#define KVT_FUZZ_INPUT_H

#include <stdint.h>

/* fuzz_frames: the input is a sequence of packets, each
 *   u8   control: bits 0-2 the fds to attach (enum frame_fd), bit 3 fix
 *        the header (magic, version and len set to the packet's), bit 4 a
 *        fill pattern for the region follows the packet
 *   u16  packet length, little-endian (cut to the bytes left)
 *   ...  the packet
 *   [16] with bit 4: the region is filled with these 16 bytes repeated
 * FRAME_FD_RECONNECT is a bare control byte: hang up, open a new session.
 * A memfd region is as large as the region_bytes field of an ATTACH-sized
 * packet says when that is 1..FRAME_REGION_MAX, else FRAME_REGION_DEFAULT. */
enum frame_fd {
    FRAME_FD_NONE = 0,
    FRAME_FD_REGION = 1,         /* memfd sealed against shrinking and growing */
    FRAME_FD_UNSEALED = 2,       /* memfd without seals */
    FRAME_FD_FILE = 3,           /* a regular (temporary) file */
    FRAME_FD_PIPE = 4,           /* the read end of a pipe */
    FRAME_FD_SEVERAL = 5,        /* a region, then five more of every kind */
    FRAME_FD_WRITE_SEALED = 6,   /* memfd sealed against writes as well */
    FRAME_FD_RECONNECT = 7,
};
#define FRAME_CTL_FD_MASK 0x07u
#define FRAME_CTL_FIX_HDR 0x08u
#define FRAME_CTL_FILL 0x10u
#define FRAME_FILL_BYTES 16u
#define FRAME_REGION_MAX (1u << 20)       /* the fuzz config's max-client-shm */
#define FRAME_REGION_DEFAULT (64u << 10)

/* fuzz_cold_records: the input is
 *   u8   flags (COLD_IN_*)
 *   u16  with COLD_IN_TWO_REGIONS: bytes of the input that go to region 0,
 *        little-endian; the rest goes to region 1
 *   ...  region contents, written after each region's header block
 * over a cold file whose file and region headers come from a real file that
 * cache/cold.c made. */
#define COLD_IN_FIX_SUMS 0x01u     /* recompute record checksums and region_seq */
#define COLD_IN_TWO_REGIONS 0x02u  /* region 1 is in use too */
#define COLD_IN_R1_NEWER 0x04u     /* region 1's use is newer than region 0's */
#define COLD_IN_PUT_REOPEN 0x08u   /* then put a record, close, reopen, get it */
#define COLD_IN_V1 0x10u           /* file and region headers of format 1 */
#define COLD_FUZZ_REGION_BYTES (1u << 20)
#define COLD_FUZZ_FILE_BYTES (4096u + 2 * COLD_FUZZ_REGION_BYTES)

#endif
