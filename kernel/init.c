/* The initramfs's /init for the boot test: print a marker, load a module built by thindist,
 * report the result, and reboot, which makes qemu exit under -no-reboot (tinyconfig has no
 * ACPI, so powering off is not possible). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    printf("THINDIST-BOOT-OK: init is running\n");
    int fd = open("/crc7.ko", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("THINDIST-MODULE-FAIL: open /crc7.ko: %s\n", strerror(errno));
    } else if (syscall(SYS_finit_module, fd, "", 0) != 0) {
        printf("THINDIST-MODULE-FAIL: finit_module: %s\n", strerror(errno));
    } else {
        printf("THINDIST-MODULE-OK: crc7 loaded\n");
    }
    fflush(stdout);
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
