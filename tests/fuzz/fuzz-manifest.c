/*
 * libFuzzer target for the manifest parser: the gate every snapshot copied
 * into restore/ passes. Whatever it accepts must format back into a text
 * that parses to the same manifest; nothing may crash, leak or read out
 * of bounds (build with -Dfuzz=true and clang: ASan + libFuzzer).
 *
 *   build-fuzz/tests/fuzz/fuzz-manifest tests/fuzz/corpus/manifest
 *
 * test-fuzz-corpus.c runs the same function over the corpus in every
 * normal test run, under gcc.
 */
#include <stdint.h>

#include "store/store-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct manifest m = { 0 }, again = { 0 };
	char *text = NULL;
	size_t len = 0;

	if (manifest_parse((const char *)data, size, &m) < 0)
		return 0;
	if (manifest_format(&m, &text, &len) < 0)
		abort();
	if (manifest_parse(text, len, &again) < 0 || again.nfiles != m.nfiles || again.version != m.version ||
	    again.created != m.created)
		abort();
	for (size_t i = 0; i < m.nfiles; i++) {
		if (strcmp(m.files[i].path, again.files[i].path) || m.files[i].size != again.files[i].size ||
		    memcmp(m.files[i].hash, again.files[i].hash, STORE_HASH_LEN))
			abort();
		if (manifest_find(&m, m.files[i].path) != &m.files[i])
			abort();
	}
	free(text);
	manifest_clear(&again);
	manifest_clear(&m);
	return 0;
}
