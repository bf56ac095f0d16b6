/* wolfSentry: load a two-rule JSON policy, then ask it about three peers.
 *
 * The policy accepts by default, penalty-boxes (blocks) inbound TCP from 192.0.2.66 and
 * green-lists 198.51.100.7. A dispatch for 192.0.2.66 must be rejected by that route, one for
 * 198.51.100.7 accepted by its route, and one for 192.0.2.67 (the blocked address's neighbour,
 * matched by no route) accepted by the default policy. (Protocol 6 = TCP, by number: the check
 * does not depend on /etc/protocols.) Also checks that the headers match the
 * library's build settings and the runtime version.
 */
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <wolfsentry/wolfsentry.h>
#include <wolfsentry/wolfsentry_json.h>

static const char policy[] =
    "{ \"wolfsentry-config-version\" : 1,"
    "  \"default-policies\" : { \"default-policy\" : \"accept\" },"
    "  \"static-routes-insert\" : ["
    "    { \"direction-in\" : true, \"penalty-boxed\" : true, \"family\" : \"inet\", \"protocol\" : 6,"
    "      \"remote\" : { \"address\" : \"192.0.2.66\", \"prefix-bits\" : 32 } },"
    "    { \"direction-in\" : true, \"green-listed\" : true, \"family\" : \"inet\", \"protocol\" : 6,"
    "      \"remote\" : { \"address\" : \"198.51.100.7\", \"prefix-bits\" : 32 } } ] }";

static const char *verdict(wolfsentry_action_res_t res)
{
    if (WOLFSENTRY_CHECK_BITS(res, WOLFSENTRY_ACTION_RES_REJECT))
        return "rejected";
    if (WOLFSENTRY_CHECK_BITS(res, WOLFSENTRY_ACTION_RES_ACCEPT))
        return "accepted";
    return "no decision";
}

/* "rejected"/"accepted", plus whether a route (not the default policy) decided */
static wolfsentry_errcode_t decide(WOLFSENTRY_CONTEXT_ARGS_IN, const char *remote_ip, wolfsentry_action_res_t *res,
                                   int *by_route)
{
    WOLFSENTRY_SOCKADDR(32) remote, local;
    wolfsentry_ent_id_t id = 0;
    wolfsentry_route_flags_t inexact = 0;
    memset(&remote, 0, sizeof remote);
    memset(&local, 0, sizeof local);
    remote.sa_family = local.sa_family = WOLFSENTRY_AF_INET;
    remote.sa_proto = local.sa_proto = IPPROTO_TCP;
    remote.sa_port = 40000;
    local.sa_port = 443;
    remote.addr_len = local.addr_len = 32;
    inet_pton(AF_INET, remote_ip, remote.addr);
    inet_pton(AF_INET, "203.0.113.1", local.addr);
    wolfsentry_errcode_t ret = wolfsentry_route_event_dispatch(
        WOLFSENTRY_CONTEXT_ARGS_OUT, (const struct wolfsentry_sockaddr *)&remote,
        (const struct wolfsentry_sockaddr *)&local, WOLFSENTRY_ROUTE_FLAG_DIRECTION_IN, NULL, 0, NULL, &id,
        &inexact, res);
    *by_route = !WOLFSENTRY_CHECK_BITS(*res, WOLFSENTRY_ACTION_RES_FALLTHROUGH);
    return ret;
}

int main(void)
{
    struct wolfsentry_context *wolfsentry = NULL;
    char err[256] = "";
    char detail[320]; /* room for the whole error text */
    wolfsentry_errcode_t ret;

    check(WOLFSENTRY_IS_SUCCESS(wolfsentry_build_settings_compatible(wolfsentry_build_settings)),
          "wolfSentry build", "headers match the library's build settings");

    WOLFSENTRY_THREAD_HEADER_DECLS
    if (WOLFSENTRY_THREAD_HEADER_INIT(WOLFSENTRY_THREAD_FLAG_NONE) < 0) {
        check(0, "wolfSentry init", "thread context");
        return finish();
    }
    ret = wolfsentry_init(wolfsentry_build_settings, WOLFSENTRY_CONTEXT_ARGS_OUT_EX(NULL), NULL, &wolfsentry);
    if (WOLFSENTRY_IS_SUCCESS(ret))
        snprintf(detail, sizeof detail, "context created");
    else
        snprintf(detail, sizeof detail, "wolfsentry_init: " WOLFSENTRY_ERROR_FMT, WOLFSENTRY_ERROR_FMT_ARGS(ret));
    check(WOLFSENTRY_IS_SUCCESS(ret), "wolfSentry init", detail);
    if (!WOLFSENTRY_IS_SUCCESS(ret))
        return finish();

    ret = wolfsentry_config_json_oneshot(WOLFSENTRY_CONTEXT_ARGS_OUT, (const unsigned char *)policy,
                                         strlen(policy), WOLFSENTRY_CONFIG_LOAD_FLAG_NONE, err, sizeof err);
    snprintf(detail, sizeof detail, "2 routes, default accept%s%s", *err ? ": " : "", err);
    check(WOLFSENTRY_IS_SUCCESS(ret), "wolfSentry JSON policy", detail);

    static const struct { const char *ip; int reject, by_route; const char *name; } peers[] = {
        {"192.0.2.66", 1, 1, "wolfSentry blocks"},
        {"198.51.100.7", 0, 1, "wolfSentry allows"},
        {"192.0.2.67", 0, 0, "wolfSentry default"},
    };
    for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) {
        wolfsentry_action_res_t res = WOLFSENTRY_ACTION_RES_NONE;
        int by_route = 0;
        ret = decide(WOLFSENTRY_CONTEXT_ARGS_OUT, peers[i].ip, &res, &by_route);
        int rejected = WOLFSENTRY_CHECK_BITS(res, WOLFSENTRY_ACTION_RES_REJECT);
        snprintf(detail, sizeof detail, "%s: %s by %s", peers[i].ip, verdict(res),
                 by_route ? "its route" : "the default policy");
        check(WOLFSENTRY_IS_SUCCESS(ret) && rejected == peers[i].reject && by_route == peers[i].by_route
              && (rejected || WOLFSENTRY_CHECK_BITS(res, WOLFSENTRY_ACTION_RES_ACCEPT)), peers[i].name, detail);
    }

    char version[32];
    snprintf(version, sizeof version, "%u.%u.%u", WOLFSENTRY_VERSION_MAJOR, WOLFSENTRY_VERSION_MINOR,
             WOLFSENTRY_VERSION_TINY);
    check_version("wolfSentry", "EXPECT_WOLFSENTRY", version);

    ret = wolfsentry_shutdown(WOLFSENTRY_CONTEXT_ARGS_OUT_EX(&wolfsentry));
    check(WOLFSENTRY_IS_SUCCESS(ret), "wolfSentry shutdown", "context freed");
    (void)WOLFSENTRY_THREAD_TAILER(WOLFSENTRY_THREAD_FLAG_NONE);
    return finish();
}
