/* A process tree that rebuilds itself: in a session of its own, a chain whose leaf forks again
 * whenever fewer than TARGET members live, so killing it a level at a time never ends it (an
 * escape an adversarial review of the sandbox found). Each member appends its pid to argv[1].
 * Stops by itself after a minute. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define TARGET 150
#define SLOTS (1 << 20)

static long *shared;
static int *pids;
static const char *record;

static int over(void) { return time(NULL) - shared[2] > 60; }

static void reg(void) {
    long i = __atomic_fetch_add(&shared[0], 1, __ATOMIC_SEQ_CST);
    pids[i % SLOTS] = getpid();
    FILE *f = fopen(record, "a");
    if (f) {
        fprintf(f, "%d\n", getpid());
        fclose(f);
    }
}

static int alive(void) {
    long n = shared[0], c = 0;
    for (long i = n - 1; i >= 0 && i >= n - 4 * TARGET; i--)
        if (kill(pids[i % SLOTS], 0) == 0) c++;
    return c;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    record = argv[1];
    shared = mmap(0, 4096 + SLOTS * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pids = (int *)(shared + 512);
    shared[2] = time(NULL);
    setsid();
    reg();
    for (;;) {
        if (over()) _exit(0);
        if (alive() < TARGET) {
            pid_t p = fork();
            if (p == 0) {
                reg();
                continue;
            }
            if (p > 0)
                for (;;) {
                    if (over()) _exit(0);
                    sleep(1);
                }
        }
        usleep(300);
    }
}
