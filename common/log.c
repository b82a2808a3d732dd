/*
 * Logging to stderr or syslog. One line per call, written with a single
 * write so that lines from threads do not interleave.
 */
#include <pthread.h>
#include <syslog.h>
#include <time.h>

#include "common/common.h"

static enum log_level log_level = LOG_LEVEL_INFO;
static enum log_target log_target = LOG_TARGET_STDERR;
static const char *log_ident = "ckptfs";

void log_set_level(enum log_level level)
{
	if (level < _LOG_LEVEL_MAX)
		log_level = level;
}

enum log_level log_get_level(void)
{
	return log_level;
}

void log_set_target(enum log_target target, const char *ident)
{
	log_target = target;
	if (ident)
		log_ident = ident;
	if (target == LOG_TARGET_SYSLOG)
		openlog(log_ident, LOG_PID, LOG_DAEMON);
}

void log_setup_env(void)
{
	static const char *names[_LOG_LEVEL_MAX] = { "err", "warn", "info", "debug" };
	const char *e = getenv("CKPTFS_LOG");

	if (!e)
		return;
	for (int i = 0; i < _LOG_LEVEL_MAX; i++)
		if (strcmp(e, names[i]) == 0)
			log_level = i;
}

int log_msg(enum log_level level, int err, const char *fmt, ...)
{
	static const int prio[_LOG_LEVEL_MAX] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *tag[_LOG_LEVEL_MAX] = { "error: ", "warning: ", "", "debug: " };
	int saved = errno;
	char line[2048];
	size_t n = 0;
	va_list ap;

	if (level > log_level)
		return err;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	if (err)
		n += snprintf(line + n, sizeof(line) - n, ": %s", strerror(err < 0 ? -err : err));
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;

	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(prio[level], "%s", line);
	} else {
		char out[2200];
		int m = snprintf(out, sizeof(out), "%s: %s%s\n", log_ident, tag[level], line);
		if (m > 0)
			(void)!write(STDERR_FILENO, out, MIN((size_t)m, sizeof(out) - 1));
	}
	errno = saved;
	return err;
}

static __thread char err_detail[1024];

int err_set(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err_detail, sizeof(err_detail), fmt, ap);
	va_end(ap);
	return err;
}

const char *err_msg(void)
{
	return err_detail;
}

void err_clear(void)
{
	err_detail[0] = 0;
}
