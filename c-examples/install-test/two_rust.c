/* two_rust.c -- the install test's (../ctest.sh) program linking two Rust
 * static libraries: the installed libectp.a and other.rs. Calls both (the
 * other one with a panic caught inside it, too); prints "two_rust: ok" and
 * exits 0, or what went wrong and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <ectp.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

int other_answer(int x);

int main(void)
{
    int sd, a = other_answer(20), b = other_answer(-5);

    if (a != 41 || b != -1) {
        fprintf(stderr, "two_rust: FAIL: other_answer(20) = %d (not 41), other_answer(-5) = %d (not -1)\n",
                a, b);
        return 1;
    }
    sd = msocket(AF_INET, SOCK_DGRAM, 0);
    if (sd == -1) {
        fprintf(stderr, "two_rust: FAIL: msocket: %s\n", strerror(errno));
        return 1;
    }
    /* Not connected yet: a role call gives ENOTCONN. */
    if (msendm(sd, "x", 1, 0) != -1 || errno != ENOTCONN) {
        fprintf(stderr, "two_rust: FAIL: msendm before mcreate did not give ENOTCONN\n");
        return 1;
    }
    printf("two_rust: ok (other_answer 41 and -1, msocket %d)\n", sd);
    return 0;
}
