/*
 * ckpt: the command line of ckptfs. Does the jobs of the daemon without a
 * mount (dump, restore, the store's upkeep, benchmarks) and drives a
 * mounted ckptfs. Each subcommand lives in its own file.
 */
#include <getopt.h>
#include <sys/stat.h>

#include "common/common.h"
#include "tools/tools-int.h"

static int cmd_version(int argc, char **argv);

static const struct ckpt_cmd cmds[] = {
	{ "dump", "[--kill|--stop] PID DIR", "checkpoint a process into a snapshot directory", cmd_dump },
	{ "restore", "[--no-verify] [--accept-changed-files] [--lazy] DIR", "restore a process from a snapshot directory", cmd_restore },
	{ "checkpoint", "[--kill|--stop|--every D] [--mount DIR] PID", "checkpoint PID through a mounted ckptfs, once or every D", cmd_checkpoint },
	{ "ls", "[--mount DIR] [PID...] | --store DIR", "list snapshots", cmd_ls },
	{ "status", "[--mount DIR] [PID...]", "checkpoints and restores of a mounted ckptfs", cmd_status },
	{ "netlock", "[--clear]", "TCP connections held between a dump --kill and its restore", cmd_netlock },
	{ "verify", "[--quick] DIR", "check a snapshot directory against its manifest", cmd_verify },
	{ "store", "[--store DIR] ls|rm|gc|fsck|stats", "look after a chunk store", cmd_store },
	{ "bench", "store|engine [OPTIONS]", "run a benchmark (figures in docs/PERFORMANCE.md)", cmd_bench },
	{ "version", "", "print the version", cmd_version },
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt COMMAND [ARGS...]\n"
		"\n"
		"Checkpoint and restore Linux processes; manage ckptfs snapshots.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(out, "  %-10s %-43s %s\n", cmds[i].name, cmds[i].args, cmds[i].summary);
	fprintf(out,
		"\n"
		"  ckpt COMMAND --help   says more about one command.\n"
		"\n"
		"Environment:\n"
		"  CKPTFS_LOG=err|warn|info|debug   how much to log (default info)\n"
		"\n"
		"Version " CKPTFS_VERSION ". Documentation: README.md and docs/ in the source tree.\n");
}

static int cmd_version(int argc, char **argv)
{
	printf("ckpt " CKPTFS_VERSION "\n");
	return EXIT_OK;
}

bool tools_interactive(void)
{
	static int tty = -1;
	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	return tty;
}

void tools_progress(const char *label, uint64_t done, uint64_t total, bool finished)
{
	char a[32], b[32], bar[31];
	unsigned pct;

	if (!tools_interactive())
		return;
	pct = total ? (unsigned)(MIN(done, total) * 100 / total) : 0;
	for (unsigned i = 0; i < 30; i++)
		bar[i] = i < pct * 30 / 100 ? '#' : ' ';
	bar[30] = 0;
	if (total)
		fprintf(stderr, "\r%-10s [%s] %3u%% %s/%s ", label, bar, pct,
			fmt_bytes(done, a, sizeof(a)), fmt_bytes(total, b, sizeof(b)));
	else
		fprintf(stderr, "\r%-10s %s ", label, fmt_bytes(done, a, sizeof(a)));
	if (finished)
		fputc('\n', stderr);
	fflush(stderr);
}

int main(int argc, char **argv)
{
	log_set_target(LOG_TARGET_STDERR, "ckpt");
	log_setup_env();

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("ckpt " CKPTFS_VERSION "\n");
		return EXIT_OK;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].run(argc - 1, argv + 1);
	fprintf(stderr, "ckpt: unknown command '%s'; see 'ckpt --help'\n", argv[1]);
	return EXIT_USAGE;
}
