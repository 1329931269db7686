/*
 * roles.c: naming what each head does (previous-token, duplicate-token,
 * induction, copying) from its behaviour and its weights together, each
 * score held against its chance level; and the noise floor of the
 * skip-trigram search.
 */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void mi_role_options_init(mi_role_options *out, size_t struct_size) {
  const mi_role_options defaults = {.struct_size = sizeof defaults,
                                    .report = NULL,
                                    .min_attention = 0.5,
                                    .min_attention_lift = 3.0,
                                    .min_prev_share_lift = 2.0,
                                    .min_copying_score = 0.5,
                                    .min_copying_lift = 50.0,
                                    .min_k_composition_z = 3.0};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

const char *mi_role_name(mi_role role) {
  switch (role) {
  case MI_ROLE_NONE: return "none";
  case MI_ROLE_PREV_TOKEN: return "previous-token";
  case MI_ROLE_DUPLICATE_TOKEN: return "duplicate-token";
  case MI_ROLE_INDUCTION: return "induction";
  case MI_ROLE_COPYING: return "copying";
  case MI_ROLE_COUNT: break;
  }
  return "unknown";
}

/*
 * The behavioural scores of uniform causal attention (A[t][s] = 1/(t+1))
 * on the same sequences, pooled the same way as mi_model_attention_scores:
 * what a head that ignores its input would score.
 */
static void uniform_scores(double out[MI_SCORE_COUNT], const size_t *tokens, size_t n_seq,
                           size_t n) {
  double sum[MI_SCORE_COUNT] = {0};
  size_t rows[MI_SCORE_COUNT] = {0};
  for (size_t q = 0; q < n_seq; q++) {
    const size_t *tok = tokens + q * n;
    for (size_t t = 0; t < n; t++) {
      size_t hits[MI_SCORE_COUNT] = {0};
      for (size_t s = 0; s <= t; s++) {
        hits[MI_SCORE_PREV_TOKEN] += s + 1 == t;
        hits[MI_SCORE_DUPLICATE_TOKEN] += s < t && tok[s] == tok[t];
        hits[MI_SCORE_INDUCTION] += s >= 1 && tok[s - 1] == tok[t];
      }
      for (int k = 0; k < MI_SCORE_COUNT; k++)
        if (hits[k]) {
          sum[k] += (double)hits[k] / (double)(t + 1);
          rows[k]++;
        }
    }
  }
  for (int k = 0; k < MI_SCORE_COUNT; k++)
    out[k] = rows[k] ? sum[k] / (double)rows[k] : NAN;
}

/* mi_circuit_prev_token_share of random scores: row p picks key p-1 of p+1 with chance 1/(p+1). */
static double prev_share_chance(size_t n_ctx) {
  if (n_ctx < 2)
    return NAN;
  double sum = 0.0;
  for (size_t p = 1; p < n_ctx; p++)
    sum += 1.0 / (double)(p + 1);
  return sum / (double)(n_ctx - 1);
}

/* Score x passes: at least `floor` and at least `lift` times its chance level. NaN fails. */
static bool above(double x, double floor, double chance, double lift) {
  return isfinite(x) && x >= floor && !(isfinite(chance) && x < lift * chance);
}

static mi_status check_options(const mi_role_options *o) {
  const double v[] = {o->min_attention,     o->min_attention_lift, o->min_prev_share_lift,
                      o->min_copying_score, o->min_copying_lift,   o->min_k_composition_z};
  static const char *const names[] = {"min_attention",     "min_attention_lift",
                                      "min_prev_share_lift", "min_copying_score",
                                      "min_copying_lift",  "min_k_composition_z"};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (!isfinite(v[i]))
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "head roles: options.%s is %g, not a number",
                      names[i], v[i]);
  return MI_OK;
}

