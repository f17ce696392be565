/*
 * gserv - the TC-Owner (TO) of an ECTP-3 connection.
 *
 * Creates a connection on a multicast group, multicasts a file (or standard
 * input) in fixed-size messages paced to a rate, and prints every message
 * that a sending TU (an SU, a TU holding a token) sends back:
 *
 *     TU <user_id> (token <token_id>) says: <message>
 *
 * Join and token requests are reported on stderr and accepted (or all
 * refused with -R join / -R token, for tests).
 */
#include "ectp.h"
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECV_BUF_LEN 65536
#define MAX_CHUNK (16L * 1024 * 1024)
#define MAX_RATE_KBPS 1000000L

static const char *prog = "gserv";

/* Set before mcreate, read by the callbacks on the library's thread. */
static int quiet;
static int verbose;
static int refuse_joins;
static int refuse_tokens;


/* The ECTP descriptor, and whether it may still be polled. */
static int g_sd = -1;
static int polling_ok = 1;
static char recv_buf[RECV_BUF_LEN];

static void usage(FILE *f)
{
    fprintf(f,
"usage: %s [-l local_ip] [-g group_ip] [-p port] [-r rate_KBps] [-s chunk_bytes]\n"
"             [-m mss] [-c cct_ms] [-o ro] [-H hgt_ms] [-t tco] [-C max_children]\n"
"             [-a agn] [-F fdn] [-K keyfile] [-L loss_percent] [-v]\n"
"             [-R join|token] [-q] [-w linger_ms] [file|-]\n"
"\n"
"The TO of an ECTP-3 connection: multicasts `file' (default: standard input)\n"
"in messages of chunk_bytes and prints what sending TUs send back, one line each:\n"
"  TU <user_id> (token <token_id>) says: <message>\n"
"\n"
"  -l local_ip   the TO's unicast address; IPv4 or IPv6 literal, its family\n"
"                is the connection's (default 127.0.0.1)\n"
"  -g group_ip   multicast group (default 239.255.10.10)\n"
"  -p port       group port (default 5000)\n"
"  -r rate       pace sending to rate KiB/s (1 KiB = 1024 bytes; default 0:\n"
"                as fast as the library lets it)\n"
"  -s bytes      bytes per message (default 1024)\n"
"  -m mss        ECTP_MSS, user bytes per DATA packet (default: the library's)\n"
"  -c ms         ECTP_CCT, connection creation time (default: the library's, 0)\n"
"  -o ro         ECTP_RO: 0 unreliable, 1 semi-reliable, 2 reliable (default 2)\n"
"  -H ms         ECTP_HGT, heartbeat period (default: the library's)\n"
"  -t tco        ECTP_TCO: 0 flat, 1 tree (default: the library's, flat); in a\n"
"                tree, TUs started with gclnt -A become repair agents\n"
"  -C n          ECTP_MAX_CHILDREN: most children of the TO (default 4096)\n"
"  -a agn        ECTP_AGN, ACK generation number (default: the library's)\n"
"  -F fdn        ECTP_FDN, failure detection number (default: the library's)\n"
"  -K keyfile    a group key (ECTP_GROUP_KEY): every packet authenticated, the\n"
"                data encrypted; the file holds exactly 16 or 32 bytes, and\n"
"                the TUs need the same (gclnt -K)\n"
"  -L percent    drop that share of the datagrams received, on purpose\n"
"                (ECTP_RX_LOSS, 0..100; a testing aid)\n"
"  -R what       refuse every join request (-R join) or token request\n"
"                (-R token) instead of accepting it; may be repeated\n"
"  -q            do not report join and token requests\n"
"  -v            a progress line every second on stderr (bytes, MB/s, members,\n"
"                repairs, RTT) and a summary before terminating\n"
"  -w ms         after the end of input keep printing TU messages for ms\n"
"                before terminating the connection (default 1000)\n"
"  -h            this help\n",
        prog);
}

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

/* ---- callbacks, called on the library's thread ---- */

static void on_join(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    char text[ADDR_TEXT_LEN];
    int flag = refuse_joins ? 0 : 1;

    if (!quiet) {
        fprintf(stderr, "join request: user %lu from %s\n", (unsigned long)user_id,
                format_addr(addr, addrlen, text, sizeof text));
        if (!flag)
            fprintf(stderr, "%s: refusing the join of user %lu\n", prog, (unsigned long)user_id);
    }
    if (mjoin_confirm(sd, user_id, flag) == -1)
        fprintf(stderr, "%s: mjoin_confirm(user %lu, %d): %s\n", prog,
                (unsigned long)user_id, flag, strerror(errno));
}

