/*
 * regression_driver.c: replays files through LLVMFuzzerTestOneInput without
 * libFuzzer, so the seed corpus and every crash ever found run under CTest
 * with gcc (and under ASan/UBSan in the sanitizer build).
 *
 * Usage: fuzz_regression FILE_OR_DIRECTORY...
 * Fails when an argument cannot be read or no input was found.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file; 0 on success. */
static int replay(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "cannot open %s\n", path);
    return 1;
  }
  size_t cap = 4096, size = 0, got;
  unsigned char *buf = malloc(cap);
  while (buf != NULL && (got = fread(buf + size, 1, cap - size, f)) > 0) {
    size += got;
    if (size == cap) {
      unsigned char *grown = realloc(buf, cap *= 2);
      if (grown == NULL)
        free(buf);
      buf = grown;
    }
  }
  int failed = buf == NULL || ferror(f);
  fclose(f);
  if (!failed)
    LLVMFuzzerTestOneInput(buf, size);
  else
    fprintf(stderr, "cannot read %s\n", path);
  free(buf);
  return failed;
}

int main(int argc, char **argv) {
  int failed = 0, count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "cannot stat %s\n", argv[i]);
      failed = 1;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      failed |= replay(argv[i]);
      count++;
      continue;
    }
    DIR *dir = opendir(argv[i]);
    struct dirent *entry;
    while (dir != NULL && (entry = readdir(dir)) != NULL) {
      if (entry->d_name[0] == '.')
        continue;
      size_t len = strlen(argv[i]) + strlen(entry->d_name) + 2;
      char *path = malloc(len);
      if (path == NULL)
        return 1;
      snprintf(path, len, "%s/%s", argv[i], entry->d_name);
      failed |= replay(path);
      count++;
      free(path);
    }
    if (dir == NULL)
      failed = 1;
    else
      closedir(dir);
  }
  printf("replayed %d inputs\n", count);
  return failed || count == 0;
}
