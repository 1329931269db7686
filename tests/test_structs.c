/*
 * test_structs.c: versioned structs across the ABI. A caller compiled against
 * an older, smaller header must never be read or written past its struct, and
 * the fields it lacks must take their defaults. The older structs are
 * malloc'd at exactly their old size, so under MI_SANITIZE=ON a read or
 * write past them is an ASan error; guard bytes catch writes without it.
 */
#include "testutil.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { GUARD = 0xA5, SLACK = 32 };

static void init_config(void *out, size_t size) { mi_config_init(out, size); }
static void init_load(void *out, size_t size) { mi_load_options_init(out, size); }
static void init_report(void *out, size_t size) { mi_report_options_init(out, size); }
static void init_extras(void *out, size_t size) { mi_forward_extras_init(out, size); }
static void init_attribution(void *out, size_t size) {
  mi_attribution_options_init(out, size);
}

/* Each init with its struct's full size and an older size: up to its last field. */
static const struct {
  const char *name;
  void (*init)(void *, size_t);
  size_t size, old;
} inits[] = {
    {"mi_config", init_config, sizeof(mi_config), offsetof(mi_config, ln_eps)},
    {"mi_load_options", init_load, sizeof(mi_load_options),
     offsetof(mi_load_options, process)},
    {"mi_report_options", init_report, sizeof(mi_report_options),
     offsetof(mi_report_options, behaviour_sequences)},
    {"mi_forward_extras", init_extras, sizeof(mi_forward_extras),
     offsetof(mi_forward_extras, resid_count)},
    {"mi_attribution_options", init_attribution, sizeof(mi_attribution_options),
     offsetof(mi_attribution_options, flags)},
};

/* A struct of `size` bytes (struct_size set) holding the first bytes of `full`. */
static void *old_copy(const void *full, size_t size) {
  void *p = malloc(size);
  ck_assert_ptr_nonnull(p);
  memcpy(p, full, size);
  memcpy(p, &size, sizeof size);
  return p;
}

static void assert_guarded(const unsigned char *buf, size_t from, size_t to, const char *what) {
  for (size_t i = from; i < to; i++)
    ck_assert_msg(buf[i] == GUARD, "%s: byte %zu written (0x%02x)", what, i, buf[i]);
}

START_TEST(init_writes_only_the_callers_bytes) {
  unsigned char full[256], buf[256 + SLACK];
  for (size_t k = 0; k < sizeof inits / sizeof inits[0]; k++) {
    ck_assert_uint_le(inits[k].size, sizeof full);
    inits[k].init(NULL, inits[k].size); /* NULL: no-op */
    memset(full, GUARD, sizeof full);
    inits[k].init(full, inits[k].size);
    size_t got;
    memcpy(&got, full, sizeof got);
    ck_assert_uint_eq(got, inits[k].size);
    assert_guarded(full, inits[k].size, sizeof full, inits[k].name);
    /* Older caller: its fields get the defaults, its struct_size its own size. */
    size_t sizes[] = {inits[k].old, 4, 0};
    for (size_t s = 0; s < 3; s++) {
      memset(buf, GUARD, sizeof buf);
      inits[k].init(buf, sizes[s]);
      assert_guarded(buf, sizes[s], sizeof buf, inits[k].name);
      if (sizes[s] >= sizeof got) {
        memcpy(&got, buf, sizeof got);
        ck_assert_uint_eq(got, sizes[s]);
        ck_assert(memcmp(buf + sizeof got, full + sizeof got, sizes[s] - sizeof got) == 0);
      } else {
        ck_assert(memcmp(buf, full, sizes[s]) == 0);
      }
    }
    /* The oldinit reproducer: an exactly-sized heap struct (ASan's check). */
    void *old = malloc(inits[k].old);
    inits[k].init(old, inits[k].old);
    free(old);
  }
}
END_TEST

