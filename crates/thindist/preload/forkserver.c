/* thindist's compiler fork server, loaded into a compiler with LD_PRELOAD.
 *
 * It takes over __libc_start_main so that, once the compiler's static initialisation has run
 * (glibc runs the executable's constructors before calling main), main is this file's, not the
 * compiler's. That main serves jobs on the socket named by THINDIST_FORK_SERVER_FD, in one of
 * two ways:
 *
 * - A driver job: the server forks a child from its pristine idle state, and the child calls
 *   the compiler's own main with the job's arguments, environment and directory. A job costs a
 *   fork instead of an exec, a dynamic link of the compiler's libraries and their static
 *   constructors. Such a child serves one job only: calling the compiler's main a second time
 *   in one process is not supported by LLVM (each main installs its signal handlers again, and
 *   LLVM aborts at the ninth).
 * - A cc1 job (clang only: its executable exports cc1_main): the job's `-cc1` command, which
 *   thindist derived from the driver's `-###`, runs in a cc1 worker, a child that calls
 *   cc1_main for job after job with the same flags (the job's key), as lld runs its back ends
 *   one after another in one process. Its heap is warm and it pays no fork, page faults of a
 *   new address space or exit per job. LLVM's options (-mllvm) are reset to their defaults
 *   before each job; a worker still runs jobs of one key only (a server keeps a worker for
 *   each of up to MAX_WORKERS keys), so that no other process-wide state a flag set may leave
 *   reaches another.
 *
 * One job at a time per server (thindist has one server per job slot), so the protocol is a
 * plain request/reply and the server needs no signal handling:
 *   server -> thindist, once:  "TDFS", u32 length, /proc/self/exe (which program this is),
 *                              u32 features (bit 0: cc1 jobs can run)
 *   thindist -> server:        u32 header[5] = payload length, argc, envc, kind (0 driver
 *                              job, 1 cc1 job, 2 fork a server), shown argc; with two fds
 *                              attached (SCM_RIGHTS: the job's stdout and stderr); then the
 *                              payload: key, cwd, argv[0..argc], env[0..envc],
 *                              shown[0..shown argc], each NUL-terminated (shown: the command
 *                              ps shows, for a cc1 job)
 *   server -> thindist:        i32 pid of the child or worker (or -errno when none started)
 *   server -> thindist:        i32 wait status of the job, i32 1 if a cc1 worker died in it
 *                              (the status is then the worker's) else 0; a driver job that
 *                              calls _exit (lld does) is answered as it calls it, before its
 *                              process is torn down, and reaped after the answer
 * A fork-server request (no payload; the first fd is the new server's socket) forks a second
 * server from this one, which greets thindist on that socket as this one did; its status is 0.
 * thindist asks for one while this server is new and idle, for each further job slot, instead
 * of starting the compiler again.
 * Integers are in the machine's byte order: both ends run on the same machine.
 * Without THINDIST_FORK_SERVER_FD the compiler runs as if nothing was loaded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*main_fn)(int, char **, char **);
static main_fn compiler_main;
extern char **environ;

/* The server's own argument strings, which /proc/PID/cmdline shows: thindist starts it with a
 * long blank argument so that each child can show its job's command there instead, for ps,
 * pgrep -f and anyone who looks for a compile by its arguments. */
static char *cmdline_area;
static size_t cmdline_size;

static void show_job(char **argv, uint32_t argc) {
    size_t used = 0;
    memset(cmdline_area, 0, cmdline_size);
    for (uint32_t i = 0; i < argc && used + 1 < cmdline_size; i++) {
        size_t len = strlen(argv[i]);
        if (len > cmdline_size - 1 - used)
            len = cmdline_size - 1 - used;
        memcpy(cmdline_area + used, argv[i], len);
        used += len + 1;
    }
    /* The name a process of this command would have (from the program it executed). */
    const char *slash = strrchr(argv[0], '/');
    prctl(PR_SET_NAME, slash ? slash + 1 : argv[0], 0, 0, 0);
}

