/*
 * oag-keygen - a ZeroMQ CURVE key pair for remote agents and supervisors.
 *
 *   oag-keygen FILE     writes "PUBLIC SECRET" (Z85, 40 characters each) to FILE (mode 0600)
 *                       and prints the public key on stdout
 *
 * The supervisor takes its file with --curve-secret-key FILE and the clients' public keys, one
 * per line, with --curve-allowed-keys FILE; a client gets $OAG_CURVE_SERVER_KEY (the
 * supervisor's public key, or its file) and $OAG_CURVE_CLIENT_KEY (its own file).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: oag-keygen FILE   (writes 'PUBLIC SECRET', prints PUBLIC)\n");
        return 2;
    }
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "oag-keygen: this libzmq has no CURVE support: %s\n",
                zmq_strerror(zmq_errno()));
        return 1;
    }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "oag-keygen: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    char line[100];
    int n = snprintf(line, sizeof line, "%s %s\n", pub, sec);
    if (write(fd, line, (size_t)n) != n || close(fd) != 0) {
        fprintf(stderr, "oag-keygen: %s: write failed\n", argv[1]);
        return 1;
    }
    printf("%s\n", pub);
    return 0;
}
