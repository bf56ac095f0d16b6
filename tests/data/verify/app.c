/* Test program for tests/test_verify.py: has a stack buffer (needs a canary) and
 * calls fortifiable libc functions, and links against libgreet. */
#include <stdio.h>
#include <string.h>

const char *greet(const char *name);

int main(int argc, char **argv)
{
    char buf[64];
    strcpy(buf, argv[0]);
    printf("%s %d %s\n", buf, argc, greet(argc > 1 ? argv[1] : "world"));
    return 0;
}