START_TEST(create_takes_an_old_config) {
  mi_config full;
  mi_config_init(&full, sizeof full);
  full.n_layers = 1;
  full.n_heads = 2;
  full.d_model = 4;
  full.d_head = 2;
  full.d_vocab = 5;
  full.n_ctx = 7;
  full.parts = MI_PART_LN;
  full.ln_eps = 0.25; /* past the old struct: must not be seen */
  mi_model *model;
  /* The oldconfig reproducer: no ln_eps, which takes its default 1e-5. */
  mi_config *old = old_copy(&full, offsetof(mi_config, ln_eps));
  TU_OK(mi_model_create(&model, old));
  mi_config got;
  mi_config_init(&got, sizeof got);
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.struct_size, sizeof got);
  ck_assert_uint_eq(got.n_heads, 2);
  ck_assert_uint_eq(got.n_ctx, 7);
  ck_assert_uint_eq(got.parts, MI_PART_LN);
  ck_assert(got.ln_eps == 1e-5);
  mi_model_free(model);
  free(old);
  /* Older still: no n_ctx, parts or ln_eps; all three default. */
  old = old_copy(&full, offsetof(mi_config, n_ctx));
  TU_OK(mi_model_create(&model, old));
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.n_ctx, 0);
  ck_assert_uint_eq(got.parts, 0);
  ck_assert(got.ln_eps == 1e-5);
  /* get_config writes only the old caller's bytes and says how many. */
  size_t small = offsetof(mi_config, d_model);
  unsigned char buf[sizeof(mi_config) + SLACK];
  memset(buf, GUARD, sizeof buf);
  memcpy(buf, &small, sizeof small);
  TU_OK(mi_model_get_config((mi_config *)buf, model));
  assert_guarded(buf, small, sizeof buf, "mi_model_get_config");
  mi_config head;
  memcpy(&head, buf, small);
  ck_assert_uint_eq(head.struct_size, small);
  ck_assert_uint_eq(head.n_layers, 1);
  ck_assert_uint_eq(head.n_kv_heads, 2);
  mi_model_free(model);
  free(old);
}
END_TEST

struct sums { size_t parts; double logit; };

static int add_part(const mi_attribution_part *part, void *user) {
  struct sums *s = user;
  s->parts++;
  for (size_t i = 0; i < part->n_positions; i++)
    s->logit += part->token_logit[i];
  return 0;
}

START_TEST(bad_struct_sizes_are_refused) {
  mi_config c = tu_config(1, 2, 4, 2, 5, 0, 0);
  mi_model *model = (mi_model *)1;
  const size_t bad[] = {0, 4, sizeof c + 8};
  for (size_t i = 0; i < 3; i++) {
    c.struct_size = bad[i];
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, &c));
    ck_assert_msg(strstr(mi_last_error(), "mi_config.struct_size") != NULL, "%s",
                  mi_last_error());
    ck_assert_ptr_null(model);
  }
  c.struct_size = sizeof c;
  TU_OK(mi_model_create(&model, &c));
  /* Outputs: a struct_size too small for itself is refused and nothing written. */
  unsigned char buf[sizeof(mi_config) + SLACK];
  for (size_t i = 0; i < 2; i++) {
    memset(buf, GUARD, sizeof buf);
    memcpy(buf, &bad[i], sizeof bad[i]);
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_get_config((mi_config *)buf, model));
    ck_assert_msg(strstr(mi_last_error(), "mi_config.struct_size") != NULL, "%s",
                  mi_last_error());
    assert_guarded(buf, sizeof bad[i], sizeof buf, "mi_model_get_config");
  }
  mi_circuit *ov;
  TU_OK(mi_circuit_ov(&ov, model, 0, 1));
  unsigned char sbuf[sizeof(mi_eigen_summary) + SLACK];
  for (size_t i = 0; i < 2; i++) {
    memset(sbuf, GUARD, sizeof sbuf);
    memcpy(sbuf, &bad[i], sizeof bad[i]);
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_eigen_summary((mi_eigen_summary *)sbuf, ov));
    ck_assert_msg(strstr(mi_last_error(), "mi_eigen_summary.struct_size") != NULL, "%s",
                  mi_last_error());
    assert_guarded(sbuf, sizeof bad[i], sizeof sbuf, "mi_circuit_eigen_summary");
  }
  mi_circuit_free(ov);
  /* Inputs of the other entry points name their struct too. */
  mi_head_report lines[2];
  lines[0].struct_size = sizeof lines[0];
  mi_report_options ro;
  mi_forward_extras fx;
  mi_attribution_options ao;
  const size_t tokens[] = {1, 2};
  float logits[2 * 5];
  struct sums sums = {0, 0};
  for (size_t i = 0; i < 3; i++) {
    mi_report_options_init(&ro, sizeof ro);
    ro.struct_size = bad[i];
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(lines, 2, model, &ro));
    ck_assert_msg(strstr(mi_last_error(), "mi_report_options") != NULL, "%s", mi_last_error());
    mi_forward_extras_init(&fx, sizeof fx);
    fx.struct_size = bad[i];
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(logits, 5, model, tokens, 2, &fx));
    ck_assert_msg(strstr(mi_last_error(), "mi_forward_extras") != NULL, "%s", mi_last_error());
    mi_attribution_options_init(&ao, sizeof ao);
    ao.logit_tokens = tokens;
    ao.struct_size = bad[i];
    TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 2, &ao, add_part, &sums));
    ck_assert_msg(strstr(mi_last_error(), "mi_attribution_options") != NULL, "%s",
                  mi_last_error());
  }
  mi_model_free(model);
}
END_TEST

