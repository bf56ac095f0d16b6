#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "calc.h"

static void test_add(void **state)
{
    (void)state;
    assert_int_equal(calc_add(2, 3), 5);
}

static void test_clamp(void **state)
{
    (void)state;
    assert_int_equal(calc_clamp(-5, 0, 10), 0);
    assert_int_equal(calc_clamp(50, 0, 10), 10);
    assert_int_equal(calc_clamp(7, 0, 10), 7);
}

static void test_sign(void **state)
{
    (void)state;
    assert_string_equal(calc_sign(-1), "negative");
    assert_string_equal(calc_sign(0), "zero");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_clamp),
        cmocka_unit_test(test_sign),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