/* Sends, never raising SIGPIPE: a peer that died is an error here, not the server's death. */
static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *data, size_t len) {
    char *p = data;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

enum { HEADER_WORDS = 5, KIND_DRIVER = 0, KIND_CC1 = 1, KIND_FORK_SERVER = 2 };

/* Reads a job's header and the two fds sent with it. */
static int read_header(int sock, uint32_t header[HEADER_WORDS], int fds[2]) {
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = {header, HEADER_WORDS * sizeof(uint32_t)};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(2 * sizeof(int)))
        return -1;
    memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
    /* The fds come with the first byte; a short read leaves the rest in the stream. */
    return read_all(sock, (char *)header + n, HEADER_WORDS * sizeof(uint32_t) - (size_t)n);
}

/* Sends a job's header with its two fds attached, as read_header reads it. */
static int send_header(int sock, const uint32_t header[HEADER_WORDS], const int fds[2]) {
    char control[CMSG_SPACE(2 * sizeof(int))] = {0};
    struct iovec iov = {(void *)header, HEADER_WORDS * sizeof(uint32_t)};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    memcpy(CMSG_DATA(c), fds, 2 * sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    return write_all(sock, (const char *)header + n, HEADER_WORDS * sizeof(uint32_t) - (size_t)n);
}

/* A job as the payload gives it; the strings point into the payload. */
struct job {
    const char *key, *cwd;
    char **argv, **envp, **shown;
    uint32_t argc, shown_argc;
};

/* Splits a payload into a job; -1 if it is malformed. */
static int parse_job(char *payload, uint32_t len, const uint32_t header[HEADER_WORDS],
                     struct job *job) {
    uint32_t argc = header[1], envc = header[2], shown_argc = header[4];
    job->argc = argc;
    job->shown_argc = shown_argc;
    job->argv = calloc((size_t)argc + 1, sizeof(char *));
    job->envp = calloc((size_t)envc + 1, sizeof(char *));
    job->shown = calloc((size_t)shown_argc + 1, sizeof(char *));
    if (!job->argv || !job->envp || !job->shown)
        return -1;
    char *p = payload, *end = payload + len;
    uint64_t strings = 2 + (uint64_t)argc + envc + shown_argc;
    for (uint64_t i = 0; i < strings; i++) {
        if (p >= end)
            return -1;
        if (i == 0)
            job->key = p;
        else if (i == 1)
            job->cwd = p;
        else if (i < 2 + (uint64_t)argc)
            job->argv[i - 2] = p;
        else if (i < 2 + (uint64_t)argc + envc)
            job->envp[i - 2 - argc] = p;
        else
            job->shown[i - 2 - argc - envc] = p;
        p += strlen(p) + 1;
    }
    return argc > 0 ? 0 : -1;
}

static void free_job(struct job *job) {
    free(job->argv);
    free(job->envp);
    free(job->shown);
}

/* The server's cc1 workers, each running the jobs of one key. A worker stays when a job of
 * another key comes, so that jobs of a few flag sets taking turns (a module with flags of its
 * own among a directory's) each find theirs warm, rather than a worker being stopped (waiting
 * for its memory to be torn down) and a cold one started at every turn. With more keys than
 * places, the worker used longest ago makes way. */
#define MAX_WORKERS 4
struct worker {
    pid_t pid; /* 0: a free place */
    int sock;
    char *key;
    unsigned long last_used;
};
static struct worker workers[MAX_WORKERS];
/* The worker running the job the server waits for. */
static struct worker *busy_worker;
static unsigned long jobs_passed;

/* Closes, in a child that is not to talk to them, the sockets of the server's workers. */
static void close_worker_sockets(void) {
    for (int i = 0; i < MAX_WORKERS; i++)
        if (workers[i].pid > 0)
            close(workers[i].sock);
}

/* A driver job's child tells the server its exit code as it calls _exit, before the kernel
 * tears its address space down: lld ends so, and a kernel's thin link takes 3-5 ms to be torn
 * down, which thindist need not wait for. Only the job's own process reports (not a process it
 * forks), once; a job that returns from main or dies of a signal is waited for as before. */
static int exit_report_fd = -1;
static pid_t job_pid;

static void report_exit(int status) {
    if (exit_report_fd < 0 || getpid() != job_pid)
        return;
    int32_t code = status & 0xff;
    ssize_t n;
    do
        n = write(exit_report_fd, &code, sizeof code);
    while (n < 0 && errno == EINTR);
    exit_report_fd = -1;
}

/* What the job's process has written is all it writes: _exit flushes nothing, and a program
 * that calls it while another of its threads still writes would lose that output anyway (lld's
 * threads are done by then). */
__attribute__((noreturn)) void _exit(int status) {
    report_exit(status);
    for (;;)
        syscall(SYS_exit_group, status);
}

__attribute__((noreturn)) void _Exit(int status) {
    _exit(status);
}

/* The wait status of driver job `pid`, whose exit report comes on `report_fd` (closed here;
 * -1: none): the code it reported, the child then left in *exiting for the caller to reap,
 * else what waitpid gives once it has ended. */
static int32_t driver_status(pid_t pid, int report_fd, pid_t *exiting) {
    if (report_fd >= 0) {
        /* The child's end, not the pipe's: a process it forked may hold the pipe open. */
#ifdef SYS_pidfd_open
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
        int pidfd = -1;
#endif
        int32_t code = 0;
        int reported = 0;
        if (pidfd >= 0) {
            struct pollfd ends[2] = {{report_fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
            while (poll(ends, 2, -1) < 0 && errno == EINTR)
                ;
            reported = (ends[0].revents & POLLIN) && read_all(report_fd, &code, sizeof code) == 0;
            close(pidfd);
        }
        close(report_fd);
        if (reported) {
            *exiting = pid;
            return (code & 0xff) << 8;
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            _exit(1);
    return status;
}

/* The forked child: becomes the job's compiler process. Never returns. */
static void run_driver_job(int sock, int fds[2], struct job *job) {
    close(sock);
    close_worker_sockets();
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(fds[0], 1) < 0 || dup2(fds[1], 2) < 0)
        _exit(127);
    close(null);
    close(fds[0]);
    close(fds[1]);
    show_job(job->argv, job->argc);
    if (chdir(job->cwd) != 0) {
        dprintf(2, "thindist fork server: cannot enter %s: %s\n", job->cwd, strerror(errno));
        _exit(127);
    }
    environ = job->envp;
    /* exit, not _exit: the compiler's atexit handlers and destructors run as in a process (and
     * skipping them saved no measurable time on real back ends: bench/README.md). */
    exit(compiler_main((int)job->argc, job->argv, job->envp));
}

static int serve(int sock);

/* Servers forked from this one, which it waits for when it ends. */
static unsigned forked_servers;

/* The forked child of a fork-server request: a second server in this one's warm state (its
 * libraries linked and their constructors run), serving the socket sent with the request, with
 * no worker yet. Never returns. */
static void run_forked_server(int sock, int fds[2]) {
    close(sock);
    close(fds[1]);
    close_worker_sockets();
    memset(workers, 0, sizeof workers);
    busy_worker = NULL;
    forked_servers = 0;
    _exit(serve(fds[0]));
}

/* Waits for the servers forked from this one, which end as this one does (thindist closes every
 * server's socket before it waits for any), so that their CPU time counts as this server's; for
 * a second at most. */
static void wait_forked_servers(void) {
    for (int waited_ms = 0; forked_servers > 0 && waited_ms < 1000;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0) {
            forked_servers--;
        } else if (pid < 0 && errno != EINTR) {
            return;
        } else if (pid == 0) {
            usleep(1000);
            waited_ms++;
        }
    }
}

/* clang's cc1 entry point and LLVM's reset of option occurrences, where the compiler exports
 * them (clang's executable exports its symbols for plugins). llvm::ArrayRef<const char *> is a
 * pointer and a length, passed as this struct is. */
struct arg_list {
    const char *const *data;
    size_t len;
};
typedef int (*cc1_main_fn)(struct arg_list, const char *, void *);
static cc1_main_fn cc1_main;
static void (*reset_option_occurrences)(void);

static void find_cc1(void) {
    cc1_main = (cc1_main_fn)dlsym(RTLD_DEFAULT, "_Z8cc1_mainN4llvm8ArrayRefIPKcEES2_Pv");
    reset_option_occurrences =
        (void (*)(void))dlsym(RTLD_DEFAULT, "_ZN4llvm2cl25ResetAllOptionOccurrencesEv");
    if (!reset_option_occurrences)
        cc1_main = NULL;
}

/* A cc1 worker: runs the cc1 jobs the server passes on until the server closes its socket.
 * Replies each job's exit code. Never returns. */
static void cc1_worker(int sock) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0)
        _exit(127);
    char *previous_payload = NULL;
    struct job previous = {0};
    for (;;) {
        uint32_t header[HEADER_WORDS];
        int fds[2];
        if (read_header(sock, header, fds) != 0)
            _exit(0);
        char *payload = malloc(header[0] + 1);
        struct job job = {0};
        if (!payload || read_all(sock, payload, header[0]) != 0)
            _exit(127);
        payload[header[0]] = 0;
        if (parse_job(payload, header[0], header, &job) != 0 || job.argc < 2)
            _exit(127);
        if (dup2(fds[0], 1) < 0 || dup2(fds[1], 2) < 0)
            _exit(127);
        close(fds[0]);
        close(fds[1]);
        if (job.shown_argc > 0)
            show_job(job.shown, job.shown_argc);
        else
            show_job(job.argv, job.argc);
        int32_t code = 127;
        int entered = chdir(job.cwd) == 0;
        if (!entered) {
            dprintf(2, "thindist fork server: cannot enter %s: %s\n", job.cwd, strerror(errno));
        } else {
            /* The environment stays the job's until the next job's replaces it. */
            environ = job.envp;
            free_job(&previous);
            free(previous_payload);
            previous = job;
            previous_payload = payload;
            /* Occurrences and values: the options the last job set are at their defaults. */
            reset_option_occurrences();
            /* As clang's driver calls it for an in-process cc1: arguments from "-cc1" on. */
            struct arg_list args = {(const char *const *)job.argv + 1, job.argc - 1};
            code = cc1_main(args, job.argv[0], (void *)compiler_main);
        }
        fflush(stdout);
        fflush(stderr);
        /* The job's output files are closed here: thindist reads them once it has the reply. */
        if (dup2(null, 1) < 0 || dup2(null, 2) < 0 || write_all(sock, &code, 4) != 0)
            _exit(127);
        if (!entered) {
            free_job(&job);
            free(payload);
        }
    }
}

/* Stops a worker: closing its socket ends its loop; a worker that hangs is killed. */
static void stop_worker(struct worker *w) {
    if (w->pid <= 0)
        return;
    close(w->sock);
    kill(w->pid, SIGKILL);
    while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    free(w->key);
    memset(w, 0, sizeof *w);
}

static void stop_workers(void) {
    for (int i = 0; i < MAX_WORKERS; i++)
        stop_worker(&workers[i]);
}

/* Starts a worker for `key` in place `w` (free). */
static int start_worker(int sock, struct worker *w, const char *key) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pair[0]);
        close(pair[1]);
        return -e;
    }
    if (pid == 0) {
        close(sock);
        close_worker_sockets();
        close(pair[0]);
        cc1_worker(pair[1]);
    }
    close(pair[1]);
    w->pid = pid;
    w->sock = pair[0];
    w->key = strdup(key);
    return 0;
}

