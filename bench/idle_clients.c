/* SPDX-License-Identifier: MIT */
/*
 * bytepool-idle-clients HOST PORT COUNT: opens COUNT connections to a RESP server (Redis or
 * bytepool-resp), makes one PING round trip on each (so the server has taken and served
 * every one), prints "ready" and keeps them all open, idle, until SIGTERM or SIGINT.
 * scripts/bench-servers.sh reads the server's resident memory meanwhile.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int ping(int fd)
{
    static const char request[] = "PING\r\n", reply[] = "+PONG\r\n";
    char got[sizeof reply - 1];
    if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) return -1;
    for (size_t done = 0; done < sizeof got;) {
        ssize_t n = recv(fd, got + done, sizeof got - done, 0);
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return memcmp(got, reply, sizeof got) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    long count = atol(argv[3]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (long i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || ping(fd) != 0) {
            fprintf(stderr, "connection %ld: %s\n", i, errno != 0 ? strerror(errno) : "bad reply");
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    return 0;
}
