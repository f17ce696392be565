/* loopback.c -- a program built against an installed libectp (the install
 * test of ../ctest.sh builds it with pkg-config, pkg-config --static and
 * CMake): a TO and a TU in one process, over IPv4 loopback.
 *
 * Sets ECTP_HGT on the TO and reads it back, creates the connection, joins
 * it, multicasts one message, checks the TU received exactly those bytes,
 * terminates the connection and checks the TU sees its normal end.
 * Prints "loopback: ok ..." and exits 0, or the call that failed and exits 1.
 *
 * Usage: loopback PORT [GROUP]   (GROUP default 239.255.10.10)
 */
#define _POSIX_C_SOURCE 200809L
#include <ectp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "loopback: FAIL: %s: %s\n", what, strerror(errno));
    return 1;
}

static void on_alarm(int sig)
{
    static const char msg[] = "loopback: FAIL: still running after 30 s\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(1);
}

static int get_int(int sd, int opt, int *out)
{
    socklen_t len = (socklen_t)sizeof *out;
    return mgetsockopt(sd, SOL_ECTP, opt, out, &len);
}

int main(int argc, char **argv)
{
    static const char message[] = "hello from the installed libectp";
    struct sockaddr_in local, group;
    struct ectp_rcvinfo info;
    char buf[256];
    const char *group_text = argc > 2 ? argv[2] : "239.255.10.10";
    long port = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    int to, tu, hgt = 700, v = 0, one = 1;
    uint32_t user_id = 0;
    socklen_t len;
    ssize_t n;

    if (argc < 2 || argc > 3 || port < 1 || port > 65535) {
        fprintf(stderr, "usage: loopback PORT [GROUP]\n");
        return 2;
    }
    signal(SIGALRM, on_alarm);
    alarm(30);

    memset(&local, 0, sizeof local);
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    group = local;
    group.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, group_text, &group.sin_addr) != 1) {
        fprintf(stderr, "loopback: %s is not an IPv4 multicast address\n", group_text);
        return 2;
    }

    to = msocket(AF_INET, SOCK_DGRAM, 0);
    if (to == -1)
        return fail("msocket (TO)");
    if (msetsockopt(to, IPPROTO_IP, IP_MULTICAST_IF, &local.sin_addr,
                    (socklen_t)sizeof local.sin_addr) == -1)
        return fail("msetsockopt(IP_MULTICAST_IF)");
    if (msetsockopt(to, IPPROTO_IP, IP_MULTICAST_LOOP, &one, (socklen_t)sizeof one) == -1)
        return fail("msetsockopt(IP_MULTICAST_LOOP)");
    if (msetsockopt(to, SOL_ECTP, ECTP_HGT, &hgt, (socklen_t)sizeof hgt) == -1)
        return fail("msetsockopt(ECTP_HGT)");
    if (get_int(to, ECTP_HGT, &v) == -1)
        return fail("mgetsockopt(ECTP_HGT)");
    if (v != hgt) {
        fprintf(stderr, "loopback: FAIL: ECTP_HGT reads %d, set %d\n", v, hgt);
        return 1;
    }
    len = (socklen_t)sizeof v;
    if (mgetsockopt(to, SOL_ECTP, 9999, &v, &len) != -1 || errno != ENOPROTOOPT) {
        fprintf(stderr, "loopback: FAIL: an unknown option should give ENOPROTOOPT\n");
        return 1;
    }
    if (mcreate(to, (const struct sockaddr *)&local, (socklen_t)sizeof local,
                (const struct sockaddr *)&group, (socklen_t)sizeof group) == -1)
        return fail("mcreate");

    tu = msocket(AF_INET, SOCK_DGRAM, 0);
    if (tu == -1)
        return fail("msocket (TU)");
    if (mjoin(tu, (const struct sockaddr *)&local, (socklen_t)sizeof local,
              (const struct sockaddr *)&group, (socklen_t)sizeof group) == -1)
        return fail("mjoin");
    len = (socklen_t)sizeof user_id;
    if (mgetsockopt(tu, SOL_ECTP, ECTP_USER_ID, &user_id, &len) == -1)
        return fail("mgetsockopt(ECTP_USER_ID)");
    if (user_id == 0) {
        fprintf(stderr, "loopback: FAIL: the TU has member id 0\n");
        return 1;
    }
    if (get_int(tu, ECTP_HGT, &v) == -1)
        return fail("mgetsockopt(ECTP_HGT) on the TU");
    if (v != hgt) {
        fprintf(stderr, "loopback: FAIL: the TU learnt ECTP_HGT %d, the TO set %d\n", v, hgt);
        return 1;
    }

    n = msendm(to, message, sizeof message, 0);
    if (n != (ssize_t)sizeof message)
        return fail("msendm");
    n = mrecvmsg(tu, buf, sizeof buf, 0, &info);
    if (n == -1)
        return fail("mrecvmsg");
    if (n != (ssize_t)sizeof message || memcmp(buf, message, sizeof message) != 0
        || info.token_id != 0 || info.flags != 0) {
        fprintf(stderr, "loopback: FAIL: received %ld bytes (token %u, flags %u), not the message\n",
                (long)n, (unsigned)info.token_id, (unsigned)info.flags);
        return 1;
    }

    if (mterminate(to) == -1)
        return fail("mterminate");
    n = mrecvmsg(tu, buf, sizeof buf, 0, NULL);
    if (n != 0) {
        fprintf(stderr, "loopback: FAIL: mrecvmsg after mterminate gave %ld (%s), not 0\n",
                (long)n, n == -1 ? strerror(errno) : "data");
        return 1;
    }
    /* After the end the library may already have released the TU's descriptor. */
    if (mleave(tu, 0) == -1 && errno != ENOTCONN && errno != ECONNRESET && errno != EBADF)
        return fail("mleave");

    printf("loopback: ok (user %u, %ld bytes, then the end of the connection)\n",
           (unsigned)user_id, (long)sizeof message);
    return 0;
}
