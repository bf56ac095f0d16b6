/* Shared library for tests/test_verify.py: a local array plus snprintf/memcpy. */
#include <stdio.h>
#include <string.h>

static char result[128];

const char *greet(const char *name)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, "hello, %s", name);
    memcpy(result, tmp, sizeof tmp);
    return result;
}
