/* Helpers shared by gserv and gclnt; see common.h. */
#include "common.h"
#include "ectp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int parse_addr(const char *text, uint16_t port, struct sockaddr_storage *ss,
               socklen_t *len, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *scope = NULL;
    const char *pct = strchr(text, '%');
    size_t hostlen = pct ? (size_t)(pct - text) : strlen(text);

    memset(ss, 0, sizeof *ss);
    if (hostlen == 0 || hostlen >= sizeof host) {
        snprintf(err, errlen, "'%s' is not a numeric IPv4 or IPv6 address", text);
        return -1;
    }
    memcpy(host, text, hostlen);
    host[hostlen] = '\0';
    if (pct)
        scope = pct + 1;

    if (!scope) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons(port);
            *len = (socklen_t)sizeof *sin;
            return 0;
        }
    }
    {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(port);
            if (scope) {
                long idx;
                unsigned int ifx;
                if (parse_long(scope, 1, 0x7fffffffL, &idx) == 0) {
                    ifx = (unsigned int)idx;
                } else {
                    ifx = if_nametoindex(scope);
                    if (ifx == 0) {
                        snprintf(err, errlen, "'%s': unknown interface '%s': %s",
                                 text, scope, strerror(errno));
                        return -1;
                    }
                }
                sin6->sin6_scope_id = ifx;
            }
            *len = (socklen_t)sizeof *sin6;
            return 0;
        }
    }
    snprintf(err, errlen, "'%s' is not a numeric IPv4 or IPv6 address", text);
    return -1;
}

const char *format_addr(const struct sockaddr *sa, socklen_t len,
                        char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN];

    if (sa == NULL) {
        snprintf(buf, buflen, "(no address)");
    } else if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        if (!inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host))
            snprintf(host, sizeof host, "?");
        snprintf(buf, buflen, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host))
            snprintf(host, sizeof host, "?");
        if (sin6->sin6_scope_id)
            snprintf(buf, buflen, "[%s%%%u]:%u", host, (unsigned)sin6->sin6_scope_id,
                     (unsigned)ntohs(sin6->sin6_port));
        else
            snprintf(buf, buflen, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, buflen, "(address family %d, length %u)",
                 (int)sa->sa_family, (unsigned)len);
    }
    return buf;
}

int parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long v;

    if (text == NULL || *text == '\0')
        return -1;
    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int read_key_file(const char *path, unsigned char key[32], char *err, size_t errlen)
{
    unsigned char buf[33];
    size_t n;
    int bad;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof buf, f);
    bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    if (n != 16 && n != 32) {
        snprintf(err, errlen, "%s: a key file holds exactly 16 or 32 bytes, not %s%lu",
                 path, n == sizeof buf ? "more than " : "", (unsigned long)(n == sizeof buf ? 32 : n));
        return -1;
    }
    memcpy(key, buf, n);
    memset(buf, 0, sizeof buf);
    return (int)n;
}

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
    return now_ns() / 1000000u;
}

void sleep_ns(uint64_t ns, volatile sig_atomic_t *stop)
{
    struct timespec req, rem;

    req.tv_sec = (time_t)(ns / 1000000000u);
    req.tv_nsec = (long)(ns % 1000000000u);
    while (nanosleep(&req, &rem) == -1 && errno == EINTR) {
        if (stop && *stop)
            return;
        req = rem;
    }
}

volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

void catch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second ^C kills at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ----- progress (-v) ----- */

