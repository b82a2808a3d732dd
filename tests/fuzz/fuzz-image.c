/*
 * libFuzzer target for the engine's readers of a snapshot's text files:
 * `process` (process_parse), `maps` (maps_parse_image), `regs/TID`
 * (thread_parse), `tree` (tree_parse) and `ipc` (ipc_parse). A snapshot
 * copied into restore/ from elsewhere reaches them once its manifest and
 * hashes passed; nothing they are given may crash, leak or read out of
 * bounds. What process_parse, thread_parse, tree_parse and ipc_parse
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

static void tree_again(const struct tree *t)
{
	struct tree again = { 0 };
	char *text = tree_format(t);

	if (!text)
		abort();
	if (tree_parse(text, &again) < 0 || again.n != t->n)
		abort();
	for (size_t i = 0; i < t->n; i++)
		if (memcmp(&again.v[i], &t->v[i], sizeof(t->v[i])))
			abort();
	tree_free(&again);
	free(text);
}

static void ipc_again(const struct ipc_image *img)
{
	struct ipc_image again = { 0 };
	char *text = ipc_format(img);

	if (!text)
		abort();
	if (ipc_parse(text, &again) < 0 || again.nshm != img->nshm || again.nsem != img->nsem ||
	    again.nmsq != img->nmsq || (img->nshm && memcmp(again.shm, img->shm, img->nshm * sizeof(*img->shm))))
		abort();
	for (size_t i = 0; i < img->nsem; i++)
		if (again.sem[i].nsems != img->sem[i].nsems || again.sem[i].o.id != img->sem[i].o.id ||
		    memcmp(again.sem[i].val, img->sem[i].val, img->sem[i].nsems * sizeof(*img->sem[i].val)))
			abort();
	for (size_t i = 0; i < img->nmsq; i++) {
		if (again.msq[i].n != img->msq[i].n || again.msq[i].qbytes != img->msq[i].qbytes)
			abort();
		for (size_t k = 0; k < img->msq[i].n; k++)
			if (again.msq[i].m[k].type != img->msq[i].m[k].type ||
			    again.msq[i].m[k].len != img->msq[i].m[k].len ||
			    memcmp(again.msq[i].m[k].data, img->msq[i].m[k].data, img->msq[i].m[k].len))
				abort();
	}
	ipc_image_free(&again);
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
	struct tree tr = { 0 };
	if (tree_parse(text, &tr) == 0)
		tree_again(&tr);
	tree_free(&tr);
	struct ipc_image ipc = { 0 };
	if (ipc_parse(text, &ipc) == 0)
		ipc_again(&ipc);
	ipc_image_free(&ipc);
	free(text);
	return 0;
}
