/* mimalloc: an allocation through mi_malloc works; the runtime version is the pinned one. */
#include "check.h"

#include <mimalloc.h>

int main(void)
{
    char *p = mi_malloc(4096);
    int ok = p != NULL;
    if (ok) {
        memset(p, 0xa5, 4096);
        ok = mi_usable_size(p) >= 4096 && (unsigned char)p[4095] == 0xa5;
        mi_free(p);
    }
    check(ok, "mimalloc mi_malloc", "4 KiB allocated, written, usable size checked, freed");

    char buf[32];
    int v = mi_version(); /* 3.x: major*10000 + minor*100 + patch; 1.x/2.x: major*100 + minor*10 + patch */
    if (v >= 10000)
        snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
    else
        snprintf(buf, sizeof buf, "%d.%d.%d", v / 100, (v / 10) % 10, v % 10);
    check_version("mimalloc", "EXPECT_MIMALLOC", buf);
    return finish();
}
