/*
 * gclnt - a TS-User (TU) of an ECTP-3 connection.
 *
 * Joins the connection that the TO at owner_ip runs on a multicast group
 * (late joiner, or in the creation phase if the TO is still creating it) and
 * writes the TO's multicast data to a file or standard output, so that a
 * stream can be piped into a player (gclnt | mpv -). With -t it also asks for
 * a token after a delay, sends a few messages to the TO as an SU, and returns
 * the token.
 *
 * Exit status: 0 normal end of the connection (or left with -x), 1 error,
 * 2 usage, 3 ejected / the TO is gone (ECONNRESET).
 */
#include "ectp.h"
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECV_BUF_LEN 65536
#define FLUSH_EVERY_MS 50
#define IDLE_FLUSH_MS 100
#define TOKEN_END_WAIT_MS 3000
#define MAX_TOKEN_MESSAGES 64

static const char *prog = "gclnt";
static int quiet;
static int verbose;
static int sd = -1;

/* ---- the token thread ---- */

enum token_state { TOKEN_WAITING, TOKEN_ACTIVE, TOKEN_DONE };

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t token_cond = PTHREAD_COND_INITIALIZER;
static enum token_state token_state = TOKEN_WAITING;
static int token_failed;   /* a failure other than a refusal */
static long token_after_ms = -1;
static char *token_messages[MAX_TOKEN_MESSAGES];
static int token_message_count;

static char recv_buf[RECV_BUF_LEN];

