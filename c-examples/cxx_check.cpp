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
static void leave_cb(int sd, uint32_t user_id, int reason)
{
    (void)sd; (void)user_id; (void)reason;
}
}

namespace {

int failures = 0;

void fail(const char *what, int err)
{
    std::fprintf(stderr, "cxx_check: FAIL: %s (errno %d: %s)\n", what, err, std::strerror(err));
    failures++;
}

#include "signatures.inc"

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
    (void)check_signatures();
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
