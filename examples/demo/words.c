#include "stats.h"
size_t count_words(const char *text) {
    size_t n = 0;
    int in_word = 0;
    for (; *text; text++) {
        int w = is_word_char(*text);
        n += w && !in_word;
        in_word = w;
    }
    return n;
}
unsigned checksum(const char *text) {
    unsigned sum = 0;
    const char *start = 0;
    for (const char *p = text;; p++) {
        if (*p && is_word_char(*p)) { if (!start) start = p; continue; }
        if (start) { sum += hash_word(start, (size_t)(p - start)); start = 0; }
        if (!*p) break;
    }
    return sum;
}
