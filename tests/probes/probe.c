/* Probes run inside test and benchmark containers (static, so any image can run it).
 *   probe setattr-clear-ro PATH     mount_setattr clearing MOUNT_ATTR_RDONLY
 *   probe clone-attach-rw SRC DST   open_tree recursive clone, clear RDONLY, move_mount to DST
 *   probe fspick PATH               fspick (reconfigure a superblock)
 *   probe move PATH DST             move_mount of an attached mount
 *   probe bpf-next-map x            BPF_MAP_GET_NEXT_ID (enumerate the host's BPF maps)
 *   probe open-by-handle PATH       name_to_handle_at + open_by_handle_at
 *   probe mount-bench N DIR         N x (mount tmpfs DIR; umount DIR): p50/p99 us per op
 *   probe mount-bench-lazy N DIR    the same with umount2(MNT_DETACH)
 *   probe getpid-bench N            N x getpid: mean ns per call
 *   probe sysinfo-bench N           N x sysinfo: p50/p99 us per call
 *   probe fsmount-proc DIR          mount a procfs at DIR with fsopen/fsconfig/fsmount/move_mount
 *   probe watch-exec SECONDS        for SECONDS, PTRACE_SEIZE every new pid of the pid namespace
 *                                   (ns_last_pid) and count those seized while their uid is
 *                                   the overflow uid (host root seen from the container)
 *   probe open-tree-read SRC FILE [r]  open_tree clone of SRC ([r]: AT_RECURSIVE), then read the
 *                                   first line of FILE inside the detached copy
 *   probe open-tree-attr-read SRC FILE  the same with open_tree_attr (clone, RDONLY cleared)
 *   probe open-tree-attr-rw SRC DST open_tree_attr clone clearing RDONLY, move_mount to DST
 *   probe fsmount-read TYPE FILE    fsopen/fsmount TYPE, then read FILE in the detached mount
 *   probe read-bench N FILE [GAP]   N x open+read+close: p50/p99 us, reads/s; with GAP,
 *                                   GAP us of sleep before each (no read finds a warm cache)
 *   probe agent-child SECONDS       for up to SECONDS, look for a process of the shim's binary
 *                                   in this pid namespace (the agent's child that builds a fresh
 *                                   procfs); for the first found, try PTRACE_SEIZE and opening
 *                                   its fd 3 (the host's /proc), mem and mount namespace
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

struct attr { uint64_t set, clr, propagation, userns_fd; };
#define ATTR_RDONLY 0x1
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#define F_EMPTY 0x4

static int report(const char *what, long r) {
	if (r < 0) { printf("%s: errno=%s\n", what, strerrorname_np(errno)); return 1; }
	printf("%s: ok\n", what);
	return 0;
}

#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif
#define AT_RECURSIVE_FLAG 0x8000

/* Print what a detached tree shows at FILE (first line), or the errno. */
static int read_in(const char *what, int tree, const char *file) {
	int fd = openat(tree, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return report(what, -1);
	char buf[256];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0) return report(what, -1);
	buf[n] = 0;
	char *nl = strchr(buf, '\n');
	if (nl) *nl = 0;
	printf("%s: read %s\n", what, buf);
	return 0;
}

static double now_us(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void percentiles(const char *what, double *v, int n) {
	qsort(v, n, sizeof *v, cmp);
	printf("%s p50_us=%.2f p99_us=%.2f\n", what, v[n / 2], v[(int)(n * 0.99)]);
}

/* The uid a process has as this user namespace sees it (-1 if gone). */
static long uid_of(long pid) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (!f) return -1;
	long uid = -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "Uid:", 4)) { uid = atol(line + 4); break; }
	fclose(f);
	return uid;
}

/* errno name of an attempt: "ok" when it worked (and the fd is closed again) */
static const char *attempt(long r) {
	if (r < 0) return strerrorname_np(errno);
	return "ok";
}

