/*
 * The /README at the root of the mount: a screenful on how to use it.
 */
#include "fs/fs-int.h"

const char fs_readme[] =
	"ckptfs: checkpoint and restore processes with plain file operations.\n"
	"\n"
	"  /<pid>/            a process you may checkpoint, or a pid with snapshots\n"
	"  /<pid>/ctl         write one line:\n"
	"                       checkpoint        take a snapshot; the process keeps running\n"
	"                       checkpoint kill   ... then kill it (migration, preemption)\n"
	"                       checkpoint stop   ... then leave it stopped\n"
	"                       every 30s keep 5  a checkpoint every 30 s (s, m, h), the\n"
	"                                         policy's newest 5 kept; resumes when\n"
	"                                         the store is mounted again\n"
	"                       every off         no more periodic checkpoints\n"
	"                       untrack           stop watching its writes between\n"
	"                                         checkpoints (-o track), free the copy\n"
	"                     the write returns when the snapshot is durable, or fails\n"
	"  /<pid>/status      state, phase, progress, last_snapshot, last_error,\n"
	"                     memory (incremental | pre-copy | stop-and-copy), tracking,\n"
	"                     policy, next, last, runs (the periodic checkpoints)\n"
	"  /<pid>/<n>/        snapshot n (1 = oldest), read-only: manifest, process,\n"
	"                     maps, memory/<start>-<end>, regs/<tid>, fds, gpu/...\n"
	"  /restore/<name>/   copy a snapshot here to restore it\n"
	"  /restore/<name>/status   receiving | verifying | restoring |\n"
	"                     running pid=N processes=K | failed: <file>: <reason>\n"
	"                     (restoring: waiting for pid N ... while a zombie\n"
	"                     not yet reaped by its parent holds the pid)\n"
	"  /restore/<name>/ctl      write one line:\n"
	"                       accept-changed-files   restore files that changed since\n"
	"                                              the checkpoint (before the copy, or\n"
	"                                              after a failure: runs it again)\n"
	"                       lazy                   run it before all its memory is\n"
	"                                              back (status: loaded: N of M bytes)\n"
	"                       retry                  run a failed restore again\n"
	"\n"
	"Examples:\n"
	"  echo checkpoint > /ckpt/1234/ctl        # take a snapshot\n"
	"  cat /ckpt/1234/status\n"
	"  cat /ckpt/1234/1/tree                   # the processes it holds\n"
	"  grep rip /ckpt/1234/1/1234/regs/*       # browse it\n"
	"  cp -r /ckpt/1234/1 /backup/snap         # copy it out (sparse, exact)\n"
	"  rm -r /ckpt/1234/1                      # delete it\n"
	"  cp -r /backup/snap /ckpt/restore/web    # restore it (name must be new)\n"
	"  cat /ckpt/restore/web/status            # ... until 'running pid=N processes=K'\n"
	"  rmdir /ckpt/restore/web                 # forget the restore (the process stays)\n"
	"\n"
	"You see your own processes and snapshots only (root sees all); a restore\n"
	"runs with your credentials. The same is possible without a mount:\n"
	"ckpt dump, ckpt restore, ckpt ls. More: docs/FS.md in the source tree.\n";

size_t fs_readme_len(void)
{
	return sizeof(fs_readme) - 1;
}