static void usage(FILE *f)
{
    fprintf(f,
"usage: %s [-l owner_ip] [-g group_ip] [-p port] [-O outfile] [-t token_after_ms]\n"
"             [-T token_messages] [-x exit_after_ms] [-A] [-C max_children] [-b] [-q] [-v]\n"
"             [-K keyfile] [-L loss_percent]\n"
"\n"
"A TU of an ECTP-3 connection: joins the connection of the TO at owner_ip on\n"
"group_ip:port and writes the data it multicasts to outfile.\n"
"\n"
"  -l owner_ip   the TO's unicast address, IPv4 or IPv6 literal (default 127.0.0.1)\n"
"  -g group_ip   multicast group (default 239.255.10.10)\n"
"  -p port       group port (default 5000)\n"
"  -O outfile    where the data goes (default -: standard output, e.g. | mpv -)\n"
"  -t ms         ms after joining, ask for a token (mtoken_get), send the\n"
"                messages of -T (mrecvmsg on the TO prints them), return it\n"
"  -T list       comma-separated messages to send with the token, each without\n"
"                a terminating NUL; empty items are skipped\n"
"                (default \"token data,good transmit\")\n"
"  -x ms         leave the connection (mleave) that long after joining, exit 0\n"
"  -A            offer to be a repair agent (ECTP_RA) when the TO runs a tree\n"
"                (gserv -t 1): a parent of later joiners\n"
"  -C n          as a repair agent, take at most n children (ECTP_MAX_CHILDREN,\n"
"                1..4096, default 32)\n"
"  -b            block in mrecvmsg (legacy style) instead of poll() + mrecvmsg\n"
"                with MSG_DONTWAIT; not with -x\n"
"  -q            report only errors, the user id, the token's progress and\n"
"                the final summary\n"
"  -v            a progress line every second on stderr (bytes, MB/s, repairs,\n"
"                RTT) and a summary at the end\n"
"  -K keyfile    the connection's group key (ECTP_GROUP_KEY): the file holds\n"
"                exactly 16 or 32 bytes, the same as the TO's (gserv -K)\n"
"  -L percent    once joined, drop that share of the datagrams received, on\n"
"                purpose (ECTP_RX_LOSS, 0..100; a testing aid: repairs follow)\n"
"  -h            this help\n"
"\n"
"Exit status: 0 end of the connection (or left with -x), 1 error, 2 usage,\n"
"3 ejected or the TO is gone (ECONNRESET).\n",
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

static void set_token_state(enum token_state s, int failed)
{
    pthread_mutex_lock(&token_lock);
    token_state = s;
    if (failed)
        token_failed = 1;
    pthread_cond_broadcast(&token_cond);
    pthread_mutex_unlock(&token_lock);
}

static void *token_thread(void *arg)
{
    int id, i, held;
    socklen_t len;

    (void)arg;
    sleep_ns((uint64_t)token_after_ms * 1000000u, NULL);
    set_token_state(TOKEN_ACTIVE, 0);

    id = mtoken_get(sd);
    if (id == -1) {
        int e = errno;
        fprintf(stderr, "%s: mtoken_get: %s\n", prog, strerror(e));
        set_token_state(TOKEN_DONE, e != EACCES);
        return NULL;
    }
    fprintf(stderr, "%s: got token %d\n", prog, id);

    held = -1;
    len = (socklen_t)sizeof held;
    if (mgetesockopt(sd, SOL_ECTP, ECTP_TOKEN_ID, &held, &len) == -1)
        fprintf(stderr, "%s: mgetesockopt(ECTP_TOKEN_ID): %s\n", prog, strerror(errno));
    else if (held != id)
        fprintf(stderr, "%s: warning: ECTP_TOKEN_ID is %d, mtoken_get returned %d\n",
                prog, held, id);

    for (i = 0; i < token_message_count; i++) {
        size_t mlen = strlen(token_messages[i]);
        ssize_t n = msendmsg(sd, token_messages[i], mlen, 0);
        if (n == -1) {
            fprintf(stderr, "%s: msendmsg(\"%s\"): %s\n", prog, token_messages[i],
                    strerror(errno));
            set_token_state(TOKEN_ACTIVE, 1);
            break;
        }
        if ((size_t)n != mlen)
            fprintf(stderr, "%s: msendmsg(\"%s\") returned %ld, not %lu\n", prog,
                    token_messages[i], (long)n, (unsigned long)mlen);
        else if (!quiet)
            fprintf(stderr, "%s: sent \"%s\"\n", prog, token_messages[i]);
    }

    if (mtoken_return(sd) == -1) {
        fprintf(stderr, "%s: mtoken_return: %s\n", prog, strerror(errno));
        set_token_state(TOKEN_DONE, 1);
        return NULL;
    }
    fprintf(stderr, "%s: returned token\n", prog);
    held = -1;
    len = (socklen_t)sizeof held;
    if (mgetsockopt(sd, SOL_ECTP, ECTP_TOKEN_ID, &held, &len) == -1)
        fprintf(stderr, "%s: mgetsockopt(ECTP_TOKEN_ID): %s\n", prog, strerror(errno));
    else if (held != 0)
        fprintf(stderr, "%s: warning: ECTP_TOKEN_ID is %d after mtoken_return\n", prog, held);
    set_token_state(TOKEN_DONE, 0);
    return NULL;
}

/* At the end of the connection: give a token exchange in progress a moment,
 * then tell whether the token part went wrong. */
static int token_outcome(int started)
{
    uint64_t until = now_ms() + TOKEN_END_WAIT_MS;
    int failed;

    if (!started)
        return 0;
    pthread_mutex_lock(&token_lock);
    while (token_state == TOKEN_ACTIVE && now_ms() < until) {
        pthread_mutex_unlock(&token_lock);
        sleep_ns(10000000u, NULL);
        pthread_mutex_lock(&token_lock);
    }
    if (token_state == TOKEN_WAITING) {
        if (!quiet)
            fprintf(stderr, "%s: the connection ended before the token was requested\n", prog);
    } else if (token_state == TOKEN_ACTIVE) {
        fprintf(stderr, "%s: the token exchange was still going on at the end\n", prog);
        token_failed = 1;
    }
    failed = token_failed;
    pthread_mutex_unlock(&token_lock);
    return failed;
}

/* ---- output ---- */

static FILE *out;
static const char *out_name = "-";
static int out_dirty;
static uint64_t last_flush_ms;

static int flush_out(void)
{
    last_flush_ms = now_ms();
    if (!out_dirty)
        return 0;
    out_dirty = 0;
    if (fflush(out) == EOF) {
        fprintf(stderr, "%s: writing %s: %s\n", prog, out_name, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_out(const char *data, size_t len)
{
    if (len > 0 && fwrite(data, 1, len, out) != len) {
        fprintf(stderr, "%s: writing %s: %s\n", prog, out_name, strerror(errno));
        return -1;
    }
    out_dirty = 1;
    if (now_ms() - last_flush_ms >= FLUSH_EVERY_MS)
        return flush_out();
    return 0;
}

/* Leaves the connection (on errors, a signal or -x); returns 0 or -1. */
static int leave(void)
{
    progress_stop();
    if (mleave(sd, 0) == -1) {
        fprintf(stderr, "%s: mleave: %s\n", prog, strerror(errno));
        return -1;
    }
    return 0;
}

/* Releases the descriptor after the connection ended (by CTR or reset).
 * The library may already have released it, or refuse: that is fine. */
static void release_after_end(void)
{
    progress_stop();
    if (mleave(sd, 0) == -1 && errno != ENOTCONN && errno != ECONNRESET && errno != EBADF)
        fprintf(stderr, "%s: mleave after the end: %s\n", prog, strerror(errno));
}

static void split_messages(char *list)
{
    char *p = list;

    token_message_count = 0;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*p != '\0') {
            if (token_message_count == MAX_TOKEN_MESSAGES)
                die_usage("more than 64 token messages in '%s'", "-T");
            token_messages[token_message_count++] = p;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
}

static void print_opt(const char *name, int opt)
{
    int v = 0;
    socklen_t len = (socklen_t)sizeof v;

    if (mgetsockopt(sd, SOL_ECTP, opt, &v, &len) == -1)
        fprintf(stderr, " %s=? (%s)", name, strerror(errno));
    else
        fprintf(stderr, " %s=%d", name, v);
}

int main(int argc, char **argv)
{
    const char *owner_text = "127.0.0.1", *group_text = "239.255.10.10";
    char default_messages[] = "token data,good transmit";
    char *messages = default_messages;
    long port = 5000, exit_after_ms = -1;
    int opt, blocking = 0, token_started = 0, user_id = 0, status = 0, ra = 0;
    long max_children = 0, rx_loss = -1;
    const char *key_file = NULL;
    struct sockaddr_storage owner, group;
    socklen_t ownerlen, grouplen, len;
    char err[160], otext[ADDR_TEXT_LEN], gtext[ADDR_TEXT_LEN];
    unsigned long long bytes = 0, nmsgs = 0, gaps = 0, truncs = 0, spurious = 0;
    uint64_t joined_ms, deadline_ms = 0;
    int have_deadline = 0;
    pthread_t tid;

    while ((opt = getopt(argc, argv, "l:g:p:O:t:T:x:AC:bqvK:L:h")) != -1) {
        switch (opt) {
        case 'l': owner_text = optarg; break;
        case 'g': group_text = optarg; break;
        case 'p':
            if (parse_long(optarg, 1, 65535, &port)) die_usage("bad port '%s'", optarg);
            break;
        case 'O': out_name = optarg; break;
        case 't':
            if (parse_long(optarg, 0, 86400000L, &token_after_ms))
                die_usage("bad token delay '%s'", optarg);
            break;
        case 'T': messages = optarg; break;
        case 'x':
            if (parse_long(optarg, 0, 86400000L, &exit_after_ms))
                die_usage("bad exit delay '%s'", optarg);
            break;
        case 'A': ra = 1; break;
        case 'C':
            if (parse_long(optarg, 1, 4096, &max_children)) die_usage("bad max children '%s'", optarg);
            break;
        case 'b': blocking = 1; break;
        case 'q': quiet = 1; break;
        case 'v': verbose = 1; break;
        case 'K': key_file = optarg; break;
        case 'L':
            if (parse_long(optarg, 0, 100, &rx_loss)) die_usage("bad loss percentage '%s' (0..100)", optarg);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (blocking && exit_after_ms >= 0)
        die_usage("%s", "-b and -x do not go together");
    split_messages(messages);

    if (parse_addr(owner_text, (uint16_t)port, &owner, &ownerlen, err, sizeof err) == -1)
        die_usage("owner address: %s", err);
    if (parse_addr(group_text, (uint16_t)port, &group, &grouplen, err, sizeof err) == -1)
        die_usage("group address: %s", err);
    if (owner.ss_family != group.ss_family)
        die_usage("the group address %s is not of the owner address's family", group_text);

    if (strcmp(out_name, "-") == 0) {
        out = stdout;
    } else {
        out = fopen(out_name, "wb");
        if (out == NULL) {
            fprintf(stderr, "%s: %s: %s\n", prog, out_name, strerror(errno));
            return 1;
        }
    }

    signal(SIGPIPE, SIG_IGN); /* a player that quits: EPIPE, then leave */
    catch_stop_signals();

    sd = msocket(owner.ss_family, SOCK_DGRAM, 0);
    if (sd == -1) {
        fprintf(stderr, "%s: msocket: %s\n", prog, strerror(errno));
        return 1;
    }
    if (ra && msetsockopt(sd, SOL_ECTP, ECTP_RA, &ra, (socklen_t)sizeof ra) == -1) {
        fprintf(stderr, "%s: msetsockopt(ECTP_RA): %s\n", prog, strerror(errno));
        return 1;
    }
    if (key_file != NULL && set_group_key(sd, prog, key_file) == -1)
        return 1;
    if (max_children > 0) {
        int v = (int)max_children;
        if (msetsockopt(sd, SOL_ECTP, ECTP_MAX_CHILDREN, &v, (socklen_t)sizeof v) == -1) {
            fprintf(stderr, "%s: msetsockopt(ECTP_MAX_CHILDREN): %s\n", prog, strerror(errno));
            return 1;
        }
    }
    if (mjoin(sd, (const struct sockaddr *)&owner, ownerlen,
              (const struct sockaddr *)&group, grouplen) == -1) {
        fprintf(stderr, "%s: mjoin(owner %s, group %s): %s\n", prog,
                format_addr((const struct sockaddr *)&owner, ownerlen, otext, sizeof otext),
                format_addr((const struct sockaddr *)&group, grouplen, gtext, sizeof gtext),
                strerror(errno));
        return 1;
    }
    joined_ms = now_ms();
    last_flush_ms = joined_ms;
    /* Once joined: a creation-phase CCR dropped on purpose would make the
     * join a late one, and the dissector test's capture a different one. */
    if (rx_loss >= 0) {
        int v = (int)rx_loss;
        if (msetsockopt(sd, SOL_ECTP, ECTP_RX_LOSS, &v, (socklen_t)sizeof v) == -1) {
            fprintf(stderr, "%s: msetsockopt(ECTP_RX_LOSS): %s\n", prog, strerror(errno));
            return 1;
        }
    }

    len = (socklen_t)sizeof user_id;
    if (mgetsockopt(sd, SOL_ECTP, ECTP_USER_ID, &user_id, &len) == -1) {
        fprintf(stderr, "%s: mgetsockopt(ECTP_USER_ID): %s\n", prog, strerror(errno));
        status = 1;
    }
    /* Always printed (tests read the id), even with -q. */
    fprintf(stderr, "%s: joined as user %u\n", prog, (unsigned)user_id);
    if (verbose && progress_start(sd, prog, 0) == -1)
        status = 1;
    {
        uint32_t parent = 0;
        int level = 0;
        socklen_t plen = (socklen_t)sizeof parent, llen = (socklen_t)sizeof level;
        if (mgetsockopt(sd, SOL_ECTP, ECTP_PARENT, &parent, &plen) == 0
            && mgetsockopt(sd, SOL_ECTP, ECTP_TREE_LEVEL, &level, &llen) == 0)
            fprintf(stderr, "%s: in the tree at level %d, parent %s%u%s\n", prog, level,
                    parent == 0 ? "the TO (" : "user ", (unsigned)parent, parent == 0 ? ")" : "");
    }
    if (!quiet) {
        fprintf(stderr, "%s: connection:", prog);
        print_opt("tco", ECTP_TCO);
        print_opt("ro", ECTP_RO);
        print_opt("mss", ECTP_MSS);
        print_opt("agn", ECTP_AGN);
        print_opt("fdn", ECTP_FDN);
        print_opt("hgt", ECTP_HGT);
        fputc('\n', stderr);
    }

    if (token_after_ms >= 0) {
        int e = pthread_create(&tid, NULL, token_thread, NULL);
        if (e != 0)
            fprintf(stderr, "%s: pthread_create: %s\n", prog, strerror(e));
        else
            token_started = 1;
    }
    if (exit_after_ms >= 0) {
        have_deadline = 1;
        deadline_ms = joined_ms + (uint64_t)exit_after_ms;
    }

    for (;;) {
        struct ectp_rcvinfo info;
        ssize_t n;

        if (stop_signal) {
            flush_out();
            fprintf(stderr, "%s: signal %d: leaving, received %llu bytes\n", prog,
                    (int)stop_signal, bytes);
            leave();
            return 128 + (int)stop_signal;
        }
        if (!blocking) {
            struct pollfd pfd;
            int timeout = -1, r;

            if (have_deadline) {
                uint64_t now = now_ms();
                if (now >= deadline_ms) {
                    if (flush_out() == -1)
                        status = 1;
                    if (leave() == -1)
                        return 1;
                    fprintf(stderr, "%s: left after %ld ms, received %llu bytes\n", prog,
                            exit_after_ms, bytes);
                    if (out != stdout && fclose(out) == EOF) {
                        fprintf(stderr, "%s: writing %s: %s\n", prog, out_name,
                                strerror(errno));
                        status = 1;
                    }
                    return status;
                }
                timeout = (int)(deadline_ms - now);
            }
            if (out_dirty && (timeout < 0 || timeout > IDLE_FLUSH_MS))
                timeout = IDLE_FLUSH_MS;
            pfd.fd = sd;
            pfd.events = POLLIN;
            pfd.revents = 0;
            r = poll(&pfd, 1, timeout);
            if (r == -1) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "%s: poll: %s\n", prog, strerror(errno));
                leave();
                return 1;
            }
            if (r == 0) {
                if (out_dirty && flush_out() == -1) {
                    leave();
                    return 1;
                }
                continue;
            }
            if (pfd.revents & POLLNVAL) {
                fprintf(stderr, "%s: poll: the ECTP descriptor is not open (POLLNVAL)\n", prog);
                return 1;
            }
        }

        memset(&info, 0, sizeof info);
        info.fromlen = (socklen_t)sizeof info.from;
        n = mrecvmsg(sd, recv_buf, sizeof recv_buf, blocking ? 0 : MSG_DONTWAIT, &info);
        if (n > 0) {
            bytes += (unsigned long long)n;
            nmsgs++;
            if (info.flags & ECTP_MSG_GAP) {
                gaps++;
                if (!quiet)
                    fprintf(stderr, "%s: data lost before message %llu\n", prog, nmsgs);
            }
            if (info.flags & ECTP_MSG_TRUNC) {
                truncs++;
                fprintf(stderr, "%s: message %llu was longer than %d bytes: truncated\n",
                        prog, nmsgs, RECV_BUF_LEN);
            }
            if (write_out(recv_buf, (size_t)n) == -1) {
                leave();
                return 1;
            }
            continue;
        }
        if (n == 0) {
            int token_bad;
            if (flush_out() == -1)
                status = 1;
            if (out != stdout && fclose(out) == EOF) {
                fprintf(stderr, "%s: writing %s: %s\n", prog, out_name, strerror(errno));
                status = 1;
            }
            token_bad = token_outcome(token_started);
            release_after_end();
            fprintf(stderr, "%s: connection ended, received %llu bytes\n", prog, bytes);
            fprintf(stderr, "%s: %llu messages, %llu after a gap, %llu truncated\n",
                    prog, nmsgs, gaps, truncs);
            if (spurious && !quiet)
                fprintf(stderr, "%s: %llu times poll() said readable but mrecvmsg had"
                        " nothing (EAGAIN)\n", prog, spurious);
            if (token_bad)
                status = 1;
            return status;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!blocking) {
                spurious++;
                continue;
            }
        }
        {
            int e = errno;
            fprintf(stderr, "%s: mrecvmsg: %s\n", prog, strerror(e));
            flush_out();
            fprintf(stderr, "%s: received %llu bytes in %llu messages, %llu after a gap\n",
                    prog, bytes, nmsgs, gaps);
            if (e == ECONNRESET) {
                release_after_end();
                return 3;
            }
            leave();
            return 1;
        }
    }
}
