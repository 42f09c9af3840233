#include <stdio.h>
#include "stats.h"
void print_report(const char *name, size_t words, unsigned sum) {
    printf("%-8s %3zu words, checksum %08x\n", name, words, sum);
}
