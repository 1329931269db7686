/*
 * cmd.h: the subcommands of `mi`, one file each (report.c, topk.c, ...),
 * each entry point called with the arguments after its name. Returns the
 * exit status.
 */
#ifndef MI_CMD_H
#define MI_CMD_H

typedef struct cmd {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *desc; /* one line for `mi --help` */
} cmd;

int cmd_report(int argc, char **argv);
int cmd_topk(int argc, char **argv);
int cmd_paths(int argc, char **argv);
int cmd_compose(int argc, char **argv);
int cmd_attribute(int argc, char **argv);
int cmd_sweep(int argc, char **argv);

#endif
