/*
 * oag-ctl.h - what the parts of oag-ctl share: one request on the supervisor's control socket
 * (oag-ctl.c) and the live view (oag-ctl-top.c).
 */
#ifndef OAG_TOOLS_CTL_H
#define OAG_TOOLS_CTL_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

/* One command and its reply. The caller fills the inputs and zeroes the rest. */
struct ctl_reply {
    /* in */
    FILE *sink;                 /* reply text goes here as it comes; NULL: collect it in text */
    int timeout_ms;             /* longest wait for each message of the reply (< 0: forever) */
    const sigset_t *mask;       /* signal mask while waiting (ppoll), NULL: leave it as it is */
    volatile sig_atomic_t *stop; /* when a handler sets it, a wait it interrupts ends (-EINTR) */
    /* out */
    char *text;                 /* sink NULL: the reply, NUL-terminated; the caller frees it */
    size_t len, cap;
    int status;                 /* the supervisor's final status: 0 or a negative errno */
    char msg[200];              /* on failure, what went wrong, for humans */
};

/*
 * Connects to the control socket at path, sends cmd and reads the reply up to its end.
 * Returns 0 when the reply ended (r->status holds the command's own status), or a negative errno:
 *   the connect error (-ENOENT no socket, -ECONNREFUSED nobody listening, -EAGAIN backlog full,
 *   -EACCES, ...); -EPIPE the connection closed before the reply ended; -ETIMEDOUT; -EINTR a
 *   signal interrupted a wait while *r->stop was set; -EPROTO a malformed reply; -ECONNABORTED
 *   the supervisor refused the connection (its reason in r->msg); -ENOMEM.
 * r->msg says why in every failure. Not thread-safe with respect to r; the socket is closed on
 * return.
 */
int ctl_call(const char *path, const char *cmd, struct ctl_reply *r);

/* `oag-ctl top ARGS`: argv[0] is "top". Returns the process exit code. */
int ctl_top(const char *path, int argc, char **argv);

#endif
