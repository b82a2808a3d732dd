/*
 * libFuzzer target for the engine's readers of a snapshot's text files:
 * `process` (process_parse), `maps` (maps_parse_image) and `regs/TID`
 * (thread_parse). A snapshot copied into restore/ from elsewhere reaches
 * them once its manifest and hashes passed; nothing they are given may
 * crash, leak or read out of bounds. What process_parse and thread_parse
 * accept must format back into a text that parses to the same thing
 * (build with -Dfuzz=true and clang: ASan + libFuzzer).
 *
 *   build-fuzz/tests/fuzz/fuzz-image tests/fuzz/corpus/image
 *
 * test-fuzz-image.c runs the same function over the corpus in every normal
 * test run, under gcc.
 */
#include <stdint.h>

#include "engine/engine-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void process_again(const struct proc_image *img)
{
	struct proc_image again = { 0 };
	char *text = process_format(img);

	if (!text)
		abort();
	if (process_parse(text, &again) < 0 || again.pid != img->pid || again.nthreads != img->nthreads ||
	    again.nptimers != img->nptimers || again.npending != img->npending ||
	    again.has_sigact != img->has_sigact || again.umask != img->umask ||
	    memcmp(again.ptimers, img->ptimers, img->nptimers * sizeof(*img->ptimers)) ||
	    memcmp(&again.mm, &img->mm, sizeof(img->mm)) || strcmp(again.exe, img->exe) ||
	    strcmp(again.cwd, img->cwd))
		abort();
	proc_image_free(&again);
	free(text);
}

static void thread_again(const struct thread_image *t)
{
	struct thread_image again = { 0 };
	char *text = thread_format(t);

	if (!text)
		abort();
	if (thread_parse(text, "regs/1", &again) < 0 || memcmp(&again.regs, &t->regs, sizeof(t->regs)) ||
	    again.xstate_len != t->xstate_len || memcmp(again.xstate, t->xstate, t->xstate_len) ||
	    again.sigmask != t->sigmask || again.npending != t->npending)
		abort();
	thread_image_free(&again);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct proc_image img = { 0 };
	struct thread_image t = { 0 };
	struct vma *v = NULL;
	size_t n = 0;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;
	if (process_parse(text, &img) == 0)
		process_again(&img);
	proc_image_free(&img);
	if (maps_parse_image(text, &v, &n) == 0)
		vmas_free(v, n);
	if (thread_parse(text, "regs/1", &t) == 0)
		thread_again(&t);
	thread_image_free(&t);
	free(text);
	return 0;
}