/* The worker for `key`, if the server has one, else a place for one: a free place, or the
 * place of the worker used longest ago, stopped. */
static struct worker *worker_for(const char *key) {
    struct worker *place = NULL;
    for (int i = 0; i < MAX_WORKERS; i++) {
        struct worker *w = &workers[i];
        if (w->pid > 0 && strcmp(w->key, key) == 0)
            return w;
        if (!place || (place->pid > 0 && (w->pid <= 0 || w->last_used < place->last_used)))
            place = w;
    }
    stop_worker(place);
    return place;
}

/* Passes a cc1 job to the worker for its key (started as needed). Returns the worker's pid,
 * or -errno when no worker could take the job. */
static int32_t pass_to_worker(int sock, const uint32_t header[HEADER_WORDS], int fds[2],
                              const char *payload, const char *key) {
    struct worker *w = worker_for(key);
    /* A worker may have died idle (killed by someone): then one new worker is tried. */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (w->pid <= 0) {
            int error = start_worker(sock, w, key);
            if (error < 0)
                return error;
        }
        if (send_header(w->sock, header, fds) == 0 && write_all(w->sock, payload, header[0]) == 0) {
            w->last_used = ++jobs_passed;
            busy_worker = w;
            return w->pid;
        }
        stop_worker(w);
    }
    return -EPIPE;
}

