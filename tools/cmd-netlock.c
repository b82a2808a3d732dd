/*
 * ckpt netlock [--clear]: the network lock that holds the TCP connections
 * of processes dumped with --kill until their restore (engine/netlock.c):
 * lists what it holds, or removes it. A restore lifts the lock of its
 * connections itself; what is left is a restore that failed or never came.
 */
#include <getopt.h>

#include "common/common.h"
#include "engine/engine.h"
#include "tools/tools-int.h"

static void help(FILE *out)
{
	fprintf(out,
		"Usage: ckpt netlock [--clear]\n"
		"\n"
		"Between `ckpt dump --kill` of a process with established TCP connections\n"
		"and its restore, an nftables table of ckptfs (inet ckptfs) drops every\n"
		"packet of those connections, so that their peers see no reset and send\n"
		"again once the restored process answers. A successful restore removes\n"
		"its connections from it. Without options, prints the table (nothing when\n"
		"there is none); each held connection is one element per direction in\n"
		"its set conn4 or conn6: address . port . address . port.\n"
		"\n"
		"  --clear      remove the whole table: every held connection's peer gets\n"
		"               a reset at its next packet (use when no restore will come)\n"
		"  -h, --help   this text\n"
		"\n"
		"Needs root (CAP_NET_ADMIN). Exit status: 0 done, 1 failure, 2 usage.\n");
}

int cmd_netlock(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "clear", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	bool clear = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			clear = true;
			break;
		case 'h':
			help(stdout);
			return EXIT_OK;
		default:
			help(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		help(stderr);
		return EXIT_USAGE;
	}
	if (clear) {
		r = engine_netlock_clear();
		if (r < 0) {
			fprintf(stderr, "ckpt netlock: %s\n", tools_reason(r));
			return EXIT_FAIL;
		}
		return EXIT_OK;
	}
	_cleanup_free_ char *text = NULL;
	r = engine_netlock_list(&text);
	if (r < 0) {
		fprintf(stderr, "ckpt netlock: %s\n", tools_reason(r));
		return EXIT_FAIL;
	}
	fputs(text, stdout);
	return EXIT_OK;
}
