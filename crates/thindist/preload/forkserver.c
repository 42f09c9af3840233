/* thindist's compiler fork server, loaded into a compiler with LD_PRELOAD.
 *
 * It takes over __libc_start_main so that, once the compiler's static initialisation has run
 * (glibc runs the executable's constructors before calling main), main is this file's, not the
 * compiler's. That main serves jobs on the socket named by THINDIST_FORK_SERVER_FD: for each it
 * forks a child from this pristine idle state, and the child calls the compiler's own main with
 * the job's arguments, environment and directory. A job costs a fork instead of an exec, a
 * dynamic link of the compiler's libraries and their static constructors. A child serves one job
 * only: calling the compiler's main a second time in one process is not supported by LLVM (each
 * main installs its signal handlers again, and LLVM aborts at the ninth).
 *
 * One job at a time per server (thindist starts one server per job slot), so the protocol is a
 * plain request/reply and the server needs no signal handling:
 *   server -> thindist, once:  "TDFS", u32 length, /proc/self/exe (which program this is)
 *   thindist -> server:        u32 payload length, u32 argc, u32 envc with two fds attached
 *                              (SCM_RIGHTS: the job's stdout and stderr), then the payload:
 *                              cwd, argv[0..argc], env[0..envc], each NUL-terminated
 *   server -> thindist:        i32 pid of the child (or -errno when fork failed)
 *   server -> thindist:        i32 wait status of the child
 * Integers are in the machine's byte order: both ends run on the same machine.
 * Without THINDIST_FORK_SERVER_FD the compiler runs as if nothing was loaded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
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

/* Reads the 12-byte job header and the two fds sent with it. */
static int read_header(int sock, uint32_t header[3], int fds[2]) {
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = {header, 3 * sizeof(uint32_t)};
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
    return read_all(sock, (char *)header + n, 3 * sizeof(uint32_t) - (size_t)n);
}

/* The forked child: becomes the job's compiler process. Never returns. */
static void run_job(int sock, int fds[2], char *payload, uint32_t len, uint32_t argc,
                    uint32_t envc) {
    close(sock);
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(fds[0], 1) < 0 || dup2(fds[1], 2) < 0)
        _exit(127);
    close(null);
    close(fds[0]);
    close(fds[1]);
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    char **envp = calloc((size_t)envc + 1, sizeof *envp);
    if (!argv || !envp)
        _exit(127);
    char *p = payload, *end = payload + len;
    const char *cwd = p;
    p += strlen(p) + 1;
    for (uint32_t i = 0; i < argc + envc; i++) {
        if (p >= end)
            _exit(127);
        if (i < argc)
            argv[i] = p;
        else
            envp[i - argc] = p;
        p += strlen(p) + 1;
    }
    show_job(argv, argc);
    if (chdir(cwd) != 0) {
        dprintf(2, "thindist fork server: cannot enter %s: %s\n", cwd, strerror(errno));
        _exit(127);
    }
    environ = envp;
    /* exit, not _exit: the compiler's atexit handlers and destructors run as in a process (and
     * skipping them saved no measurable time on real back ends: bench/README.md). */
    exit(compiler_main((int)argc, argv, envp));
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
 * between its 16th and 17th job: a link of a few modules never pays for it. */
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
    if (write_all(sock, "TDFS", 4) || write_all(sock, &exe_len, 4) || write_all(sock, exe, exe_len))
        _exit(1);
    unsigned jobs_served = 0;
    for (;;) {
        uint32_t header[3];
        int fds[2];
        if (read_header(sock, header, fds) != 0)
            _exit(0); /* thindist is gone or done */
        char *payload = malloc(header[0] + 1);
        if (!payload || read_all(sock, payload, header[0]) != 0)
            _exit(1);
        payload[header[0]] = 0;
        pid_t pid = fork();
        if (pid == 0)
            run_job(sock, fds, payload, header[0], header[1], header[2]);
        int32_t reply = pid < 0 ? -errno : pid;
        close(fds[0]);
        close(fds[1]);
        free(payload);
        if (write_all(sock, &reply, 4) != 0)
            _exit(1);
        if (pid < 0)
            continue;
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR)
                _exit(1);
        int32_t wait_status = status;
        if (write_all(sock, &wait_status, 4) != 0)
            _exit(1);
        if (++jobs_served == MOVE_CODE_AFTER_JOBS)
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
