/* session_internal.h - what the session's files share (session.c, the
 * requests and replies; session_attach.c, the ATTACH): not for others. */
#ifndef KVT_SESSION_INTERNAL_H
#define KVT_SESSION_INTERNAL_H

#include "daemon/session.h"

/* Let the loop hear from s again (its fd is EPOLLONESHOT). */
void session_rearm(struct kvt_session *s);
/* Send the reply to one request; why is sent with a failed status only. */
void session_send_reply(struct kvt_session *s, uint16_t op, uint32_t seq, int status,
                        uint64_t value, const struct kvt_attach_info *info, const char *why);
/* Serve an ATTACH (the request in s->buf, the region's fd or -1, which it
 * closes), reply and re-arm. */
void session_attach(struct kvt_session *s, int fd);
/* session_shared.c: LOCATE (an op handler of session.c's table) and
 * BLOCKS (answers and rearms itself). */
int session_locate(struct kvt_session *s, uint64_t *value, const char **why);
void session_blocks(struct kvt_session *s, size_t len);

#endif
