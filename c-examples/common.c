/* Helpers shared by gserv and gclnt; see common.h. */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
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
