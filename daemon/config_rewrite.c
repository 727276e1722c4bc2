/* config_rewrite.c - `config rewrite`: the live values into the config
 * file, atomically, comments and layout kept (config.h says the rules). */
#include "daemon/config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REWRITE_FILE_MAX (1u << 20)   /* a config file is a few KiB */

static int fail(char *err, size_t len, int rc, const char *path, const char *what)
{
    snprintf(err, len, "%s: %s: %s", path, what, strerror(-rc));
    return rc;
}

static int read_all(const char *path, char **out, size_t *len, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, st) < 0 || st->st_size > REWRITE_FILE_MAX) {
        rc = st->st_size > REWRITE_FILE_MAX ? -EFBIG : -errno;
        goto out;
    }
    buf = malloc((size_t)st->st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    *len = 0;
    while (*len < (size_t)st->st_size) {
        ssize_t n = read(fd, buf + *len, (size_t)st->st_size - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        *len += (size_t)n;
    }
    buf[*len] = '\0';
    *out = buf;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* The line of key that the loader reads last (the one that counts): its
 * offset in text and where its value lies, or -1. */
static long last_line_of(const char *text, size_t len, const char *key, struct config_line *at)
{
    long found = -1;

    for (size_t off = 0; off < len;) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - text) - off : len - off;
        struct config_line cl;
        if (config_line_parse(text + off, n, &cl) == 1 && cl.key_len == strlen(key) &&
            !memcmp(text + off + cl.key_off, key, cl.key_len)) {
            found = (long)off;
            *at = cl;
        }
        off += n + 1;
    }
    return found;
}

/* Write text to a temporary file beside path with path's mode and owner,
 * fsync it, rename it over path and fsync the directory. */
static int replace_file(const char *path, const char *text, size_t len, const struct stat *st,
                        char *err, size_t errlen)
{
    char tmp[CONFIG_PATH_MAX + 16], dir[CONFIG_PATH_MAX];
    int fd, rc = 0;

    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, -errno, path, "cannot create a temporary file beside it");
    if (fchmod(fd, st->st_mode & 07777) < 0 ||
        (fchown(fd, st->st_uid, st->st_gid) < 0 && errno != EPERM)) {
        rc = fail(err, errlen, -errno, tmp, "cannot give it the file's mode");
        goto out;
    }
    for (size_t at = 0; at < len;) {
        ssize_t n = write(fd, text + at, len - at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fail(err, errlen, -errno, tmp, "write");
            goto out;
        }
        at += (size_t)n;
    }
    if (fsync(fd) < 0) {
        rc = fail(err, errlen, -errno, tmp, "fsync");
        goto out;
    }
    if (rename(tmp, path) < 0) {
        rc = fail(err, errlen, -errno, path, "rename");
        goto out;
    }
    tmp[0] = '\0';
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);          /* the rename itself durable; best effort */
        close(dfd);
    }
out:
    close(fd);
    if (tmp[0])
        unlink(tmp);
    return rc;
}

struct edit {
    size_t at, len;          /* bytes of the file whose place text takes */
    char text[CONFIG_PATH_MAX + 128];
};

static int cmp_edit(const void *a, const void *b)
{
    const struct edit *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

int config_rewrite_file(const char *path, const struct kvt_config *live, unsigned *changed,
                        char *err, size_t errlen)
{
    struct kvt_config from_file;
    struct edit *edits = NULL;
    char *text = NULL, *out = NULL, want[CONFIG_PATH_MAX], has[CONFIG_PATH_MAX];
    size_t len = 0, n = 0, n_keys = 0, o = 0, from = 0, n_tail = 0;
    struct stat st;
    int rc;

    *changed = 0;
    /* What SIGHUP and a restart would read: defaults, then the file. */
    config_defaults(&from_file);
    rc = config_load_file(&from_file, path, err, errlen);
    if (rc)
        return rc;
    rc = read_all(path, &text, &len, &st);
    if (rc)
        return fail(err, errlen, rc, path, "cannot read it");
    while (config_key_name(n_keys))
        n_keys++;
    /* One edit per key, and one more for the keys the file lacks. */
    edits = calloc(n_keys + 1, sizeof(*edits));
    if (!edits) {
        rc = fail(err, errlen, -ENOMEM, path, "rewrite");
        goto out;
    }
    for (size_t i = 0; i < n_keys; i++) {
        const char *key = config_key_name(i);
        struct config_line cl;
        if (!config_key_live(key))
            continue;
        config_get(live, key, want, sizeof(want));
        config_get(&from_file, key, has, sizeof(has));
        if (!strcmp(want, has))
            continue;
        long line = last_line_of(text, len, key, &cl);
        if (line >= 0) {
            struct edit *e = &edits[n++];
            e->at = (size_t)line + cl.value_off;
            e->len = cl.value_len;
            snprintf(e->text, sizeof(e->text), "%s", want);
        } else {
            n_tail++;
        }
    }
    *changed = (unsigned)(n + n_tail);
    if (n + n_tail == 0)
        goto out;
    qsort(edits, n, sizeof(*edits), cmp_edit);
    out = malloc(len + 64 + (n + n_tail) * sizeof(edits[0].text));
    if (!out) {
        rc = fail(err, errlen, -ENOMEM, path, "rewrite");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(out + o, text + from, edits[i].at - from);
        o += edits[i].at - from;
        o += (size_t)sprintf(out + o, "%s", edits[i].text);
        from = edits[i].at + edits[i].len;
    }
    memcpy(out + o, text + from, len - from);
    o += len - from;
    if (n_tail) {
        if (o && out[o - 1] != '\n')
            out[o++] = '\n';         /* the file's last line had no newline */
        o += (size_t)sprintf(out + o, "# written by `kvtierctl config rewrite`\n");
        for (size_t i = 0; i < n_keys; i++) {
            const char *key = config_key_name(i);
            struct config_line cl;
            if (!config_key_live(key) || last_line_of(text, len, key, &cl) >= 0)
                continue;
            config_get(live, key, want, sizeof(want));
            config_get(&from_file, key, has, sizeof(has));
            if (strcmp(want, has))
                o += (size_t)sprintf(out + o, "%s = %s\n", key, want);
        }
    }
    rc = replace_file(path, out, o, &st, err, errlen);
    if (rc)
        *changed = 0;
out:
    free(out);
    free(edits);
    free(text);
    return rc;
}