/* Doubles equal bit for bit, NaN equal to NaN. */
static void assert_same(double a, double b, const char *what, size_t i) {
  ck_assert_msg((isnan(a) && isnan(b)) || a == b, "%s of line %zu: %.17g vs %.17g", what, i,
                a, b);
}

START_TEST(report_takes_old_options) {
  mi_config c = tu_config(2, 2, 8, 4, 12, 16, MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 3);
  mi_report_options full;
  mi_report_options_init(&full, sizeof full);
  full.prev_token = 0;
  full.behaviour_sequences = 0; /* past the old struct: must not be seen */
  mi_report_options *old = old_copy(&full, offsetof(mi_report_options, behaviour_sequences));
  mi_head_report got[4], want[4];
  got[0].struct_size = want[0].struct_size = sizeof got[0];
  TU_OK(mi_model_head_report(got, 4, model, old));
  /* Same computation, so the same numbers: the old caller got the defaults. */
  mi_report_options_init(&full, sizeof full);
  full.prev_token = 0;
  TU_OK(mi_model_head_report(want, 4, model, &full));
  for (size_t i = 0; i < 4; i++) {
    ck_assert(isnan(got[i].prev_token_share));
    ck_assert(!isnan(want[i].prev_token_attention));
    assert_same(got[i].ov.copying_score, want[i].ov.copying_score, "ov", i);
    assert_same(got[i].qk.copying_score, want[i].qk.copying_score, "qk", i);
    assert_same(got[i].prev_token_attention, want[i].prev_token_attention, "prev", i);
    assert_same(got[i].induction_attention, want[i].induction_attention, "induction", i);
  }
  free(old);
  mi_model_free(model);
}
END_TEST

START_TEST(forward_takes_old_extras) {
  mi_config c = tu_config(2, 2, 8, 4, 12, 16, MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 4);
  const size_t tokens[] = {3, 1, 4, 1, 5}, n = 5;
  float patterns[2][2 * 2 * 5 * 5], logits[2][5 * 12], resid[3 * 5 * 8];
  mi_forward_extras full;
  mi_forward_extras_init(&full, sizeof full);
  full.patterns = patterns[0];
  full.patterns_count = sizeof patterns[0] / sizeof patterns[0][0];
  full.resid = resid; /* past the old struct: must not be seen */
  full.resid_count = 1;
  mi_forward_extras *old = old_copy(&full, offsetof(mi_forward_extras, resid));
  TU_OK(mi_model_forward(logits[0], 12, model, tokens, n, old));
  full.patterns = patterns[1];
  full.resid = NULL;
  full.resid_count = 0;
  TU_OK(mi_model_forward(logits[1], 12, model, tokens, n, &full));
  ck_assert(memcmp(patterns[0], patterns[1], sizeof patterns[0]) == 0);
  ck_assert(memcmp(logits[0], logits[1], sizeof logits[0]) == 0);
  free(old);
  mi_model_free(model);
}
END_TEST

START_TEST(attribute_takes_old_options) {
  mi_config c = tu_config(2, 2, 8, 4, 12, 16, MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 5);
  const size_t tokens[] = {3, 1, 4, 1, 5}, targets[] = {1, 4, 1, 5, 9}, n = 5;
  mi_attribution_options full;
  mi_attribution_options_init(&full, sizeof full);
  full.logit_tokens = targets;
  full.flags = MI_ATTRIBUTE_FULL_LOGITS; /* past the old struct: must not be seen */
  mi_attribution_options *old = old_copy(&full, offsetof(mi_attribution_options, flags));
  struct sums got = {0, 0}, want = {0, 0};
  size_t count_got, count_want;
  TU_OK(mi_model_attribute(&count_got, model, tokens, n, old, add_part, &got));
  full.flags = 0;
  TU_OK(mi_model_attribute(&count_want, model, tokens, n, &full, add_part, &want));
  ck_assert_uint_eq(count_got, count_want);
  ck_assert_uint_eq(got.parts, want.parts);
  ck_assert(got.logit == want.logit); /* same computation, same order */
  free(old);
  mi_model_free(model);
}
END_TEST

static Suite *structs_suite(void) {
  Suite *s = suite_create("structs");
  TCase *tc = tcase_create("abi");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, init_writes_only_the_callers_bytes);
  tcase_add_test(tc, create_takes_an_old_config);
  tcase_add_test(tc, bad_struct_sizes_are_refused);
  tcase_add_test(tc, report_takes_old_options);
  tcase_add_test(tc, forward_takes_old_extras);
  tcase_add_test(tc, attribute_takes_old_options);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(structs_suite()); }