/* The sequences mi_model_head_report measures behaviour on, and their uniform scores. */
static mi_status uniform_baseline(double out[MI_SCORE_COUNT], const mi_model *model,
                                  const mi_report_options *ro) {
  for (int k = 0; k < MI_SCORE_COUNT; k++)
    out[k] = NAN;
  if (ro->behaviour_sequences == 0 || (model->config.parts & MI_PART_MLP))
    return MI_OK;
  size_t half = ro->behaviour_half_length;
  if (half == 0)
    half = model->config.n_ctx > 0 && model->config.n_ctx / 2 < 32 ? model->config.n_ctx / 2 : 32;
  if (half == 0)
    return MI_OK; /* n_ctx 1: no sequence; the report leaves behaviour NaN too */
  size_t count;
  if (!mi__mul_size(&count, ro->behaviour_sequences, 2 * half))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "head roles: %zu sequences overflow",
                    ro->behaviour_sequences);
  size_t *tokens = malloc(count * sizeof *tokens);
  if (tokens == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "head roles: %zu baseline tokens", count);
  mi_status s = mi_model_repeated_tokens(tokens, count, model, ro->behaviour_sequences, half,
                                         ro->behaviour_seed);
  if (s == MI_OK)
    uniform_scores(out, tokens, ro->behaviour_sequences, 2 * half);
  free(tokens);
  return s;
}

/*
 * Top-1 copying accuracy of every head's token OV circuit: the caller's
 * (given, e.g. from the skip-trigram search's OV pass), else computed.
 */
static mi_status top1_all(mi_head_roles *lines, const mi_model *model, size_t heads,
                          const double *given) {
  for (size_t i = 0; i < heads && given; i++)
    lines[i].ov_top1 = given[i];
  mi_status s = MI_OK;
  for (size_t i = 0; i < heads && s == MI_OK && !given; i++) {
    mi_circuit *ov;
    double top5;
    s = mi_circuit_ov(&ov, model, lines[i].layer, lines[i].head);
    if (s == MI_OK)
      s = mi_circuit_copying_accuracy(&lines[i].ov_top1, &top5, ov);
    mi_circuit_free(ov);
  }
  return s;
}

/* Applies the rule (see mi.h) to one head whose evidence is filled in. */
static void classify(mi_head_roles *r, const mi_role_options *o) {
  double a = o->min_attention, lift = o->min_attention_lift;
  bool share_ok = !isfinite(r->prev_token_share) ||
                  r->prev_token_share >= o->min_prev_share_lift * r->prev_token_share_chance;
  unsigned passed = 0;
  if (above(r->prev_token_attention, a, r->prev_token_uniform, lift) && share_ok)
    passed |= 1u << MI_ROLE_PREV_TOKEN;
  if (above(r->duplicate_token_attention, a, r->duplicate_token_uniform, lift) &&
      r->qk_same_token > 0.0)
    passed |= 1u << MI_ROLE_DUPLICATE_TOKEN;
  if (above(r->induction_attention, a, r->induction_uniform, lift) &&
      r->k_layer != SIZE_MAX && r->k_z >= o->min_k_composition_z)
    passed |= 1u << MI_ROLE_INDUCTION;
  if (isfinite(r->ov_copying_score) && r->ov_copying_score >= o->min_copying_score &&
      r->ov_top1 >= o->min_copying_lift * r->ov_top1_chance)
    passed |= 1u << MI_ROLE_COPYING;
  static const mi_role precedence[] = {MI_ROLE_INDUCTION, MI_ROLE_PREV_TOKEN,
                                       MI_ROLE_DUPLICATE_TOKEN, MI_ROLE_COPYING};
  r->passed = passed;
  r->role = MI_ROLE_NONE;
  for (size_t i = 0; i < sizeof precedence / sizeof precedence[0]; i++)
    if (passed & (1u << precedence[i])) {
      r->role = precedence[i];
      break;
    }
}

