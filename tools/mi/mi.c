/*
 * mi: libmi's analyses from the shell.
 *
 *   mi report [MODEL]      every head's scores and its top skip-trigrams
 *   mi topk [MODEL] ...    the largest entries of a head's QK/OV or the direct circuit
 *   mi paths [MODEL]       paths through the heads, ranked by Frobenius norm
 *   mi compose [MODEL]     Q/K/V-composition scores against chance
 *   mi attribute [MODEL] "text"   the logit of a token split into paths
 *   mi sweep [MODEL] -o FILE      whole circuits into one results file (mpirun: shared)
 *
 * Text for people by default, --json for pipelines. Exit status: 0 ok,
 * 1 libmi failed (its message on stderr), 2 the command line was wrong.
 * Each subcommand is its own file; cli.h holds what they share.
 */
#include "cli.h"
#include "cmd.h"

#include <stdio.h>
#include <string.h>

static const cmd commands[] = {
    {"report", cmd_report, "every head's role and scores against chance, skip-trigrams; --html"},
    {"topk", cmd_topk, "largest entries of a head's QK or OV circuit, or of the direct path"},
    {"paths", cmd_paths, "paths through the heads, by Frobenius norm"},
    {"compose", cmd_compose, "Q/K/V-composition scores against chance"},
    {"attribute", cmd_attribute, "a logit split into direct, head, virtual-head and bias parts"},
    {"sweep", cmd_sweep, "whole circuits read once into one results file (units; MPI)"},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void print_main_help(FILE *to) {
  fprintf(to,
          "usage: mi COMMAND [MODEL] [options]\n"
          "\n"
          "Mechanistic interpretability of attention-only transformers (libmi %s).\n"
          "MODEL is a .safetensors file (TransformerLens or GPT-2 names), a PyTorch .pth\n"
          "or a model folder; a vocab.txt or vocab.json beside a file is loaded. Without\n"
          "MODEL: the shipped skip-trigram-1l model. LayerNorm is folded into the weights\n"
          "on loading (--process says otherwise).\n"
          "\n"
          "commands:\n",
          mi_version_string());
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].desc);
  fprintf(to, "\n"
              "every command takes --help, --json, --threads N, --no-fast-kernels and the\n"
              "model options --n-heads N, --process fold|tl|none and\n"
              "--positional standard|shortformer|none ('mi COMMAND --help' says more).\n"
              "exit status: 0 ok, 1 libmi failed, 2 bad command line.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_main_help(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    print_main_help(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("mi %s\n", mi_version_string());
    return 0;
  }
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (!strcmp(argv[1], commands[i].name)) {
      static char name[32];
      snprintf(name, sizeof name, "mi %s", commands[i].name);
      cli_cmd = name;
      return commands[i].fn(argc - 2, argv + 2);
    }
  fprintf(stderr, "mi: unknown command '%s'\nTry 'mi --help'.\n", argv[1]);
  return EXIT_USAGE;
}
