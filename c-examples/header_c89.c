/*
 * header_c89 - ectp.h compiles as C89 too: this file includes nothing else and
 * is compiled with -std=c89 -pedantic -Wall -Wextra -Werror, which rejects
 * what cbindgen may emit and C89 lacks: // comments (cbindgen's own
 * "#endif // __cplusplus", hence the guard written in cbindgen.toml), bool,
 * inline, trailing commas in enums. It uses a few of the header's types and
 * functions, so that they are parsed in C89 mode, not only declared.
 */
#include "ectp.h"

int header_c89(void);

static void leave_cb(int sd, uint32_t user_id, int reason)
{
    (void)sd;
    (void)user_id;
    (void)reason;
}

int header_c89(void)
{
    struct ectp_rcvinfo info;
    struct ectp_member member;
    struct ectp_stats stats;
    ectp_leave_callback lcb;
    int (*f_socket)(int, int, int);
    int (*f_stats)(int, struct ectp_stats *);

    lcb = leave_cb;
    f_socket = msocket;
    f_stats = ectp_get_stats;
    info.flags = ECTP_MSG_TRUNC | ECTP_MSG_GAP;
    member.token_id = 0;
    stats.packets_sent = 0;
    return (lcb != 0) + (f_socket != 0) + (f_stats != 0) + (int)info.flags + member.token_id
         + (int)stats.packets_sent + SOL_ECTP;
}