static int agent_child(double seconds) {
	double end = now_us() + seconds * 1e6;
	while (now_us() < end) {
		DIR *d = opendir("/proc");
		if (!d) return report("opendir /proc", -1);
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
			long pid = atol(e->d_name);
			if (pid == getpid()) continue;
			char path[64], cmd[256] = "";
			snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
			int f = open(path, O_RDONLY | O_CLOEXEC);
			if (f < 0) continue;
			ssize_t n = read(f, cmd, sizeof cmd - 1);
			close(f);
			if (n <= 0 || !strstr(cmd, "containerd-shim-eci-v2")) continue;
			long seized = ptrace(PTRACE_SEIZE, pid, 0, 0);
			const char *seize = attempt(seized);
			if (seized == 0) ptrace(PTRACE_DETACH, pid, 0, 0);
			char link[256];
			snprintf(path, sizeof path, "/proc/%ld/fd/3", pid);
			const char *fd3 = attempt(readlink(path, link, sizeof link));
			snprintf(path, sizeof path, "/proc/%ld/mem", pid);
			int m = open(path, O_RDONLY | O_CLOEXEC);
			const char *mem = attempt(m);
			if (m >= 0) close(m);
			snprintf(path, sizeof path, "/proc/%ld/ns/mnt", pid);
			int ns = open(path, O_RDONLY | O_CLOEXEC);
			const char *mnt = attempt(ns);
			if (ns >= 0) close(ns);
			printf("agent-child found seize=%s fd3=%s mem=%s ns=%s\n", seize, fd3, mem, mnt);
			closedir(d);
			return 0;
		}
		closedir(d);
	}
	printf("agent-child none\n");
	return 0;
}

