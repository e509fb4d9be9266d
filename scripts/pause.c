/* A pod's sandbox ("pause") process for containerd's CRI in scripts/bench-cri, built offline.
 *
 * It only has to exist: it keeps the pod's namespaces alive. When the pod shares one PID
 * namespace it is PID 1 there, so it also reaps the orphans the kernel hands it. SIGINT or
 * SIGTERM (how the runtime stops a pod) end it with status 0; as PID 1 it would otherwise
 * ignore them, since PID 1 gets no default signal actions.
 *
 * Build: gcc -static -Os -s -o pause scripts/pause.c
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	int saved = errno; /* the interrupted code may be about to read errno */

	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

int main(void)
{
	struct sigaction on_stop = { .sa_handler = stop };
	struct sigaction on_child = { .sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART };

	if (sigaction(SIGINT, &on_stop, NULL) || sigaction(SIGTERM, &on_stop, NULL) ||
	    sigaction(SIGCHLD, &on_child, NULL))
		return 1;
	for (;;)
		pause();
}
