/* Preloaded into ressh by triggers.rs: CLOCK_BOOTTIME reads ahead of the
 * real one by the milliseconds written in the file $RESSH_TEST_CLOCKSHIFT
 * (none, empty or unreadable: 0); every other clock is passed through.
 * To the process this is exactly what a suspend of that length looks like:
 * the boot clock advanced, the monotonic clock did not. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long shift_ms(void) {
    const char *path = getenv("RESSH_TEST_CLOCKSHIFT");
    char buf[32];
    ssize_t n;
    int fd;
    if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    int r;
    long ms;
    if (real == NULL)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    r = real(id, ts);
    if (r != 0 || id != CLOCK_BOOTTIME)
        return r;
    ms = shift_ms();
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
    return 0;
}
