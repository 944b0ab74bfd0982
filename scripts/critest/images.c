/* The programs critest's images run, as one static multi-call binary (dispatch on the name it
 * is run as), so the images can be built from busybox-static without a registry:
 *   nginx  - answers every HTTP request with 200 on $PORT (default 80), writes
 *            /var/run/nginx.pid and logs "$SERVER: listening", as the e2e nginx/httpd images do;
 *            its process name is nginx and its command line "nginx: master process", which the
 *            pid-namespace specs look for (pidof, /proc/1/cmdline).
 *   pause  - the sandbox's pause: sleeps until SIGINT/SIGTERM, reaps children.
 *   nnp    - prints "Effective uid: N" (installed setuid root, for the NoNewPrivs specs).
 *   pgrep, ipcs -m - what Debian's busybox-static lacks and the specs exec: pids whose name
 *            contains the pattern; the System V shared memory segments (key, shmid, ...).
 * Built by scripts/critest.sh with gcc -static. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

static int nginx(int argc, char **argv) {
	/* The title nginx's master gives itself, written over our own argument strings (the image
	 * runs us with enough of them: nginx -g "daemon off;"). */
	static const char title[] = "nginx: master process";
	char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
	if ((size_t)(end - start) >= sizeof title) {
		memset(start, 0, end - start);
		memcpy(start, title, sizeof title);
	}
	const char *server = getenv("SERVER");
	const char *p = getenv("PORT");
	int port = p ? atoi(p) : 80;
	FILE *f = fopen("/var/run/nginx.pid", "w");
	if (f) {
		fprintf(f, "%d\n", getpid());
		fclose(f);
	}
	signal(SIGPIPE, SIG_IGN);
	int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int fam = AF_INET6;
	if (s < 0) {
		s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		fam = AF_INET;
	}
	int one = 1, zero = 0;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	int r;
	if (fam == AF_INET6) {
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
		r = bind(s, (struct sockaddr *)&a, sizeof a);
	} else {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
		r = bind(s, (struct sockaddr *)&a, sizeof a);
	}
	if (r < 0 || listen(s, 64) < 0) {
		perror("nginx: bind/listen");
		return 1;
	}
	printf("%s: listening on %d\n", server ? server : "nginx", port);
	fflush(stdout);
	static const char resp[] = "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: 22\r\nConnection: close\r\n\r\n<h1>Welcome nginx</h1>";
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		char buf[4096];
		struct timeval tv = {.tv_sec = 2};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		ssize_t n = read(c, buf, sizeof buf);
		(void)n;
		ssize_t w = write(c, resp, sizeof resp - 1);
		(void)w;
		close(c);
	}
}

static volatile sig_atomic_t stop;
static void on_stop(int sig) { (void)sig; stop = 1; }
static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int pause_main(void) {
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGCHLD, on_child);
	while (!stop)
		pause();
	return 0;
}

static int pgrep(const char *pattern) {
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char path[300], comm[64] = "";
		snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof comm, f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
		if (strstr(comm, pattern) && atoi(e->d_name) != getpid()) {
			printf("%s\n", e->d_name);
			found = 1;
		}
	}
	return found ? 0 : 1;
}

static int ipcs(void) {
	FILE *f = fopen("/proc/sysvipc/shm", "r");
	char line[512];
	printf("\n------ Shared Memory Segments --------\nkey        shmid      owner      perms      bytes      nattch     status\n");
	if (!f)
		return 0;
	if (!fgets(line, sizeof line, f)) /* header */
		return 0;
	while (fgets(line, sizeof line, f)) {
		long key, shmid, perms, size, cpid, lpid, nattch, uid;
		if (sscanf(line, "%ld %ld %lo %ld %ld %ld %ld %ld", &key, &shmid, &perms, &size, &cpid, &lpid, &nattch, &uid) == 8)
			printf("0x%08x %-10ld %-10ld %-10lo %-10ld %-10ld\n", (unsigned)key, shmid, uid, perms, size, nattch);
	}
	fclose(f);
	return 0;
}

int main(int argc, char **argv) {
	const char *name = strrchr(argv[0], '/');
	name = name ? name + 1 : argv[0];
	if (!strcmp(name, "nginx"))
		return nginx(argc, argv);
	if (!strcmp(name, "pause"))
		return pause_main();
	if (!strcmp(name, "pgrep"))
		return argc > 1 ? pgrep(argv[argc - 1]) : 2;
	if (!strcmp(name, "ipcs"))
		return ipcs();
	if (!strcmp(name, "nnp")) {
		printf("Effective uid: %d\n", geteuid());
		return 0;
	}
	fprintf(stderr, "%s: unknown program name\n", name);
	return 2;
}
