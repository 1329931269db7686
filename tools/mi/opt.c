/*
 * opt.c: one option parser for every subcommand. A spec says how each option
 * is parsed and what it does; --help is printed from the same spec (as
 * libgit2's src/cli/opt.c and opt_usage.c do), so it cannot drift from it.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The options of every subcommand; opt_parse points their targets at a `common`. */
enum { C_HELP, C_JSON, C_THREADS, C_NO_FAST, C_N_HEADS, C_PROCESS, C_POSITIONAL, C_COUNT };
static const opt_spec common_spec[C_COUNT + 1] = {
    [C_HELP] = {OPT_SWITCH, "--help", NULL, NULL, "print this help (also -h)", 0},
    [C_JSON] = {OPT_SWITCH, "--json", NULL, NULL, "print one JSON object instead of text", 0},
    [C_THREADS] = {OPT_VALUE, "--threads", "N", NULL,
                   "threads for libmi's products (default: every\n"
                   "online core; 0: BLIS's own, BLIS_NUM_THREADS or 1)",
                   0},
    [C_NO_FAST] = {OPT_SWITCH, "--no-fast-kernels", NULL, NULL,
                   "keep BLIS's own kernel choice", 0},
    [C_N_HEADS] = {OPT_VALUE, "--n-heads", "N", NULL,
                   "heads a layer, for a GPT-2 checkpoint that does\n"
                   "not say (a TransformerLens file's must agree)",
                   0},
    [C_PROCESS] = {OPT_VALUE, "--process", "fold|tl|none", NULL,
                   "fold LayerNorm into the weights (default); tl:\n"
                   "TransformerLens's default processing (fold, then\n"
                   "centre the writing weights and the unembedding),\n"
                   "to compare with published numbers; none: raw",
                   0},
    [C_POSITIONAL] = {OPT_VALUE, "--positional", "standard|shortformer|none", NULL,
                      "how positions enter, for files that do not say\n"
                      "(ARENA's .pth state dicts: shortformer);\n"
                      "default: what the files say, else standard",
                      0},
    [C_COUNT] = {0}};

static void bind_common(opt_spec *spec, common *c) {
  memcpy(spec, common_spec, sizeof common_spec);
  spec[C_HELP].target = &c->help;
  spec[C_JSON].target = &c->json;
  spec[C_THREADS].target = &c->threads;
  spec[C_NO_FAST].target = &c->no_fast_kernels;
  spec[C_N_HEADS].target = &c->n_heads;
  spec[C_PROCESS].target = &c->process;
  spec[C_POSITIONAL].target = &c->positional;
}

static const opt_spec *find(const opt_spec *spec, const char *name) {
  for (; spec->name; spec++)
    if (spec->type != OPT_ARG && !strcmp(spec->name, name))
      return spec;
  return NULL;
}

/* ---- usage ------------------------------------------------------------------ */

enum { WIDTH = 79, HELP_COLUMN = 26 };

/* "--layer L", "[MODEL]": how an entry reads in the usage line. */
static int synopsis(char *buf, size_t size, const opt_spec *o) {
  int required = (o->flags & OPT_REQUIRED) != 0;
  if (o->type == OPT_VALUE)
    return snprintf(buf, size, "%s%s %s%s", required ? "" : "[", o->name, o->value,
                    required ? "" : "]");
  return snprintf(buf, size, "%s%s%s", required ? "" : "[", o->name, required ? "" : "]");
}

static void print_usage_line(const cmd_help *cmd) {
  char word[128];
  int indent = printf("usage: mi %s", cmd->name), at = indent;
  for (const opt_spec *o = cmd->spec;; o++) {
    int len;
    if (o->name && (o->flags & OPT_NO_USAGE))
      continue;
    if (o->name)
      len = synopsis(word, sizeof word, o);
    else
      len = snprintf(word, sizeof word, "[common options]");
    if (at + 1 + len > WIDTH && at > indent)
      at = printf("\n%*s", indent, "") - 1;
    at += printf(" %s", word);
    if (!o->name)
      break;
  }
  printf("\n");
}

static void print_entries(const char *title, const opt_spec *spec, int args) {
  int any = 0;
  for (const opt_spec *o = spec; o->name; o++) {
    if ((o->type == OPT_ARG) != args)
      continue;
    if (!any++)
      printf("\n%s:\n", title);
    int len = o->type == OPT_VALUE ? printf("  %s %s", o->name, o->value)
                                   : printf("  %s", o->name);
    const char *h = o->help;
    if (len + 2 > HELP_COLUMN) {
      printf("\n");
      len = 0;
    }
    for (;;) { /* one help line at a time, each starting at the help column */
      const char *nl = strchr(h, '\n');
      int n = nl ? (int)(nl - h) : (int)strlen(h);
      printf("%*s%.*s\n", HELP_COLUMN - len, "", n, h);
      if (!nl)
        break;
      h = nl + 1;
      len = 0;
    }
  }
}

static void print_help(const cmd_help *cmd) {
  print_usage_line(cmd);
  printf("\n%s", cmd->description);
  print_entries("arguments", cmd->spec, 1);
  print_entries("options", cmd->spec, 0);
  print_entries("common options", common_spec, 0);
}

/* ---- parsing ---------------------------------------------------------------- */

void opt_parse(common *c, const cmd_help *cmd, int argc, char **argv) {
  opt_spec common_bound[C_COUNT + 1];
  bind_common(common_bound, c);
  const opt_spec *next_arg = cmd->spec;
  int only_args = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int is_option = a[0] == '-' && a[1] != '\0' && !(a[1] >= '0' && a[1] <= '9');
    if (!only_args && !strcmp(a, "--")) {
      only_args = 1;
      continue;
    }
    if (only_args || !is_option) {
      while (next_arg->name && next_arg->type != OPT_ARG)
        next_arg++;
      if (!next_arg->name)
        die_usage("unexpected argument '%s'", a);
      *(const char **)next_arg->target = a;
      next_arg++;
      continue;
    }
    const opt_spec *o = find(cmd->spec, a);
    if (!o)
      o = find(common_bound, !strcmp(a, "-h") ? "--help" : a);
    if (!o)
      die_usage("unknown option '%s'", a);
    if (o->type == OPT_SWITCH) {
      *(int *)o->target = 1;
    } else {
      if (i + 1 == argc)
        die_usage("option '%s' needs a value", a);
      *(const char **)o->target = argv[++i];
    }
  }
  if (c->help) {
    print_help(cmd);
    exit(0);
  }
}
