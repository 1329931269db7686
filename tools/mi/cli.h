/*
 * cli.h: what the subcommands of `mi` share: failing with the right exit
 * status, the option parser (whose specs carry their help, so usage is
 * printed from what is parsed), the model loading, tokens and JSON output.
 */
#ifndef MI_CLI_H
#define MI_CLI_H

#include <mi.h>

#include <jansson.h>
#include <stddef.h>

#define EXIT_LIB 1
#define EXIT_USAGE 2

/* "mi report" etc., for messages; set by main. */
extern const char *cli_cmd;

/* ---- failing (util.c) --------------------------------------------------- */

/* A bad command line: the message, a pointer to --help, exit 2. */
void die_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* A libmi call failed: what we were doing, then libmi's own words; exit 1. */
void die_lib(mi_status s, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

#define LIB(call, ...)                        \
  do {                                        \
    mi_status lib_s_ = (call);                \
    if (lib_s_ != MI_OK)                      \
      die_lib(lib_s_, __VA_ARGS__);           \
  } while (0)

void die_oom(void) __attribute__((noreturn));
void *xcalloc(size_t n, size_t size);

/* A whole non-negative number, or a usage error naming the option. */
size_t parse_size(const char *text, const char *what);

/* ---- options (opt.c) ------------------------------------------------------ */

typedef enum opt_type {
  OPT_SWITCH, /* --flag: target is an int, set to 1 */
  OPT_VALUE,  /* --name VALUE: target is a const char *, set to VALUE */
  OPT_ARG     /* a positional argument, in spec order: target is a const char * */
} opt_type;

/* Bits of opt_spec.flags. */
enum {
  OPT_REQUIRED = 1u << 0, /* shown without brackets in the usage line */
  OPT_NO_USAGE = 1u << 1  /* listed under the options, left out of the usage line */
};

/*
 * One option or argument: how it is parsed and how it is described. `help`
 * may hold '\n' for more lines; the list of a spec ends with a zeroed entry.
 */
typedef struct opt_spec {
  opt_type type;
  const char *name;  /* "--layer", "-k"; for OPT_ARG its placeholder: "MODEL" */
  const char *value; /* placeholder of OPT_VALUE's value: "L", "qk|ov|direct" */
  void *target;
  const char *help;
  unsigned flags;
} opt_spec;

/* The MODEL argument every subcommand takes first. */
#define OPT_MODEL(target)                                                            \
  {OPT_ARG, "MODEL", NULL, (target),                                                 \
   "a .safetensors or .pth file, or a model folder\n(default: the shipped skip-trigram-1l model)", 0}

/* The one beginning-of-sequence switch of the commands that take text. */
#define OPT_PREPEND_BOS(target)                                                        \
  {OPT_SWITCH, "--prepend-bos", NULL, (target),                                        \
   "put the beginning-of-sequence token first (default:\nnone, as in libmi's C and Python " \
   "APIs;\nTransformerLens adds one)", 0}

/* What every subcommand takes, as given on the command line. */
typedef struct common {
  int json, help, no_fast_kernels;
  const char *threads, *n_heads, *process, *positional;
} common;

/* A subcommand's description for --help: its options, then prose. */
typedef struct cmd_help {
  const char *name;        /* "report" */
  const opt_spec *spec;    /* its own options and arguments */
  const char *description; /* paragraphs printed after the usage line */
} cmd_help;

/*
 * Reads argv (the arguments after the subcommand's name) into the spec's
 * targets and `c`; unknown options, missing values and extra arguments are
 * usage errors. With --help, prints the usage and exits 0.
 */
void opt_parse(common *c, const cmd_help *cmd, int argc, char **argv);

/* ---- progress bar on a terminal (util.c) ---------------------------------- */

typedef struct progress {
  int on;
  const char *label;
  size_t total, done;
  int shown; /* last percentage drawn */
} progress;

void progress_start(progress *p, const char *label, size_t total);
void progress_set(progress *p, size_t done);
void progress_end(progress *p);

/* ---- the model, its vocabulary and its tokens (model.c) ------------------- */

typedef struct loaded {
  mi_model *model;
  mi_config cfg;
  char *path;  /* the model file or folder */
  int has_vocab;
  char *vocab; /* the vocabulary's file (or the model's path when it came with the model) */
} loaded;

/*
 * Applies the common options (kernels, threads; must run before libmi
 * touches BLIS) and loads the model at `path` (NULL: the shipped one) with
 * the loading options, then a vocab.txt or vocab.json beside it unless the
 * model brought its own.
 */
void load(loaded *m, const common *c, const char *path);
void unload(loaded *m);

/* A token's text for printing: its string, or "#id" without a vocabulary. */
const char *tok(const loaded *m, size_t id, char buf[32]);
/* The same as JSON: null without a vocabulary, "\\xNN" for bytes that are not UTF-8. */
json_t *tok_json(const loaded *m, size_t id);
/* A token given on the command line: its string in the vocabulary, else an id. */
size_t parse_token(const loaded *m, const char *text, const char *what);

/* Text as token ids by the model's tokenizer (owned; *n of them, at least
 * 1; a BOS first when asked), or a usage error. */
size_t *tokenize(const loaded *m, const char *text, size_t *n, int prepend_bos);
/* "1,2,3" as token ids below d_vocab (owned), or a usage error naming --ids. */
size_t *parse_ids(const char *list, size_t *n, size_t d_vocab);

/* What was loaded, for the text reports and in --json. */
void print_model(const loaded *m);
json_t *model_json(const loaded *m);

/* ---- JSON (util.c) -------------------------------------------------------- */

/* Appends `value` to `array`, or fails the command: never a silent gap. */
void append(json_t *array, json_t *value);
json_t *real_or_null(double x);
/* Adds the run's settings ("threads") to `root`, prints it and frees it. */
void dump(json_t *root);

#endif
