/* A tiny text-statistics program: enough modules, an archive and per-file flags to show what
 * thindist does. */
#ifndef STATS_H
#define STATS_H
#include <stddef.h>
int is_word_char(int c);
int to_lower(int c);
unsigned hash_word(const char *w, size_t n);
size_t count_words(const char *text);
unsigned checksum(const char *text);
void print_report(const char *name, size_t words, unsigned sum);
#endif
