// cxx_check - ectp.h from C++ (built as C++98 and as C++17).
//
// Compiles against the header with -Wall -Wextra -Werror, checks that the
// functions have the signatures of the API contract (a pointer to each is
// taken with the contract's type), and makes a few calls that need no
// connection: msendm before mcreate fails with ENOTCONN, a bad descriptor
// gives EBADF, an unknown ECTP option ENOPROTOOPT, and msocket with an
// unknown address family fails.
#include "ectp.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

extern "C" {
static void join_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}
static void token_cb(int sd, uint32_t user_id, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)sd; (void)user_id; (void)addr; (void)addrlen;
}
}

namespace {

int failures = 0;

void fail(const char *what, int err)
{
    std::fprintf(stderr, "cxx_check: FAIL: %s (errno %d: %s)\n", what, err, std::strerror(err));
    failures++;
}

// Each initialisation fails to compile if the header's type differs.
void check_signatures()
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

    (void)f_socket; (void)f_setopt; (void)f_getopt; (void)f_getEopt; (void)f_create;
    (void)f_join; (void)f_sendm; (void)f_sendmsg; (void)f_recvmsg; (void)f_tget;
    (void)f_tret; (void)f_jconf; (void)f_tconf; (void)f_leave; (void)f_term;
    (void)jcb; (void)tcb; (void)uid; (void)tid; (void)flags; (void)from; (void)fromlen;
}

// The constants are integral constant expressions, usable as case labels.
const char *option_name(int opt)
{
    switch (opt) {
    case ECTP_TCO: return "ECTP_TCO";
    case ECTP_RO: return "ECTP_RO";
    case ECTP_AGN: return "ECTP_AGN";
    case ECTP_MSS: return "ECTP_MSS";
    case ECTP_FDN: return "ECTP_FDN";
    case ECTP_HGT: return "ECTP_HGT";
    case ECTP_CCT: return "ECTP_CCT";
    case ECTP_JOIN_CALLBACK: return "ECTP_JOIN_CALLBACK";
    case ECTP_TOKEN_CALLBACK: return "ECTP_TOKEN_CALLBACK";
    case ECTP_MEMBERS: return "ECTP_MEMBERS";
    case ECTP_USER_ID: return "ECTP_USER_ID";
    case ECTP_TOKEN_ID: return "ECTP_TOKEN_ID";
    case ECTP_RXT: return "ECTP_RXT";
    case ECTP_RETRIES: return "ECTP_RETRIES";
    default: return "?";
    }
}

} // namespace

int main()
{
    check_signatures();
    if (std::strcmp(option_name(ECTP_RO), "ECTP_RO") != 0)
        fail("option_name", 0);

    int sd = msocket(AF_INET, SOCK_DGRAM, 0);
    if (sd == -1) {
        fail("msocket(AF_INET, SOCK_DGRAM, 0)", errno);
    } else {
        errno = 0;
        ssize_t r = msendm(sd, "x", 1, 0);
        if (r != -1 || errno != ENOTCONN)
            fail("msendm before mcreate should fail with ENOTCONN", errno);

        int v = 0;
        errno = 0;
        if (msetsockopt(sd, SOL_ECTP, 9999, &v, sizeof v) != -1 || errno != ENOPROTOOPT)
            fail("msetsockopt(SOL_ECTP, 9999) should fail with ENOPROTOOPT", errno);

        // An endpoint with no role: the contract names no release for it;
        // mterminate is called and its result ignored.
        (void)mterminate(sd);
    }

    errno = 0;
    if (msendm(-1, "x", 1, 0) != -1 || errno != EBADF)
        fail("msendm(-1) should fail with EBADF", errno);

    errno = 0;
    int bad = msocket(12345, 0, 0);
    if (bad != -1)
        fail("msocket(12345, 0, 0) should fail", 0);

    if (failures != 0) {
        std::fprintf(stderr, "cxx_check: %d checks failed\n", failures);
        return 1;
    }
    std::printf("cxx_check: ok\n");
    return 0;
}