static int watch_exec(double seconds) {
	int last_fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY);
	if (last_fd < 0) return report("open ns_last_pid", -1);
	double end = now_us() + seconds * 1e6;
	long seen = -1;
	int seized = 0, host_root = 0;
	while (now_us() < end) {
		char buf[32];
		ssize_t n = pread(last_fd, buf, sizeof buf - 1, 0);
		if (n <= 0) continue;
		buf[n] = 0;
		long pid = atol(buf);
		if (pid == seen) continue;
		seen = pid;
		if (pid == getpid()) continue;
		if (ptrace(PTRACE_SEIZE, pid, 0, 0)) continue;
		seized++;
		/* Stop it where it is, then look at its credentials; never touch its memory. */
		ptrace(PTRACE_INTERRUPT, pid, 0, 0);
		int status;
		waitpid(pid, &status, __WALL);
		long uid = uid_of(pid);
		if (uid == 65534) {
			host_root++;
			printf("seized pid %ld while its uid was %ld (host root)\n", pid, uid);
		}
		ptrace(PTRACE_DETACH, pid, 0, 0);
	}
	printf("watch-exec seized=%d host_root=%d\n", seized, host_root);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "watch-exec")) return watch_exec(atof(argv[2]));
	if (!strcmp(cmd, "setattr-clear-ro")) {
		struct attr a = { .clr = ATTR_RDONLY };
		return report(cmd, syscall(SYS_mount_setattr, AT_FDCWD, argv[2], 0, &a, sizeof a));
	}
	if (!strcmp(cmd, "clone-attach-rw") && argc > 3) {
		/* Recursive: a clone of one mount is refused (ENOSYS) before the flags matter. */
		int fd = syscall(SYS_open_tree, AT_FDCWD, argv[2], OPEN_TREE_CLONE | AT_RECURSIVE_FLAG);
		if (report("open_tree", fd)) return 1;
		struct attr a = { .clr = ATTR_RDONLY };
		int rc = report("setattr-clone-rw", syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof a));
		rc |= report("move_mount", syscall(SYS_move_mount, fd, "", AT_FDCWD, argv[3], F_EMPTY));
		return rc;
	}
	if (!strcmp(cmd, "fsmount-proc")) {
		int fs = syscall(SYS_fsopen, "proc", 0);
		if (report("fsopen", fs)) return 1;
		if (report("fsconfig", syscall(SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0))) return 1;
		int mnt = syscall(SYS_fsmount, fs, 0, 0);
		if (report("fsmount", mnt)) return 1;
		return report("move_mount", syscall(SYS_move_mount, mnt, "", AT_FDCWD, argv[2], F_EMPTY));
	}
	if (!strcmp(cmd, "open-tree-read") && argc > 3) {
		unsigned flags = OPEN_TREE_CLONE | O_CLOEXEC;
		if (argc > 4 && !strcmp(argv[4], "r")) flags |= AT_RECURSIVE_FLAG;
		int fd = syscall(SYS_open_tree, AT_FDCWD, argv[2], flags);
		if (report("open_tree", fd)) return 1;
		return read_in(cmd, fd, argv[3]);
	}
	if (!strcmp(cmd, "open-tree-attr-read") && argc > 3) {
		struct attr a = { .clr = ATTR_RDONLY };
		int fd = syscall(SYS_open_tree_attr, AT_FDCWD, argv[2], OPEN_TREE_CLONE | O_CLOEXEC, &a, sizeof a);
		if (report("open_tree_attr", fd)) return 1;
		return read_in(cmd, fd, argv[3]);
	}
	if (!strcmp(cmd, "open-tree-attr-rw") && argc > 3) {
		struct attr a = { .clr = ATTR_RDONLY };
		int fd = syscall(SYS_open_tree_attr, AT_FDCWD, argv[2], OPEN_TREE_CLONE | O_CLOEXEC, &a, sizeof a);
		if (report("open_tree_attr", fd)) return 1;
		return report("move_mount", syscall(SYS_move_mount, fd, "", AT_FDCWD, argv[3], F_EMPTY));
	}
	if (!strcmp(cmd, "fsmount-read") && argc > 3) {
		int fs = syscall(SYS_fsopen, argv[2], 0);
		if (report("fsopen", fs)) return 1;
		if (report("fsconfig", syscall(SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0))) return 1;
		int mnt = syscall(SYS_fsmount, fs, 0, 0);
		if (report("fsmount", mnt)) return 1;
		return read_in(cmd, mnt, argv[3]);
	}
	if (!strcmp(cmd, "bpf-next-map")) {
		union { struct { uint32_t start_id, next_id; } id; char pad[128]; } attr;
		memset(&attr, 0, sizeof attr);
		return report(cmd, syscall(SYS_bpf, 12 /* BPF_MAP_GET_NEXT_ID */, &attr, sizeof attr));
	}
	if (!strcmp(cmd, "open-by-handle")) {
		struct { struct file_handle fh; unsigned char bytes[128]; } h;
		int mount_id;
		h.fh.handle_bytes = 128;
		if (report("name_to_handle_at", syscall(SYS_name_to_handle_at, AT_FDCWD, argv[2], &h.fh, &mount_id, 0))) return 1;
		int mfd = open(argv[2], O_RDONLY | O_DIRECTORY);
		return report(cmd, syscall(SYS_open_by_handle_at, mfd, &h.fh, O_RDONLY));
	}
	if (!strcmp(cmd, "fspick")) return report(cmd, syscall(SYS_fspick, AT_FDCWD, argv[2], 0));
	if (!strcmp(cmd, "move") && argc > 3) return report(cmd, syscall(SYS_move_mount, AT_FDCWD, argv[2], AT_FDCWD, argv[3], 0));
	if ((!strcmp(cmd, "mount-bench") || !strcmp(cmd, "mount-bench-lazy")) && argc > 3) {
		int lazy = !strcmp(cmd, "mount-bench-lazy");
		int n = atoi(argv[2]);
		double *m = calloc(n, sizeof *m), *u = calloc(n, sizeof *u);
		for (int i = 0; i < n; i++) {
			double t0 = now_us();
			if (mount("t", argv[3], "tmpfs", 0, NULL)) return report("mount", -1);
			double t1 = now_us();
			if (umount2(argv[3], lazy ? MNT_DETACH : 0)) return report("umount", -1);
			m[i] = t1 - t0;
			u[i] = now_us() - t1;
		}
		percentiles("mount", m, n);
		percentiles("umount", u, n);
		return 0;
	}
	if (!strcmp(cmd, "getpid-bench")) {
		int n = atoi(argv[2]);
		double t0 = now_us();
		for (int i = 0; i < n; i++) syscall(SYS_getpid);
		printf("getpid mean_ns=%.1f\n", (now_us() - t0) * 1e3 / n);
		return 0;
	}
	if (!strcmp(cmd, "sysinfo-bench")) {
		int n = atoi(argv[2]);
		double *v = calloc(n, sizeof *v);
		struct sysinfo info;
		for (int i = 0; i < n; i++) {
			double t0 = now_us();
			if (sysinfo(&info)) return report("sysinfo", -1);
			v[i] = now_us() - t0;
		}
		percentiles("sysinfo", v, n);
		return 0;
	}
	if (!strcmp(cmd, "agent-child")) return agent_child(atof(argv[2]));
	if (!strcmp(cmd, "read-bench") && argc > 3) {
		int n = atoi(argv[2]);
		int gap_us = argc > 4 ? atoi(argv[4]) : 0;
		double *v = calloc(n, sizeof *v);
		char buf[65536];
		double start = now_us();
		for (int i = 0; i < n; i++) {
			if (gap_us) usleep(gap_us);
			double t0 = now_us();
			int fd = open(argv[3], O_RDONLY);
			if (fd < 0) return report("open", -1);
			while (read(fd, buf, sizeof buf) > 0) {}
			close(fd);
			v[i] = now_us() - t0;
		}
		double total = now_us() - start;
		percentiles(argv[3], v, n);
		if (!gap_us) printf("%s reads_per_s=%.0f\n", argv[3], n / (total / 1e6));
		return 0;
	}
	return 2;
}
