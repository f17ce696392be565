/*
 * Helpers shared by the example programs gserv (the TO) and gclnt (a TU):
 * numeric address parsing (IPv4 and IPv6 literals, no name lookups),
 * address formatting, integer option parsing and monotonic time.
 */
#ifndef ECTP_EXAMPLES_COMMON_H
#define ECTP_EXAMPLES_COMMON_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

/* Long enough for "[<IPv6 literal>%<scope>]:<port>". */
#define ADDR_TEXT_LEN 80

/*
 * Fills *ss with the numeric address `text` (an IPv4 literal such as
 * 239.255.10.10 or an IPv6 literal such as ff15::ec7b, optionally followed
 * by %<interface name or index> for a scoped IPv6 address) and `port`.
 * Returns 0, or -1 with a message written to `err` (errlen bytes).
 */
int parse_addr(const char *text, uint16_t port, struct sockaddr_storage *ss,
               socklen_t *len, char *err, size_t errlen);

/* "1.2.3.4:5" or "[::1]:5" (with %scope when there is one). Never fails. */
const char *format_addr(const struct sockaddr *sa, socklen_t len,
                        char *buf, size_t buflen);

/* Parses a decimal integer in [min, max]; 0 on success, -1 otherwise. */
int parse_long(const char *text, long min, long max, long *out);

/* Reads a group key (ECTP_GROUP_KEY) from the file `path`: exactly 16 or
 * 32 bytes. Returns its length, or -1 with a message written to `err`. */
int read_key_file(const char *path, unsigned char key[32], char *err, size_t errlen);

/* Sets ECTP_GROUP_KEY on `sd` from the key file `path` (read_key_file) and
 * wipes the copy. Returns 0, or -1 after a message on stderr. */
int set_group_key(int sd, const char *prog, const char *path);

/* Monotonic clock, nanoseconds and milliseconds. */
uint64_t now_ns(void);
uint64_t now_ms(void);

/* Sleeps `ns` nanoseconds, resuming after signals unless *stop becomes set
 * (stop may be NULL). */
void sleep_ns(uint64_t ns, volatile sig_atomic_t *stop);

/* Set by SIGINT or SIGTERM (the signal's number) once catch_stop_signals()
 * was called; a second signal kills at once. */
extern volatile sig_atomic_t stop_signal;
void catch_stop_signals(void);

/*
 * Progress (-v): once started, a thread prints a line to stderr every second
 * with the endpoint's figures (ectp_get_stats, ECTP_MEMBERS on the TO):
 *   gserv: 3.0 s, 37.50 MB sent, 12.50 MB/s, 2 members, repairs 0 asked 12 sent, rtt 0.21 ms
 * progress_stop() ends it and prints the summary of the whole run; call it
 * before the descriptor is released (mterminate, mleave).
 */
int progress_start(int sd, const char *prog, int is_owner);
void progress_stop(void);

#endif