/* The busy worker's reply to the job passed to it: its exit code as a wait status, or the
 * worker's own wait status if it died, with *died set. */
static int32_t worker_reply(int *died) {
    struct worker *w = busy_worker;
    busy_worker = NULL;
    int32_t code;
    if (read_all(w->sock, &code, 4) == 0) {
        *died = 0;
        return (code & 0xff) << 8;
    }
    int status = 0;
    close(w->sock);
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
        ;
    free(w->key);
    memset(w, 0, sizeof *w);
    *died = 1;
    return status;
}

/* Whether the memory at [start, start + len) is mostly backed by transparent huge pages. */
static int mostly_huge(unsigned long start, unsigned long len) {
    FILE *smaps = fopen("/proc/self/smaps", "re");
    char line[512];
    int in_range = 0;
    unsigned long huge_kib = 0;
    while (smaps && fgets(line, sizeof line, smaps)) {
        unsigned long from, to;
        if (sscanf(line, "%lx-%lx ", &from, &to) == 2)
            in_range = from >= start && to <= start + len;
        else if (in_range)
            sscanf(line, "AnonHugePages: %lu kB", &huge_kib);
    }
    if (smaps)
        fclose(smaps);
    return huge_kib * 1024 >= len / 2;
}

/* Moving the code (below) costs about as much CPU as ten jobs then save, so a server does it
 * between its 16th and 17th forked driver: a link of a few modules never pays for it, nor one
 * whose jobs run in a cc1 worker (forked once). */
