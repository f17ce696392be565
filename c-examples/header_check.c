/*
 * header_check - ectp.h is self-contained: this file includes nothing else and
 * compiles with -std=c99 -Wall -Wextra -Werror -pedantic (no feature-test
 * macros). It also pins the API contract at compile time: the constants'
 * values (docs/api.md, "Constants"), the functions' types (a pointer to each is
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
HC_ASSERT(window, ECTP_WINDOW == 19);
HC_ASSERT(ra, ECTP_RA == 20);
HC_ASSERT(max_children, ECTP_MAX_CHILDREN == 21);
HC_ASSERT(parent, ECTP_PARENT == 22);
HC_ASSERT(tree_level, ECTP_TREE_LEVEL == 23);
HC_ASSERT(leave_callback, ECTP_LEAVE_CALLBACK == 24);
HC_ASSERT(group_key, ECTP_GROUP_KEY == 25);
HC_ASSERT(leave_left, ECTP_LEAVE_LEFT == 1);
HC_ASSERT(leave_ejected, ECTP_LEAVE_EJECTED == 2);
HC_ASSERT(leave_failed, ECTP_LEAVE_FAILED == 3);
HC_ASSERT(rcvinfo_from, sizeof(((struct ectp_rcvinfo *)0)->from) == sizeof(struct sockaddr_storage));

static void join_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}

static void token_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}

static void leave_cb(int sd, uint32_t user_id, int reason)
{
    (void)sd; (void)user_id; (void)reason;
}

int header_check(void);

#include "signatures.inc"

int header_check(void)
{
    return check_signatures();
}
