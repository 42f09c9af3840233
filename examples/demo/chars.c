#include "stats.h"
/* Small functions that ThinLTO imports into their callers in other modules. */
int is_word_char(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
int to_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
