/*
 * Replays fuzzing corpora without libFuzzer, so that CTest runs them with
 * gcc (and under the sanitizers in an MI_SANITIZE build): every file named,
 * or in a directory named, goes once through LLVMFuzzerTestOneInput.
 * Usage: replay_<harness> FILE_OR_DIR...
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  size_t size = 0, capacity = 4096;
  uint8_t *data = malloc(capacity);
  for (size_t n; data != NULL && (n = fread(data + size, 1, capacity - size, f)) > 0;) {
    size += n;
    if (size == capacity) {
      uint8_t *bigger = realloc(data, capacity *= 2);
      if (bigger == NULL)
        free(data);
      data = bigger;
    }
  }
  int failed = data == NULL || ferror(f);
  fclose(f);
  if (failed) {
    fprintf(stderr, "replay: cannot read %s\n", path);
  } else {
    LLVMFuzzerTestOneInput(data, size);
    printf("replayed %s (%zu bytes)\n", path, size);
  }
  free(data);
  return failed;
}

int main(int argc, char **argv) {
  int failed = 0, files = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
      return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
      failed |= replay_file(argv[i]);
      files++;
      continue;
    }
    DIR *dir = opendir(argv[i]);
    for (struct dirent *e; dir != NULL && (e = readdir(dir)) != NULL;) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
      if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        failed |= replay_file(path);
        files++;
      }
    }
    if (dir != NULL)
      closedir(dir);
  }
  if (files == 0) {
    fprintf(stderr, "replay: no corpus files\n");
    return 1;
  }
  return failed;
}
