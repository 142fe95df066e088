/* SPDX-License-Identifier: MIT */
/*
 * scripts/bench-pair.sh's driver: two builds of the library in one process, run in
 * alternating rounds, so that both see the same states of the machine. On this project's
 * VM the speed of a loop changes every few milliseconds (stretches where everything runs
 * 1.2-2x slower), and two builds measured in separate processes, even interleaved, compare
 * different mixes of those states; rounds of a few hundred microseconds back to back do
 * not. Prints each build's 10th percentile (the quiet state), median, 90th percentile
 * (the slow one) and mean, and in how many rounds B beat A, on one line.
 *
 * usage: bench-pair KIND SIZE ROUNDS N ORDER  (KIND: poolbuftest, alloc or batch; N buffers
 * a round; ORDER 0 makes A's allocator first, 1 B's. Where each side's code, static data and
 * allocator land can favour one side for a whole process - with the same code on both, by
 * up to 15 % - so the script alternates this order, and the link order, from process to
 * process.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *a_open(void);
void a_close(void *allocator);
double a_run(void *allocator, int kind, size_t size, long n, void **slots, uint64_t *sum);
void *b_open(void);
void b_close(void *allocator);
double b_run(void *allocator, int kind, size_t size, long n, void **slots, uint64_t *sum);

static int compare_doubles(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Prints one build's figures: p10, median, p90, mean. */
static void report(const char *name, const double *times, int rounds)
{
    double *sorted = malloc((size_t)rounds * sizeof *sorted);
    double total = 0;
    if (sorted == NULL) exit(1);
    for (int r = 0; r < rounds; r++) {
        sorted[r] = times[r];
        total += times[r];
    }
    qsort(sorted, (size_t)rounds, sizeof *sorted, compare_doubles);
    printf(" %s %.2f %.2f %.2f %.2f", name, sorted[rounds / 10], sorted[rounds / 2], sorted[rounds * 9 / 10],
           total / rounds);
    free(sorted);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s poolbuftest|alloc|batch SIZE ROUNDS N ORDER\n", argv[0]);
        return 2;
    }
    int kind = strcmp(argv[1], "poolbuftest") == 0 ? 0 : strcmp(argv[1], "alloc") == 0 ? 1 : strcmp(argv[1], "batch") == 0 ? 2 : -1;
    size_t size = strtoul(argv[2], NULL, 10);
    int rounds = atoi(argv[3]);
    long n = atol(argv[4]);
    int b_first = atoi(argv[5]) != 0;
    if (kind < 0 || size == 0 || rounds < 10 || n < 1000) {
        fprintf(stderr, "%s: bad arguments (KIND poolbuftest|alloc|batch, SIZE >= 1, ROUNDS >= 10, N >= 1000)\n", argv[0]);
        return 2;
    }
    void *a = NULL, *b = NULL;
    if (b_first) {
        b = b_open();
        a = a_open();
    } else {
        a = a_open();
        b = b_open();
    }
    double *ta = malloc((size_t)rounds * sizeof *ta), *tb = malloc((size_t)rounds * sizeof *tb);
    void **slots = malloc(1000 * sizeof *slots);
    if (a == NULL || b == NULL || ta == NULL || tb == NULL || slots == NULL) return 1;
    uint64_t sum_a = 0, sum_b = 0;
    a_run(a, kind, size, n, slots, &sum_a); /* warm both: caches filled, pages touched */
    b_run(b, kind, size, n, slots, &sum_b);
    int b_faster = 0;
    for (int r = 0; r < rounds; r++) {
        if (r & 1) { /* alternate which goes first */
            tb[r] = b_run(b, kind, size, n, slots, &sum_b);
            ta[r] = a_run(a, kind, size, n, slots, &sum_a);
        } else {
            ta[r] = a_run(a, kind, size, n, slots, &sum_a);
            tb[r] = b_run(b, kind, size, n, slots, &sum_b);
        }
        b_faster += tb[r] < ta[r];
    }
    if (sum_a != sum_b) {
        fprintf(stderr, "checksums differ: A %llu, B %llu\n", (unsigned long long)sum_a, (unsigned long long)sum_b);
        return 1;
    }
    /* One line for scripts/bench-pair.sh: A p10 median p90 mean B p10 median p90 mean
     * rounds-B-won rounds */
    report("A", ta, rounds);
    report("B", tb, rounds);
    printf(" %d %d\n", b_faster, rounds);
    a_close(a);
    b_close(b);
    free(ta);
    free(tb);
    free(slots);
    return 0;
}