static void on_token(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    char text[ADDR_TEXT_LEN];
    int flag = refuse_tokens ? 0 : 1;

    if (!quiet) {
        fprintf(stderr, "token request: user %lu from %s\n", (unsigned long)user_id,
                format_addr(addr, addrlen, text, sizeof text));
        if (!flag)
            fprintf(stderr, "%s: refusing a token to user %lu\n", prog, (unsigned long)user_id);
    }
    if (mtoken_confirm(sd, user_id, flag) == -1)
        fprintf(stderr, "%s: mtoken_confirm(user %lu, %d): %s\n", prog,
                (unsigned long)user_id, flag, strerror(errno));
}

static void on_leave(int sd, uint32_t user_id, int reason)
{
    const char *why = reason == ECTP_LEAVE_LEFT ? "left" : reason == ECTP_LEAVE_EJECTED ? "was ejected" : "failed";

    (void)sd;
    if (!quiet)
        fprintf(stderr, "user %lu %s\n", (unsigned long)user_id, why);
}

/* ---- receiving what SUs send ---- */

static void print_message(const struct ectp_rcvinfo *info, const char *msg, size_t len)
{
    size_t i;

    printf("TU %lu (token %u) says: ", (unsigned long)info->user_id, (unsigned)info->token_id);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        /* Keep the log one line per message: control characters become '.'. */
        putchar((c < 0x20 && c != '\t') || c == 0x7f ? '.' : c);
    }
    putchar('\n');
    fflush(stdout);
    if (info->flags & ECTP_MSG_TRUNC)
        fprintf(stderr, "%s: the message of TU %lu was longer than %d bytes: truncated\n",
                prog, (unsigned long)info->user_id, RECV_BUF_LEN);
}

/* Reads every message that is ready, without blocking. */
static void drain(void)
{
    int i;

    for (i = 0; i < 1024 && polling_ok; i++) {
        struct ectp_rcvinfo info;
        ssize_t n;

        memset(&info, 0, sizeof info);
        info.fromlen = (socklen_t)sizeof info.from;
        n = mrecvmsg(g_sd, recv_buf, sizeof recv_buf, MSG_DONTWAIT, &info);
        if (n > 0 || (n == 0 && info.user_id != 0)) {
            print_message(&info, recv_buf, (size_t)n);
        } else if (n == 0) {
            /* "End of connection" makes no sense on the TO: stop polling
             * rather than spin on a descriptor that stays readable. */
            fprintf(stderr, "%s: mrecvmsg returned 0 (end of connection) on the TO;"
                    " no longer reading TU messages\n", prog);
            polling_ok = 0;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        } else {
            fprintf(stderr, "%s: mrecvmsg: %s; no longer reading TU messages\n",
                    prog, strerror(errno));
            polling_ok = 0;
        }
    }
}

/* Waits up to timeout_ms (0: just looks) for TU messages and prints them. */
static void service(int timeout_ms)
{
    struct pollfd pfd;
    int r;

    if (!polling_ok) {
        if (timeout_ms > 0)
            sleep_ns((uint64_t)timeout_ms * 1000000u, &stop_signal);
        return;
    }
    pfd.fd = g_sd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    r = poll(&pfd, 1, timeout_ms);
    if (r == -1) {
        if (errno != EINTR) {
            fprintf(stderr, "%s: poll: %s; no longer reading TU messages\n",
                    prog, strerror(errno));
            polling_ok = 0;
        }
        return;
    }
    if (r == 0)
        return;
    if (pfd.revents & POLLNVAL) {
        fprintf(stderr, "%s: poll: the ECTP descriptor is not open (POLLNVAL);"
                " no longer reading TU messages\n", prog);
        polling_ok = 0;
        return;
    }
    /* POLLERR/POLLHUP too: mrecvmsg tells what happened. */
    drain();
}

/* Serves TU messages until the monotonic time `deadline` (ns) or a signal. */
static void wait_until(uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ns();
        uint64_t rem;

        if (now >= deadline || stop_signal)
            return;
        rem = deadline - now;
        if (polling_ok && rem >= 1000000u) {
            uint64_t ms = rem / 1000000u;
            service((int)(ms > 1000000u ? 1000000u : ms));
        } else {
            sleep_ns(rem, &stop_signal);
        }
    }
}

