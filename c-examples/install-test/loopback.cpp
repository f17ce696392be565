// loopback.cpp -- the C++ program of the install test (../ctest.sh): the same
// exchange as loopback.c (a TO and a TU in one process over IPv4 loopback),
// written in C++17 against the installed ectp.h.
// Usage: loopback_cxx PORT [GROUP]
#include <ectp.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

namespace {

int fail(const std::string &what)
{
    std::fprintf(stderr, "loopback_cxx: FAIL: %s: %s\n", what.c_str(), std::strerror(errno));
    return 1;
}

extern "C" void on_alarm(int)
{
    static const char msg[] = "loopback_cxx: FAIL: still running after 30 s\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        // nothing more to do
    }
    _exit(1);
}

template <typename T> int set_opt(int sd, int level, int opt, const T &value)
{
    return msetsockopt(sd, level, opt, &value, static_cast<socklen_t>(sizeof value));
}

template <typename T> int get_opt(int sd, int opt, T &value)
{
    socklen_t len = sizeof value;
    return mgetsockopt(sd, SOL_ECTP, opt, &value, &len);
}

const sockaddr *sa(const sockaddr_in &a)
{
    return reinterpret_cast<const sockaddr *>(&a);
}

} // namespace

int main(int argc, char **argv)
{
    const std::string message = "hello from C++";
    const long port = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 0;
    if (argc < 2 || argc > 3 || port < 1 || port > 65535) {
        std::fprintf(stderr, "usage: loopback_cxx PORT [GROUP]\n");
        return 2;
    }
    std::signal(SIGALRM, on_alarm);
    alarm(30);

    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sockaddr_in group = local;
    group.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, argc > 2 ? argv[2] : "239.255.10.10", &group.sin_addr) != 1) {
        std::fprintf(stderr, "loopback_cxx: not an IPv4 multicast address\n");
        return 2;
    }

    const int to = msocket(AF_INET, SOCK_DGRAM, 0);
    if (to == -1)
        return fail("msocket (TO)");
    const int ro = ECTP_RO_RELIABLE;
    int v = -1;
    if (set_opt(to, IPPROTO_IP, IP_MULTICAST_IF, local.sin_addr) == -1
        || set_opt(to, IPPROTO_IP, IP_MULTICAST_LOOP, 1) == -1)
        return fail("msetsockopt(IP_MULTICAST_IF, IP_MULTICAST_LOOP)");
    if (set_opt(to, SOL_ECTP, ECTP_RO, ro) == -1)
        return fail("msetsockopt(ECTP_RO)");
    if (get_opt(to, ECTP_RO, v) == -1)
        return fail("mgetsockopt(ECTP_RO)");
    if (v != ro) {
        std::fprintf(stderr, "loopback_cxx: FAIL: ECTP_RO reads %d, set %d\n", v, ro);
        return 1;
    }
    if (mcreate(to, sa(local), sizeof local, sa(group), sizeof group) == -1)
        return fail("mcreate");

    const int tu = msocket(AF_INET, SOCK_DGRAM, 0);
    if (tu == -1)
        return fail("msocket (TU)");
    if (mjoin(tu, sa(local), sizeof local, sa(group), sizeof group) == -1)
        return fail("mjoin");
    int members = 0;
    if (get_opt(to, ECTP_MEMBERS, members) == -1)
        return fail("mgetsockopt(ECTP_MEMBERS)");

    if (msendm(to, message.data(), message.size(), 0) != static_cast<ssize_t>(message.size()))
        return fail("msendm");
    char buf[256];
    ectp_rcvinfo info;
    const ssize_t n = mrecvmsg(tu, buf, sizeof buf, 0, &info);
    if (n == -1)
        return fail("mrecvmsg");
    if (std::string(buf, static_cast<size_t>(n)) != message) {
        std::fprintf(stderr, "loopback_cxx: FAIL: received %ld bytes, not the message\n",
                     static_cast<long>(n));
        return 1;
    }
    if (mterminate(to) == -1)
        return fail("mterminate");
    if (mrecvmsg(tu, buf, sizeof buf, 0, nullptr) != 0)
        return fail("mrecvmsg after mterminate (should be 0, the end)");
    if (mleave(tu, 0) == -1 && errno != ENOTCONN && errno != ECONNRESET && errno != EBADF)
        return fail("mleave");

    std::printf("loopback_cxx: ok (%d member, %zu bytes, then the end of the connection)\n",
                members, message.size());
    return 0;
}