/* How many standard deviations of chance a K-composition score x stands above its mean. */
static double k_z(double x, const double baseline[3]) {
  return baseline[1] > 0.0 ? (x - baseline[0]) / baseline[1] : INFINITY;
}

/*
 * The strongest K-composition into each head from an earlier one, and its
 * z against the random baseline; then, once roles are known, the partners.
 */
static void strongest_k(mi_head_roles *lines, const double *k, const mi_config *c,
                        const double baseline[3]) {
  size_t heads = c->n_layers * c->n_heads;
  for (size_t j = 0; j < heads; j++) {
    mi_head_roles *r = &lines[j];
    r->k_layer = r->k_head = SIZE_MAX;
    r->k_score = r->k_z = NAN;
    r->k_chance = baseline[0];
    r->k_chance_sd = baseline[1];
    for (size_t i = 0; i < r->layer * c->n_heads; i++) {
      double x = k[i * heads + j];
      if (r->k_layer == SIZE_MAX || x > r->k_score) {
        r->k_layer = i / c->n_heads;
        r->k_head = i % c->n_heads;
        r->k_score = x;
      }
    }
    if (r->k_layer != SIZE_MAX)
      r->k_z = k_z(r->k_score, baseline);
  }
}

/*
 * The partners of the induction heads, in (reader, writer) order: counts them
 * (in total, returned, and each reader's k_partners), writes the first `capacity`.
 */
static size_t partners(mi_role_partner *out, size_t capacity, mi_head_roles *lines,
                       const double *k, const mi_config *c, const double baseline[3],
                       double min_z) {
  size_t heads = c->n_layers * c->n_heads, n = 0;
  size_t stride = out && capacity ? out[0].struct_size : 0;
  for (size_t j = 0; j < heads; j++) {
    lines[j].k_partners = 0;
    if (lines[j].role != MI_ROLE_INDUCTION)
      continue;
    for (size_t i = 0; i < lines[j].layer * c->n_heads; i++) {
      double x = k[i * heads + j], z = k_z(x, baseline);
      if (lines[i].role != MI_ROLE_PREV_TOKEN || !(z >= min_z))
        continue;
      lines[j].k_partners++;
      if (n < capacity) {
        mi_role_partner p = {sizeof p, j, lines[i].layer, lines[i].head, x, z};
        size_t size = stride < sizeof p ? stride : sizeof p;
        mi_role_partner *dst = (mi_role_partner *)((char *)out + n * stride);
        memcpy(dst, &p, size);
        dst->struct_size = size;
      }
      n++;
    }
  }
  return n;
}