/* ---- setup helpers ---- */

static int set_int_opt(int sd, int level, int name, const char *label, int value)
{
    if (msetsockopt(sd, level, name, &value, (socklen_t)sizeof value) == -1) {
        fprintf(stderr, "%s: msetsockopt(%s, %d): %s\n", prog, label, value, strerror(errno));
        return -1;
    }
    return 0;
}

/* The index of the interface that has IPv6 address `a`, or 0. */
static unsigned int ifindex_of(const struct in6_addr *a)
{
    struct ifaddrs *list, *p;
    unsigned int idx = 0;

    if (getifaddrs(&list) == -1) {
        fprintf(stderr, "%s: getifaddrs: %s\n", prog, strerror(errno));
        return 0;
    }
    for (p = list; p != NULL; p = p->ifa_next) {
        const struct sockaddr_in6 *s6;
        if (p->ifa_addr == NULL || p->ifa_addr->sa_family != AF_INET6)
            continue;
        s6 = (const struct sockaddr_in6 *)(const void *)p->ifa_addr;
        if (memcmp(&s6->sin6_addr, a, sizeof *a) == 0) {
            idx = if_nametoindex(p->ifa_name);
            if (idx == 0)
                fprintf(stderr, "%s: if_nametoindex(%s): %s\n", prog, p->ifa_name,
                        strerror(errno));
            break;
        }
    }
    freeifaddrs(list);
    return idx;
}

