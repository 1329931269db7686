/*
 * Running out of memory while folding LayerNorm. This runner links the
 * static library with -Wl,--wrap=calloc, so the library's calloc calls come
 * here and the test can make the k-th one fail.
 */
#include "testutil.h"

#include <stdlib.h>

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

/* 0: never fail; k > 0: the k-th calloc from now returns NULL. */
static int fail_at;

void *__wrap_calloc(size_t n, size_t size) {
  if (fail_at > 0 && --fail_at == 0)
    return NULL;
  return __real_calloc(n, size);
}

static const size_t TOKENS[] = {1, 4, 2, 8, 0};
enum { N_TOKENS = 5 };

/*
 * A non-zero LayerNorm shift with no biases to fold into: folding allocates
 * b_Q, b_K, b_V and b_U (and first, for a shortformer model, its positional
 * terms W_pos·W_Q and W_pos·W_K), and the `fail`-th of them fails. The model
 * is left as it was (no bias part added, not processed, the same logits
 * exactly, a forward pass that works), and a retry folds it (under the
 * sanitizers, without leaking the first attempt's terms). The folded logits
 * are held to the folding test's float32 tolerance, 1e-5 of the largest
 * logit, against the reference of the raw weights.
 */
static void check_failed_fold(mi_positional positional, int fail) {
  const unsigned ln = MI_PART_LN | MI_PART_LN_FINAL;
  unsigned parts = ln | (positional == MI_POSITIONAL_SHORTFORMER ? MI_PART_POS_EMBED : 0);
  mi_config c = tu_config(2, 2, 6, 3, 9, 8, parts), got = c;
  c.positional = positional;
  mi_model *model = tu_random_model(&c, 41);
  size_t n = N_TOKENS * c.d_vocab;
  double *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
  float *logits = malloc(n * sizeof *logits);
  ck_assert(before != NULL && after != NULL && logits != NULL);
  tu_reference_logits(before, model, TOKENS, N_TOKENS);

  fail_at = fail;
  TU_FAILS(MI_ERR_OUT_OF_MEMORY, mi_model_process(model, MI_PROCESS_FOLD_LN));
  ck_assert_int_eq(fail_at, 0); /* the failure came from this call */
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.parts, parts);
  ck_assert_uint_eq(mi_model_processing(model), 0);
  tu_reference_logits(after, model, TOKENS, N_TOKENS);
  ck_assert_mem_eq(before, after, n * sizeof *before);
  TU_OK(mi_model_forward(logits, c.d_vocab, model, TOKENS, N_TOKENS, NULL));

  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.parts, parts | MI_PART_QKV_BIAS | MI_PART_UNEMBED_BIAS);
  TU_OK(mi_model_forward(logits, c.d_vocab, model, TOKENS, N_TOKENS, NULL));
  for (size_t i = 0; i < n; i++)
    after[i] = logits[i];
  double diff = tu_max_abs_diff(before, after, n), scale = tu_max_abs(before, n);
  ck_assert_msg(diff <= 1e-5 * scale, "refolded logits differ by %g (scale %g)", diff, scale);
  free(before);
  free(after);
  free(logits);
  mi_model_free(model);
}

START_TEST(failed_fold_leaves_the_model_unchanged) {
  check_failed_fold(MI_POSITIONAL_NONE, _i);
}
END_TEST

START_TEST(failed_shortformer_fold_leaves_the_model_unchanged) {
  check_failed_fold(MI_POSITIONAL_SHORTFORMER, _i);
}
END_TEST

static Suite *model_oom_suite(void) {
  Suite *s = suite_create("model_oom");
  TCase *fold = tcase_create("fold");
  tcase_add_loop_test(fold, failed_fold_leaves_the_model_unchanged, 1, 5);
  /* Two positional terms, then the four biases. */
  tcase_add_loop_test(fold, failed_shortformer_fold_leaves_the_model_unchanged, 1, 7);
  suite_add_tcase(s, fold);
  return s;
}

int main(void) { return tu_run_suite(model_oom_suite()); }
