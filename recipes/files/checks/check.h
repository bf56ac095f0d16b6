/* check.h: the one output format of every quick-validate check program.
 *
 * A check program (checks/<library>.c) prints one line per check, "PASS  <name>  <detail>"
 * or "FAIL  ...", and exits with finish(): 0 only if every check passed. quick-validate
 * compiles it against the pkg-config modules of <library> (plus those of the libraries named
 * on a "needs:" line in its leading comment) and runs it with EXPECT_<LIBRARY>=<version>
 * set from the image's versions file.
 */
#ifndef QUICK_VALIDATE_CHECK_H
#define QUICK_VALIDATE_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;

static void check(int ok, const char *name, const char *detail)
{
    printf("%s  %-22s %s\n", ok ? "PASS" : "FAIL", name, detail);
    if (!ok)
        check_failures++;
}

/* lib's version as the library reports it at run time, against $env (set by quick-validate) */
static void check_version(const char *lib, const char *env, const char *actual)
{
    const char *want = getenv(env);
    char detail[160];
    char name[32];
    snprintf(name, sizeof name, "%s version", lib);
    if (!want || !*want) {
        snprintf(detail, sizeof detail, "%s (no expected version: %s is not set)", actual, env);
        check(0, name, detail);
        return;
    }
    snprintf(detail, sizeof detail, "%s (expected %s)", actual, want);
    check(strcmp(actual, want) == 0, name, detail);
}

static int finish(void)
{
    fflush(stdout);
    return check_failures ? 1 : 0;
}

#endif
