/*
 * header_check - ectp.h is self-contained: this file includes nothing else and
 * compiles with -std=c99 -Wall -Wextra -Werror -pedantic (no feature-test
 * macros). It also pins the API contract at compile time: the constants'
 * values (docs/c-constants.md), the functions' types (a pointer to each is
 * initialised with the contract's type) and struct ectp_rcvinfo's fields.
 */
#include "ectp.h"

#define HC_ASSERT(name, cond) typedef char header_check_##name[(cond) ? 1 : -1]

HC_ASSERT(sol_ectp, SOL_ECTP == 0x4543);
HC_ASSERT(tco, ECTP_TCO == 1);
HC_ASSERT(ro, ECTP_RO == 2);
HC_ASSERT(agn, ECTP_AGN == 3);
HC_ASSERT(mss, ECTP_MSS == 4);
HC_ASSERT(fdn, ECTP_FDN == 5);
HC_ASSERT(hgt, ECTP_HGT == 6);
HC_ASSERT(cct, ECTP_CCT == 7);
HC_ASSERT(join_callback, ECTP_JOIN_CALLBACK == 8);
HC_ASSERT(token_callback, ECTP_TOKEN_CALLBACK == 9);
HC_ASSERT(members, ECTP_MEMBERS == 10);
HC_ASSERT(user_id, ECTP_USER_ID == 11);
HC_ASSERT(token_id, ECTP_TOKEN_ID == 12);
HC_ASSERT(rxt, ECTP_RXT == 13);
HC_ASSERT(retries, ECTP_RETRIES == 14);
HC_ASSERT(tco_flat, ECTP_TCO_FLAT == 0);
HC_ASSERT(tco_tree, ECTP_TCO_TREE == 1);
HC_ASSERT(ro_unreliable, ECTP_RO_UNRELIABLE == 0);
HC_ASSERT(ro_semireliable, ECTP_RO_SEMIRELIABLE == 1);
HC_ASSERT(ro_reliable, ECTP_RO_RELIABLE == 2);
HC_ASSERT(msg_trunc, ECTP_MSG_TRUNC == 1);
HC_ASSERT(msg_gap, ECTP_MSG_GAP == 2);
HC_ASSERT(rcvinfo_from, sizeof(((struct ectp_rcvinfo *)0)->from) == sizeof(struct sockaddr_storage));

static void join_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}

static void token_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}

int header_check(void);

/* Any type that differs from the contract is an incompatible-pointer
 * warning, hence an error. Returns the number of functions checked. */
int header_check(void)
{
    int (*f_socket)(int, int, int) = msocket;
    int (*f_setopt)(int, int, int, const void *, socklen_t) = msetsockopt;
    int (*f_getopt)(int, int, int, void *, socklen_t *) = mgetsockopt;
    int (*f_getEopt)(int, int, int, void *, socklen_t *) = mgetesockopt;
    int (*f_create)(int, const struct sockaddr *, socklen_t, const struct sockaddr *, socklen_t)
        = mcreate;
    int (*f_join)(int, const struct sockaddr *, socklen_t, const struct sockaddr *, socklen_t)
        = mjoin;
    ssize_t (*f_sendm)(int, const void *, size_t, int) = msendm;
    ssize_t (*f_sendmsg)(int, const void *, size_t, int) = msendmsg;
    ssize_t (*f_recvmsg)(int, void *, size_t, int, struct ectp_rcvinfo *) = mrecvmsg;
    int (*f_tget)(int) = mtoken_get;
    int (*f_tret)(int) = mtoken_return;
    int (*f_jconf)(int, uint32_t, int) = mjoin_confirm;
    int (*f_tconf)(int, uint32_t, int) = mtoken_confirm;
    int (*f_leave)(int, uint32_t) = mleave;
    int (*f_term)(int) = mterminate;
    ectp_join_callback jcb = join_cb;
    ectp_token_callback tcb = token_cb;
    struct ectp_rcvinfo info;
    uint32_t *uid = &info.user_id;
    uint8_t *tid = &info.token_id;
    uint32_t *flags = &info.flags;
    struct sockaddr_storage *from = &info.from;
    socklen_t *fromlen = &info.fromlen;

    return (f_socket != 0) + (f_setopt != 0) + (f_getopt != 0) + (f_getEopt != 0)
         + (f_create != 0) + (f_join != 0) + (f_sendm != 0) + (f_sendmsg != 0)
         + (f_recvmsg != 0) + (f_tget != 0) + (f_tret != 0) + (f_jconf != 0)
         + (f_tconf != 0) + (f_leave != 0) + (f_term != 0) + (jcb != 0) + (tcb != 0)
         + (uid != 0) + (tid != 0) + (flags != 0) + (from != 0) + (fromlen != 0);
}