#define MOVE_CODE_AFTER_JOBS 16

/* A job's child starts with no page table entries for the compiler's code: fork copies them
 * only for anonymous memory, so every job faults in again the code it runs, 16 pages at a
 * time (some 800 faults, a sixth of a small job's CPU time). So the server copies the 2 MiB
 * aligned middle of its largest code mapping (libLLVM's: the back end runs there, not in
 * libclang-cpp's front end) into anonymous huge pages and moves the copy over the original:
 * the same bytes at the same addresses, shared with each child through a few dozen page table
 * entries, and fewer TLB misses. Where huge pages are not to be had the mapping stays as it
 * was (in 4 KiB anonymous pages every fork would copy thousands of entries). */
static void code_to_huge_pages(void) {
    const unsigned long huge = 2UL << 20;
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps)
        return;
    unsigned long from = 0, len = 0;
    char line[4096];
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end, inode;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s %*s %*s %lu", &start, &end, perms, &inode) != 4 ||
            inode == 0 || strcmp(perms, "r-xp") != 0)
            continue;
        unsigned long aligned_start = (start + huge - 1) & ~(huge - 1), aligned_end = end & ~(huge - 1);
        if (aligned_end > aligned_start && aligned_end - aligned_start > len) {
            from = aligned_start;
            len = aligned_end - aligned_start;
        }
    }
    fclose(maps);
    if (len < 8 * huge)
        return;
    char *area = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        return;
    char *copy = (char *)(((unsigned long)area + huge - 1) & ~(huge - 1));
    if (copy > area)
        munmap(area, (size_t)(copy - area));
    if (copy + len < area + len + huge)
        munmap(copy + len, (size_t)(area + len + huge - (copy + len)));
    if (madvise(copy, len, MADV_HUGEPAGE) != 0) {
        munmap(copy, len);
        return;
    }
    memcpy(copy, (void *)from, len);
    if (!mostly_huge((unsigned long)copy, len) || mprotect(copy, len, PROT_READ | PROT_EXEC) != 0 ||
        mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)from) == MAP_FAILED)
        munmap(copy, len);
}

