/* libuv: a 10 ms timer fires once on the default loop; runtime version. */
#include "check.h"

#include <uv.h>

static int timer_fired;

static void on_timer(uv_timer_t *t)
{
    timer_fired++;
    uv_close((uv_handle_t *)t, NULL);
}

int main(void)
{
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t timer;
    uint64_t start = uv_now(loop);
    uv_timer_init(loop, &timer);
    uv_timer_start(&timer, on_timer, 10, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_update_time(loop);
    char detail[80];
    snprintf(detail, sizeof detail, "10 ms timer fired %d time(s) after %llu ms", timer_fired,
             (unsigned long long)(uv_now(loop) - start));
    check(timer_fired == 1, "libuv timer", detail);
    uv_loop_close(loop);
    check_version("libuv", "EXPECT_LIBUV", uv_version_string());
    return finish();
}
