/*
 * target-ipc: a SysV semaphore set and message queue used by a parent and
 * its child, checkpointed and restored as one tree.
 *
 * The parent makes a set of 3 semaphores (key 0x5f<pid>) and a queue
 * (key 0x5d<pid>), both mode 0640. The child adds 3 to semaphore 0 and 7
 * to semaphore 2 (one semop: it is their last operator, which makes the
 * set the tree's), sends 3 messages (types 1, 5 and 2; 5, 14 and 3000
 * bytes: it is the queue's last sender), and then waits in semop() to
 * take 1 from semaphore 1, which is 0. The checkpoint comes with the child
 * blocked there.
 *
 * After the restore the parent checks: semget(key) and msgget(key) give
 * the same ids, IPC_STAT the mode, the values are 3 0 7 and one process
 * waits on semaphore 1; the 3 messages come out in order with their types
 * and bytes, then the queue is empty. It then adds 1 to semaphore 1: the
 * child's semop, restarted by the restore, takes it and the child exits
 * 0. The parent removes both objects at the end.
 *
 * Command line: target-ipc READY RESULT
 */
#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/wait.h>

#include "target.h"

#define BIG 3000

static int semid, msqid;
static key_t semkey, msgkey;

static const struct {
	long type;
	size_t len;
} msgs[3] = { { 1, 5 }, { 5, 14 }, { 2, BIG } };

static uint8_t byte_of(size_t m, size_t i)
{
	return (uint8_t)(m * 31 + i * 7 + 1);
}

struct msgbuf_ {
	long type;
	uint8_t text[BIG];
};

static _Noreturn void child(void)
{
	struct sembuf add[2] = { { 0, 3, 0 }, { 2, 7, 0 } };
	if (semop(semid, add, 2) < 0)
		_exit(2);
	for (size_t m = 0; m < 3; m++) {
		static struct msgbuf_ b;
		b.type = msgs[m].type;
		for (size_t i = 0; i < msgs[m].len; i++)
			b.text[i] = byte_of(m, i);
		if (msgsnd(msqid, &b, msgs[m].len, 0) < 0)
			_exit(3);
	}
	/* blocked here across the checkpoint; the parent wakes us after the
	 * restore */
	struct sembuf take = { 1, -1, 0 };
	while (semop(semid, &take, 1) < 0)
		if (errno != EINTR)
			_exit(4);
	_exit(0);
}

static int waiting_on_1(void)
{
	return semctl(semid, 1, GETNCNT);
}

static const char *check(void)
{
	static char why[200];
	struct semid_ds sds;
	struct msqid_ds mds;
	unsigned short v[3];
	if (semget(semkey, 0, 0) != semid || msgget(msgkey, 0) != msqid)
		return "semget or msgget of the key gives another id";
	if (semctl(semid, 0, IPC_STAT, &sds) < 0 || msgctl(msqid, IPC_STAT, &mds) < 0)
		return "IPC_STAT failed";
	if ((sds.sem_perm.mode & 0777) != 0640 || (mds.msg_perm.mode & 0777) != 0640 || sds.sem_nsems != 3)
		return "mode or number of semaphores changed";
	if (semctl(semid, 0, GETALL, v) < 0 || v[0] != 3 || v[1] != 0 || v[2] != 7) {
		snprintf(why, sizeof(why), "semaphore values %u %u %u, not 3 0 7", v[0], v[1], v[2]);
		return why;
	}
	if (mds.msg_qnum != 3) {
		snprintf(why, sizeof(why), "%lu messages queued, not 3", (unsigned long)mds.msg_qnum);
		return why;
	}
	for (size_t m = 0; m < 3; m++) {
		static struct msgbuf_ b;
		ssize_t n = msgrcv(msqid, &b, sizeof(b.text), 0, IPC_NOWAIT);
		if (n != (ssize_t)msgs[m].len || b.type != msgs[m].type) {
			snprintf(why, sizeof(why), "message %zu: type %ld, %zd bytes, not %ld, %zu", m + 1, b.type, n,
				 msgs[m].type, msgs[m].len);
			return why;
		}
		for (size_t i = 0; i < msgs[m].len; i++)
			if (b.text[i] != byte_of(m, i))
				return "a message's bytes changed";
	}
	struct msgbuf_ b;
	if (msgrcv(msqid, &b, sizeof(b.text), 0, IPC_NOWAIT) >= 0 || errno != ENOMSG)
		return "more messages than were sent";
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	semkey = (key_t)(0x5f000000 | (getpid() & 0xffffff));
	msgkey = (key_t)(0x5d000000 | (getpid() & 0xffffff));
	semid = semget(semkey, 3, IPC_CREAT | IPC_EXCL | 0640);
	msqid = msgget(msgkey, IPC_CREAT | IPC_EXCL | 0640);
	if (semid < 0 || msqid < 0)
		target_verdict(0, "semget/msgget: %s", strerror(errno));
	pid_t c = fork();
	if (c < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (c == 0)
		child();
	for (int i = 0; i < 20000 && waiting_on_1() != 1; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (waiting_on_1() != 1)
		target_verdict(0, "the child did not get to its semop");
	target_ready();
	target_wait_restored();

	/* the restored child's semop waits again (a moment after the
	 * restore at most) */
	for (int i = 0; i < 20000 && waiting_on_1() != 1; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	const char *why = waiting_on_1() == 1 ? check() : "nobody waits on semaphore 1 after the restore";
	struct sembuf give = { 1, 1, 0 };
	if (!why && semop(semid, &give, 1) < 0)
		why = "semop failed";
	if (why)
		kill(c, SIGKILL);
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		why = why ? why : "the child failed";
	semctl(semid, 0, IPC_RMID);
	msgctl(msqid, IPC_RMID, NULL);
	if (why)
		target_verdict(0, "%s", why);
	target_pass();
}