/* Reads up to len bytes, as many as there are before end of input. */
static ssize_t read_chunk(int fd, char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR && !stop_signal)
                continue;
            if (errno == EINTR)
                break;
            return -1;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int main(int argc, char **argv)
{
    const char *local_text = "127.0.0.1", *group_text = "239.255.10.10";
    const char *input = "-";
    long port = 5000, rate = 0, chunk = 1024, linger = 1000;
    long mss = -1, cct = -1, ro = ECTP_RO_RELIABLE, hgt = -1, tco = -1, agn = -1, fdn = -1, max_children = -1;
    long rx_loss = -1;
    const char *key_file = NULL;
    struct sockaddr_storage local, group;
    socklen_t locallen, grouplen;
    char err[160], ltext[ADDR_TEXT_LEN], gtext[ADDR_TEXT_LEN];
    ectp_join_callback jcb = on_join;
    ectp_token_callback tcb = on_token;
    ectp_leave_callback lcb = on_leave;
    uint64_t t0, sent_bytes = 0, messages = 0;
    int sd, in_fd, opt, status = 0;
    char *buf;

    while ((opt = getopt(argc, argv, "l:g:p:r:s:m:c:o:H:t:C:a:F:K:L:R:qvw:h")) != -1) {
        switch (opt) {
        case 'l': local_text = optarg; break;
        case 'g': group_text = optarg; break;
        case 'p':
            if (parse_long(optarg, 1, 65535, &port)) die_usage("bad port '%s'", optarg);
            break;
        case 'r':
            if (parse_long(optarg, 0, MAX_RATE_KBPS, &rate)) die_usage("bad rate '%s'", optarg);
            break;
        case 's':
            if (parse_long(optarg, 1, MAX_CHUNK, &chunk)) die_usage("bad chunk size '%s'", optarg);
            break;
        case 'm':
            if (parse_long(optarg, 0, 0x7fffffffL, &mss)) die_usage("bad mss '%s'", optarg);
            break;
        case 'c':
            if (parse_long(optarg, 0, 0x7fffffffL, &cct)) die_usage("bad cct '%s'", optarg);
            break;
        case 'o':
            if (parse_long(optarg, 0, 2, &ro)) die_usage("bad ro '%s' (0, 1 or 2)", optarg);
            break;
        case 'H':
            if (parse_long(optarg, 0, 0x7fffffffL, &hgt)) die_usage("bad hgt '%s'", optarg);
            break;
        case 't':
            if (parse_long(optarg, 0, 1, &tco)) die_usage("bad tco '%s' (0 or 1)", optarg);
            break;
        case 'C':
            if (parse_long(optarg, 1, 4096, &max_children)) die_usage("bad max children '%s'", optarg);
            break;
        case 'a':
            if (parse_long(optarg, 0, 0x7fffffffL, &agn)) die_usage("bad agn '%s'", optarg);
            break;
        case 'F':
            if (parse_long(optarg, 0, 0x7fffffffL, &fdn)) die_usage("bad fdn '%s'", optarg);
            break;
        case 'K': key_file = optarg; break;
        case 'L':
            if (parse_long(optarg, 0, 100, &rx_loss)) die_usage("bad loss percentage '%s' (0..100)", optarg);
            break;
        case 'R':
            if (strcmp(optarg, "join") == 0) refuse_joins = 1;
            else if (strcmp(optarg, "token") == 0) refuse_tokens = 1;
            else die_usage("-R takes 'join' or 'token', not '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'v': verbose = 1; break;
        case 'w':
            if (parse_long(optarg, 0, 3600000L, &linger)) die_usage("bad linger '%s'", optarg);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind > 1)
        die_usage("too many arguments, starting at '%s'", argv[optind + 1]);
    if (optind < argc)
        input = argv[optind];

    if (parse_addr(local_text, 0, &local, &locallen, err, sizeof err) == -1)
        die_usage("local address: %s", err);
    if (parse_addr(group_text, (uint16_t)port, &group, &grouplen, err, sizeof err) == -1)
        die_usage("group address: %s", err);
    if (local.ss_family != group.ss_family)
        die_usage("the group address %s is not of the local address's family", group_text);

    /* Open the input first: no connection for a file that is not there. */
    if (strcmp(input, "-") == 0) {
        in_fd = STDIN_FILENO;
    } else {
        in_fd = open(input, O_RDONLY);
        if (in_fd == -1) {
            fprintf(stderr, "%s: %s: %s\n", prog, input, strerror(errno));
            return 1;
        }
    }
    buf = malloc((size_t)chunk);
    if (buf == NULL) {
        fprintf(stderr, "%s: malloc(%ld): %s\n", prog, chunk, strerror(errno));
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    catch_stop_signals();

    sd = msocket(local.ss_family, SOCK_DGRAM, 0);
    if (sd == -1) {
        fprintf(stderr, "%s: msocket: %s\n", prog, strerror(errno));
        return 1;
    }
    g_sd = sd;

    /* Where the multicast leaves, and loop it back to TUs on this host. */
    if (local.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&local;
        if (msetsockopt(sd, IPPROTO_IP, IP_MULTICAST_IF, &sin->sin_addr,
                        (socklen_t)sizeof sin->sin_addr) == -1) {
            fprintf(stderr, "%s: msetsockopt(IP_MULTICAST_IF, %s): %s\n", prog, local_text,
                    strerror(errno));
            return 1;
        }
        if (set_int_opt(sd, IPPROTO_IP, IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", 1) == -1)
            return 1;
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&local;
        unsigned int ifindex = sin6->sin6_scope_id ? sin6->sin6_scope_id
                                                   : ifindex_of(&sin6->sin6_addr);
        if (ifindex == 0) {
            fprintf(stderr, "%s: warning: no interface has the address %s;"
                    " IPV6_MULTICAST_IF not set\n", prog, local_text);
        } else if (msetsockopt(sd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex,
                               (socklen_t)sizeof ifindex) == -1) {
            fprintf(stderr, "%s: msetsockopt(IPV6_MULTICAST_IF, %u): %s\n", prog, ifindex,
                    strerror(errno));
            return 1;
        }
        if (set_int_opt(sd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", 1) == -1)
            return 1;
    }

    /* Connection options, then the callbacks, all before mcreate. */
    if (set_int_opt(sd, SOL_ECTP, ECTP_RO, "ECTP_RO", (int)ro) == -1)
        return 1;
    if (mss >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_MSS, "ECTP_MSS", (int)mss) == -1)
        return 1;
    if (cct >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_CCT, "ECTP_CCT", (int)cct) == -1)
        return 1;
    if (hgt >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_HGT, "ECTP_HGT", (int)hgt) == -1)
        return 1;
    if (tco >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_TCO, "ECTP_TCO", (int)tco) == -1)
        return 1;
    if (agn >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_AGN, "ECTP_AGN", (int)agn) == -1)
        return 1;
    if (max_children >= 0
        && set_int_opt(sd, SOL_ECTP, ECTP_MAX_CHILDREN, "ECTP_MAX_CHILDREN", (int)max_children) == -1)
        return 1;
    if (fdn >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_FDN, "ECTP_FDN", (int)fdn) == -1)
        return 1;
    if (rx_loss >= 0 && set_int_opt(sd, SOL_ECTP, ECTP_RX_LOSS, "ECTP_RX_LOSS", (int)rx_loss) == -1)
        return 1;
    if (key_file != NULL && set_group_key(sd, prog, key_file) == -1)
        return 1;
    if (msetsockopt(sd, SOL_ECTP, ECTP_JOIN_CALLBACK, &jcb, (socklen_t)sizeof jcb) == -1) {
        fprintf(stderr, "%s: msetsockopt(ECTP_JOIN_CALLBACK): %s\n", prog, strerror(errno));
        return 1;
    }
    if (msetsockopt(sd, SOL_ECTP, ECTP_TOKEN_CALLBACK, &tcb, (socklen_t)sizeof tcb) == -1) {
        fprintf(stderr, "%s: msetsockopt(ECTP_TOKEN_CALLBACK): %s\n", prog, strerror(errno));
        return 1;
    }
    if (msetsockopt(sd, SOL_ECTP, ECTP_LEAVE_CALLBACK, &lcb, (socklen_t)sizeof lcb) == -1) {
        fprintf(stderr, "%s: msetsockopt(ECTP_LEAVE_CALLBACK): %s\n", prog, strerror(errno));
        return 1;
    }

    if (mcreate(sd, (const struct sockaddr *)&local, locallen,
                (const struct sockaddr *)&group, grouplen) == -1) {
        fprintf(stderr, "%s: mcreate(%s, %s): %s\n", prog,
                format_addr((const struct sockaddr *)&local, locallen, ltext, sizeof ltext),
                format_addr((const struct sockaddr *)&group, grouplen, gtext, sizeof gtext),
                strerror(errno));
        return 1;
    }
    if (!quiet)
        fprintf(stderr, "%s: connection created on %s by %s, sending %s\n", prog,
                format_addr((const struct sockaddr *)&group, grouplen, gtext, sizeof gtext),
                local_text, strcmp(input, "-") == 0 ? "standard input" : input);
    if (verbose && progress_start(sd, prog, 1) == -1)
        return 1;

    /* Stream: message k leaves at t0 + (bytes before it) / rate. */
    t0 = now_ns();
    while (!stop_signal) {
        ssize_t n = read_chunk(in_fd, buf, (size_t)chunk);
        ssize_t r;

        if (n < 0) {
            fprintf(stderr, "%s: reading %s: %s\n", prog, input, strerror(errno));
            status = 1;
            break;
        }
        if (n == 0 || stop_signal)
            break;
        if (rate > 0) {
            uint64_t bps = (uint64_t)rate * 1024u;
            uint64_t at = t0 + (sent_bytes / bps) * 1000000000u
                             + (sent_bytes % bps) * 1000000000u / bps;
            service(0);
            wait_until(at);
        } else {
            service(0);
        }
        r = msendm(sd, buf, (size_t)n, 0);
        if (r == -1) {
            if (errno == EINTR && stop_signal)
                break;
            fprintf(stderr, "%s: msendm(%ld bytes): %s\n", prog, (long)n, strerror(errno));
            status = 1;
            break;
        }
        if (r != n)
            fprintf(stderr, "%s: msendm returned %ld for a message of %ld bytes\n", prog,
                    (long)r, (long)n);
        sent_bytes += (uint64_t)n;
        messages++;
    }
    if (in_fd != STDIN_FILENO)
        close(in_fd);
    free(buf);

    /* Linger: TUs still holding a token may have more to say. */
    if (!stop_signal && status == 0 && linger > 0)
        wait_until(now_ns() + (uint64_t)linger * 1000000u);
    if (!stop_signal && status == 0)
        service(0);

    if (!quiet) {
        int members = 0;
        socklen_t mlen = (socklen_t)sizeof members;
        if (mgetsockopt(sd, SOL_ECTP, ECTP_MEMBERS, &members, &mlen) == -1)
            fprintf(stderr, "%s: mgetsockopt(ECTP_MEMBERS): %s\n", prog, strerror(errno));
        else
            fprintf(stderr, "%s: %d members at the end\n", prog, members);
    }
    progress_stop();
    if (mterminate(sd) == -1) {
        fprintf(stderr, "%s: mterminate: %s\n", prog, strerror(errno));
        status = 1;
    }
    fprintf(stderr, "%s: sent %llu bytes in %llu messages\n", prog,
            (unsigned long long)sent_bytes, (unsigned long long)messages);
    if (stop_signal) {
        fprintf(stderr, "%s: stopped by signal %d\n", prog, (int)stop_signal);
        return 128 + (int)stop_signal;
    }
    return status;
}
