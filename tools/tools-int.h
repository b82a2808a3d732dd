/*
 * The ckpt command line: one function per subcommand, each in its own
 * file, each parsing its own options and answering --help. A subcommand
 * returns the process exit status (0 success, 1 failure, 2 usage).
 */
#ifndef CKPTFS_TOOLS_INT_H
#define CKPTFS_TOOLS_INT_H

#include <stdbool.h>
#include <stdint.h>

struct ckpt_cmd {
	const char *name;
	const char *args;    /* synopsis of the arguments */
	const char *summary; /* one line */
	int (*run)(int argc, char **argv);
};

/* Exit statuses of subcommands. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = 2,
};

/* True when stderr is a terminal: progress bars are drawn only then. */
bool tools_interactive(void);

/* Draws (or, with done, finishes) a one-line progress bar on stderr:
 * "label [#####     ] 42% 1.2 GiB/2.9 GiB". Does nothing off a terminal. */
void tools_progress(const char *label, uint64_t done, uint64_t total, bool finished);

int cmd_store(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_netlock(int argc, char **argv);     /* cmd-netlock.c */
int cmd_checkpoint(int argc, char **argv); /* cmd-mount.c */
int cmd_ls(int argc, char **argv);         /* cmd-mount.c */
int cmd_status(int argc, char **argv);     /* cmd-mount.c */
/* The reason to print for a failed call: its err_msg() detail when there
 * is one (it names the object), else strerror(-r). */
const char *tools_reason(int r);
int cmd_dump(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int bench_engine(int argc, char **argv);
/* ckpt bench freeze (bench-freeze.c) */
int bench_freeze(int argc, char **argv);

/* ckpt bench store (bench-store.c); cmd_bench dispatches to it. */
int bench_store(int argc, char **argv);

#endif