static struct {
    int sd;
    int is_owner;
    const char *prog;
    uint64_t start_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int running;
} progress = { -1, 0, "", 0, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

/* One line: the figures now, with the rate over `window_ms` from `bytes_before`. */
static void progress_line(const char *what, uint64_t elapsed_ms, uint64_t bytes_before,
                          uint64_t window_ms, uint64_t *bytes_now)
{
    struct ectp_stats st;
    int members = 0;
    socklen_t len = (socklen_t)sizeof members;
    uint64_t bytes;
    double mbps;
    char who[32] = "";

    if (ectp_get_stats(progress.sd, &st) == -1) {
        fprintf(stderr, "%s: ectp_get_stats: %s\n", progress.prog, strerror(errno));
        return;
    }
    bytes = progress.is_owner ? st.bytes_sent : st.bytes_received;
    mbps = window_ms ? (double)(bytes - bytes_before) / 1e6 / ((double)window_ms / 1e3) : 0.0;
    if (progress.is_owner &&
        mgetsockopt(progress.sd, SOL_ECTP, ECTP_MEMBERS, &members, &len) == 0)
        snprintf(who, sizeof who, ", %d members", members);
    fprintf(stderr, "%s: %s%.1f s, %.2f MB %s, %.2f MB/s%s, repairs %llu asked %llu sent, rtt %.2f ms\n",
            progress.prog, what, (double)elapsed_ms / 1e3, (double)bytes / 1e6,
            progress.is_owner ? "sent" : "received", mbps, who,
            (unsigned long long)st.repairs_requested, (unsigned long long)st.repairs_sent,
            (double)st.rtt_us / 1e3);
    if (bytes_now)
        *bytes_now = bytes;
}

static void *progress_run(void *arg)
{
    uint64_t last_ms = progress.start_ms, last_bytes = 0;
    struct timespec until;

    (void)arg;
    pthread_mutex_lock(&progress.lock);
    while (progress.running) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        if (pthread_cond_timedwait(&progress.wake, &progress.lock, &until) == ETIMEDOUT &&
            progress.running) {
            uint64_t now = now_ms();
            progress_line("", now - progress.start_ms, last_bytes, now - last_ms, &last_bytes);
            last_ms = now;
        }
    }
    pthread_mutex_unlock(&progress.lock);
    return NULL;
}

int progress_start(int sd, const char *prog, int is_owner)
{
    int e;

    progress.sd = sd;
    progress.prog = prog;
    progress.is_owner = is_owner;
    progress.start_ms = now_ms();
    progress.running = 1;
    e = pthread_create(&progress.thread, NULL, progress_run, NULL);
    if (e != 0) {
        progress.running = 0;
        fprintf(stderr, "%s: pthread_create: %s\n", prog, strerror(e));
        return -1;
    }
    return 0;
}

void progress_stop(void)
{
    struct ectp_stats st;
    uint64_t elapsed;

    pthread_mutex_lock(&progress.lock);
    if (!progress.running) {
        pthread_mutex_unlock(&progress.lock);
        return;
    }
    progress.running = 0;
    pthread_cond_signal(&progress.wake);
    pthread_mutex_unlock(&progress.lock);
    pthread_join(progress.thread, NULL);
    elapsed = now_ms() - progress.start_ms;
    progress_line("summary: ", elapsed, 0, elapsed, NULL);
    if (ectp_get_stats(progress.sd, &st) == 0) {
        fprintf(stderr, "%s: summary: %llu messages delivered, packets %llu sent %llu received,"
                " %llu duplicates, %llu dropped (malformed, foreign, unexpected, source, length, range, auth)\n",
                progress.prog, (unsigned long long)st.messages_delivered,
                (unsigned long long)st.packets_sent, (unsigned long long)st.packets_received,
                (unsigned long long)st.duplicates,
                (unsigned long long)(st.dropped_malformed + st.dropped_foreign + st.dropped_unexpected +
                                     st.dropped_source + st.dropped_length + st.dropped_range +
                                     st.dropped_auth + st.dropped_replay));
        if (progress.is_owner)
            fprintf(stderr, "%s: summary: members %llu joined, %llu left, %llu ejected, %llu failed\n",
                    progress.prog, (unsigned long long)st.members_joined,
                    (unsigned long long)st.members_left, (unsigned long long)st.members_ejected,
                    (unsigned long long)st.members_failed);
    }
}

int set_group_key(int sd, const char *prog, const char *path)
{
    unsigned char key[32];
    char err[160];
    int klen = read_key_file(path, key, err, sizeof err);
    int r = 0;

    if (klen == -1) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    if (msetsockopt(sd, SOL_ECTP, ECTP_GROUP_KEY, key, (socklen_t)klen) == -1) {
        fprintf(stderr, "%s: msetsockopt(ECTP_GROUP_KEY): %s\n", prog, strerror(errno));
        r = -1;
    }
    memset(key, 0, sizeof key);
    return r;
}