mi_status mi_model_head_roles(mi_head_roles *out, size_t count, mi_role_partner *out_partners,
                              size_t partner_capacity, size_t *out_partner_count,
                              const mi_model *model, const mi_role_options *options) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  if (out_partner_count)
    *out_partner_count = 0;
  if (partner_capacity > 0 && out_partners == NULL)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "head roles: out_partners is NULL with partner_capacity %zu",
                    partner_capacity);
  if (partner_capacity > 0 && out_partners[0].struct_size < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out_partners[0].struct_size is %zu; set it to sizeof(mi_role_partner)",
                    out_partners[0].struct_size);
  mi_role_options opt;
  mi_role_options_init(&opt, sizeof opt);
  mi_status status = mi__struct_in(&opt, sizeof opt, options, "mi_role_options");
  if (status == MI_OK)
    status = check_options(&opt);
  if (status != MI_OK)
    return status;
  mi_report_options ro;
  mi_report_options_init(&ro, sizeof ro);
  status = mi__struct_in(&ro, sizeof ro, opt.report, "mi_report_options");
  if (status != MI_OK)
    return status;
  ro.prev_token = 1; /* the previous-token rule reads the share */
  size_t stride = out[0].struct_size;
  if (stride < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out[0].struct_size is %zu; set it to sizeof(mi_head_roles)", stride);
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads;
  if (count < heads)
    return mi__fail(MI_ERR_SHAPE, "head roles: %zu lines for %zu layers x %zu heads", count,
                    c->n_layers, c->n_heads);
  if (opt.ov_top1 && opt.ov_top1_count < heads)
    return mi__fail(MI_ERR_SHAPE, "head roles: ov_top1_count %zu for %zu layers x %zu heads",
                    opt.ov_top1_count, c->n_layers, c->n_heads);
  for (size_t i = 0; i < heads && opt.ov_top1; i++)
    if (!(opt.ov_top1[i] >= 0.0 && opt.ov_top1[i] <= 1.0))
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "head roles: ov_top1[%zu] (head (%zu, %zu)) "
                      "is %g, not a share in [0, 1]", i, i / c->n_heads, i % c->n_heads,
                      opt.ov_top1[i]);
  mi_head_report *rep = calloc(heads, sizeof *rep);
  mi_head_roles *lines = calloc(heads, sizeof *lines);
  double *k = malloc(heads * heads * sizeof *k);
  if (rep == NULL || lines == NULL || k == NULL)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "head roles: %zu heads", heads);
  double uniform[MI_SCORE_COUNT], baseline[3] = {NAN, NAN, NAN};
  if (status == MI_OK) {
    rep[0].struct_size = sizeof *rep;
    status = mi_model_head_report(rep, heads, model, &ro);
  }
  if (status == MI_OK)
    status = uniform_baseline(uniform, model, &ro);
  if (status == MI_OK)
    status = mi_model_composition_scores(k, heads * heads, model, MI_COMPOSE_K);
  if (status == MI_OK)
    status = mi_model_composition_baseline(baseline, model);
  for (size_t i = 0; i < heads && status == MI_OK; i++) {
    mi_head_roles *r = &lines[i];
    r->struct_size = sizeof *r;
    r->layer = rep[i].layer;
    r->head = rep[i].head;
    r->ov_copying_score = rep[i].ov.copying_score;
    r->ov_top1_chance = 1.0 / (double)c->d_vocab;
    r->qk_same_token = rep[i].qk.copying_score;
    r->prev_token_share = rep[i].prev_token_share;
    r->prev_token_share_chance = prev_share_chance(c->n_ctx);
    r->prev_token_attention = rep[i].prev_token_attention;
    r->duplicate_token_attention = rep[i].duplicate_token_attention;
    r->induction_attention = rep[i].induction_attention;
    r->prev_token_uniform = uniform[MI_SCORE_PREV_TOKEN];
    r->duplicate_token_uniform = uniform[MI_SCORE_DUPLICATE_TOKEN];
    r->induction_uniform = uniform[MI_SCORE_INDUCTION];
  }
  if (status == MI_OK)
    status = top1_all(lines, model, heads, opt.ov_top1);
  if (status == MI_OK) {
    strongest_k(lines, k, c, baseline);
    for (size_t i = 0; i < heads; i++)
      classify(&lines[i], &opt);
    size_t n = partners(out_partners, partner_capacity, lines, k, c, baseline,
                        opt.min_k_composition_z);
    if (out_partner_count)
      *out_partner_count = n;
    for (size_t i = 0; i < heads; i++) {
      size_t size = stride < sizeof *lines ? stride : sizeof *lines;
      mi_head_roles *dst = (mi_head_roles *)((char *)out + i * stride);
      memcpy(dst, &lines[i], size);
      dst->struct_size = size;
    }
  }
  free(k);
  free(lines);
  free(rep);
  return status;
}

mi_status mi_model_skip_trigram_floor(double *out, const mi_model *model) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  const mi_config *c = &model->config;
  double entries = (double)c->n_layers * (double)c->n_heads * (double)c->d_vocab *
                   (double)c->d_vocab;
  *out = entries > 1.0 ? sqrt(2.0 * log(entries)) : 0.0;
  return MI_OK;
}
