/* Shared library for tests/test_verify.py: no arrays, no libc calls, so neither a
 * canary nor FORTIFY has anything to do. */
int add(int a, int b)
{
    return a + b;
}
