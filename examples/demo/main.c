#include "stats.h"
static const char *texts[][2] = {
    {"kernel", "The kernel adopted distributed ThinLTO as CONFIG_LTO_CLANG_THIN_DIST."},
    {"thindist", "Thin link, one back end per module with its own flags, then the final link."},
};
int main(void) {
    for (unsigned i = 0; i < sizeof texts / sizeof texts[0]; i++)
        print_report(texts[i][0], count_words(texts[i][1]), checksum(texts[i][1]));
    return 0;
}