static int serve(int sock) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe);
    if (n < 0)
        n = 0;
    uint32_t exe_len = (uint32_t)n;
    find_cc1();
    uint32_t features = cc1_main ? 1 : 0;
    if (write_all(sock, "TDFS", 4) || write_all(sock, &exe_len, 4) ||
        write_all(sock, exe, exe_len) || write_all(sock, &features, 4))
        _exit(1);
    unsigned driver_jobs_served = 0;
    pid_t exiting = 0;
    for (;;) {
        uint32_t header[HEADER_WORDS];
        int fds[2];
        if (read_header(sock, header, fds) != 0) {
            /* thindist is gone or done. The workers are waited for, so that their CPU time
             * counts as the server's, and the server's as thindist's once it waits. */
            stop_workers();
            wait_forked_servers();
            _exit(0);
        }
        char *payload = malloc(header[0] + 1);
        if (!payload || read_all(sock, payload, header[0]) != 0)
            _exit(1);
        payload[header[0]] = 0;
        struct job job = {0};
        int32_t reply;
        int report[2] = {-1, -1};
        int cc1_job = header[3] == KIND_CC1 && cc1_main;
        int fork_server = header[3] == KIND_FORK_SERVER;
        if (fork_server) {
            reply = fork();
            if (reply == 0)
                run_forked_server(sock, fds);
            if (reply < 0)
                reply = -errno;
            else
                forked_servers++;
        } else if (parse_job(payload, header[0], header, &job) != 0)
            reply = -EINVAL;
        else if (cc1_job)
            reply = pass_to_worker(sock, header, fds, payload, job.key);
        else {
            if (pipe2(report, O_CLOEXEC) != 0)
                report[0] = report[1] = -1;
            reply = fork();
            if (reply == 0) {
                if (report[0] >= 0) {
                    close(report[0]);
                    exit_report_fd = report[1];
                    job_pid = getpid();
                }
                run_driver_job(sock, fds, &job);
            }
            if (reply < 0)
                reply = -errno;
            if (report[1] >= 0)
                close(report[1]);
            if (reply < 0 && report[0] >= 0)
                close(report[0]);
        }
        close(fds[0]);
        close(fds[1]);
        free_job(&job);
        free(payload);
        if (write_all(sock, &reply, 4) != 0)
            _exit(1);
        if (reply < 0)
            continue;
        int32_t result[2] = {0, 0};
        if (cc1_job) {
            int died;
            result[0] = worker_reply(&died);
            result[1] = died;
        } else if (!fork_server) {
            result[0] = driver_status(reply, report[0], &exiting);
        }
        if (write_all(sock, result, sizeof result) != 0)
            _exit(1);
        /* A child that reported its exit is reaped while thindist goes on. */
        if (exiting > 0) {
            while (waitpid(exiting, NULL, 0) < 0 && errno == EINTR)
                ;
            exiting = 0;
        }
        if (!cc1_job && !fork_server && ++driver_jobs_served == MOVE_CODE_AFTER_JOBS)
            code_to_huge_pages();
    }
}

static int fork_server_main(int argc, char **argv, char **envp) {
    const char *fd = getenv("THINDIST_FORK_SERVER_FD");
    if (!fd)
        return compiler_main(argc, argv, envp);
    int sock = atoi(fd);
    cmdline_area = argv[0];
    cmdline_size = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
    /* thindist passes this library as fd 4 (LD_PRELOAD=/proc/self/fd/4): mapped now, and no job
     * may inherit it. */
    close(4);
    /* Jobs bring their own environment; nothing the compiler starts should load this. */
    unsetenv("THINDIST_FORK_SERVER_FD");
    unsetenv("LD_PRELOAD");
    return serve(sock);
}

int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                      void (*fini)(void), void (*rtld_fini)(void), void *stack_end) {
    typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void),
                            void (*)(void), void *);
    start_fn real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    if (!real)
        abort();
    compiler_main = main;
    return real(fork_server_main, argc, argv, init, fini, rtld_fini, stack_end);
}
