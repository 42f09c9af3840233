#include "stats.h"
unsigned hash_word(const char *w, size_t n) {
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned)to_lower(w[i])) * 16777619u;
    return h;
}
