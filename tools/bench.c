/*
 * ckpt bench: runs one of the benchmarks whose figures go into
 * docs/PERFORMANCE.md. Each lives in its own file (bench-<name>.c).
 */
#include "common/common.h"
#include "tools/tools-int.h"

static const struct {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
} benches[] = {
	{ "store", "ingest, re-ingest, small changes and read back of the chunk store", bench_store },
	{ "engine", "dump and restore of a process with 2 GiB resident, beside process_vm_readv and dd", bench_engine },
	{ "freeze", "downtime a running process sees for a dump, with pre-copy and stop-and-copy", bench_freeze },
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: ckpt bench NAME [OPTIONS]\n\nBenchmarks:\n");
	for (size_t i = 0; i < ARRAY_SIZE(benches); i++)
		fprintf(out, "  %-8s %s\n", benches[i].name, benches[i].summary);
	fprintf(out, "\n  ckpt bench NAME --help   says what one measures and its options.\n");
}

int cmd_bench(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < ARRAY_SIZE(benches); i++)
		if (!strcmp(argv[1], benches[i].name))
			return benches[i].run(argc - 1, argv + 1);
	fprintf(stderr, "ckpt bench: unknown benchmark '%s'; see 'ckpt bench --help'\n", argv[1]);
	return EXIT_USAGE;
}
