/* quick-validate: link and exercise the five ocserv-modern libraries, check their versions.
 *
 * Checks (one PASS/FAIL line each, then an overall verdict; exit 0 only if all pass):
 *   mimalloc  mi_malloc/mi_free work; cJSON allocates through mimalloc hooks
 *   llhttp    parse an HTTP/1.1 request (method, URL, headers, body)
 *   cJSON     turn the parsed request into a JSON document and print it back
 *   wolfSSL   SHA-256 of "abc" matches the FIPS 180-2 vector; a TLS 1.3 client context is created
 *   libuv     a 10 ms timer fires on the default loop
 *   versions  each library's version (runtime call where the library has one, the installed
 *             header for llhttp, which has no runtime call) equals the expected version, read
 *             from the environment: EXPECT_WOLFSSL, EXPECT_LIBUV, EXPECT_LLHTTP, EXPECT_CJSON,
 *             EXPECT_MIMALLOC (the quick-validate script sets them from the versions file).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/version.h>
#include <uv.h>
#include <llhttp.h>
#include <cjson/cJSON.h>
#include <mimalloc.h>

static int failures;
static size_t mi_allocs;

static void check(int ok, const char *name, const char *detail)
{
    printf("%s  %-22s %s\n", ok ? "PASS" : "FAIL", name, detail);
    if (!ok)
        failures++;
}

/* --- cJSON through mimalloc ------------------------------------------------ */
static void *counting_malloc(size_t n)
{
    mi_allocs++;
    return mi_malloc(n);
}

/* --- llhttp → cJSON ------------------------------------------------------- */
struct request {
    cJSON *doc;
    cJSON *headers;
    char field[128];
    char url[256];
    char body[256];
    int complete;
};

static void append(char *dst, size_t cap, const char *at, size_t len)
{
    size_t have = strlen(dst);
    if (have + len >= cap)
        len = cap - have - 1;
    memcpy(dst + have, at, len);
    dst[have + len] = '\0';
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct request *r = p->data;
    append(r->url, sizeof r->url, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct request *r = p->data;
    append(r->field, sizeof r->field, at, len);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct request *r = p->data;
    char value[256];
    snprintf(value, sizeof value, "%.*s", (int)len, at);
    cJSON_AddStringToObject(r->headers, r->field, value);
    r->field[0] = '\0';
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct request *r = p->data;
    append(r->body, sizeof r->body, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct request *r = p->data;
    cJSON_AddStringToObject(r->doc, "method", llhttp_method_name((llhttp_method_t)llhttp_get_method(p)));
    cJSON_AddStringToObject(r->doc, "url", r->url);
    cJSON_AddStringToObject(r->doc, "body", r->body);
    r->complete = 1;
    return 0;
}

static void check_http_json(void)
{
    static const char req[] =
        "POST /auth?group=vpn HTTP/1.1\r\n"
        "Host: vpn.example.org\r\n"
        "X-Aggregate-Auth: 1\r\n"
        "Content-Length: 7\r\n"
        "\r\n"
        "user=me";
    static const char want[] =
        "{\"headers\":{\"Host\":\"vpn.example.org\",\"X-Aggregate-Auth\":\"1\",\"Content-Length\":\"7\"},"
        "\"method\":\"POST\",\"url\":\"/auth?group=vpn\",\"body\":\"user=me\"}";
    llhttp_t parser;
    llhttp_settings_t settings;
    struct request r;
    char detail[160];

    memset(&r, 0, sizeof r);
    r.doc = cJSON_CreateObject();
    r.headers = cJSON_AddObjectToObject(r.doc, "headers");
    llhttp_settings_init(&settings);
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    parser.data = &r;
    llhttp_errno_t err = llhttp_execute(&parser, req, sizeof req - 1);
    snprintf(detail, sizeof detail, "%s, %s", llhttp_errno_name(err), r.complete ? "message complete" : "incomplete");
    check(err == HPE_OK && r.complete, "llhttp parse request", detail);

    char *json = cJSON_PrintUnformatted(r.doc);
    int same = json && strcmp(json, want) == 0;
    check(same, "cJSON document", json ? json : "(print failed)");
    cJSON *back = json ? cJSON_Parse(json) : NULL;
    cJSON *host = back ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(back, "headers"), "Host") : NULL;
    check(cJSON_IsString(host) && strcmp(host->valuestring, "vpn.example.org") == 0, "cJSON round trip",
          "parse(print(doc)).headers.Host");
    cJSON_Delete(back);
    cJSON_free(json);
    cJSON_Delete(r.doc);
}

/* --- wolfSSL ----------------------------------------------------------------- */
static void check_wolfssl(void)
{
    static const unsigned char want[WC_SHA256_DIGEST_SIZE] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    unsigned char hash[WC_SHA256_DIGEST_SIZE];
    char hex[2 * WC_SHA256_DIGEST_SIZE + 1];

    int rc = wc_Sha256Hash((const unsigned char *)"abc", 3, hash);
    for (int i = 0; i < WC_SHA256_DIGEST_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    check(rc == 0 && memcmp(hash, want, sizeof want) == 0, "wolfSSL SHA-256", hex);

    check(wolfSSL_Init() == WOLFSSL_SUCCESS, "wolfSSL init", "wolfSSL_Init");
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
    int v13 = 0;
    if (ctx) {
        WOLFSSL *ssl = wolfSSL_new(ctx);
        if (ssl) {
            v13 = wolfSSL_SetVersion(ssl, WOLFSSL_TLSV1_3) == WOLFSSL_SUCCESS;
            wolfSSL_free(ssl);
        }
    }
    check(ctx != NULL && v13, "wolfSSL TLS 1.3 context", ctx ? "client CTX + SSL object at TLS 1.3" : "CTX_new failed");
    if (ctx)
        wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
}

/* --- libuv ------------------------------------------------------------------- */
static int timer_fired;

static void on_timer(uv_timer_t *t)
{
    timer_fired++;
    uv_close((uv_handle_t *)t, NULL);
}

static void check_libuv(void)
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
}

/* --- mimalloc ---------------------------------------------------------------- */
static void check_mimalloc(void)
{
    char *p = mi_malloc(4096);
    int ok = p != NULL;
    if (ok) {
        memset(p, 0xa5, 4096);
        ok = mi_usable_size(p) >= 4096 && (unsigned char)p[4095] == 0xa5;
        mi_free(p);
    }
    check(ok, "mimalloc mi_malloc", "4 KiB allocated, written, usable size checked, freed");
}

/* --- versions ---------------------------------------------------------------- */
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

static void check_versions(void)
{
    char buf[32];
    check_version("wolfSSL", "EXPECT_WOLFSSL", wolfSSL_lib_version());
    check_version("libuv", "EXPECT_LIBUV", uv_version_string());
    snprintf(buf, sizeof buf, "%d.%d.%d", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    check_version("llhttp", "EXPECT_LLHTTP", buf);
    check_version("cJSON", "EXPECT_CJSON", cJSON_Version());
    int v = mi_version(); /* 3.x: major*10000 + minor*100 + patch; 1.x/2.x: major*100 + minor*10 + patch */
    if (v >= 10000)
        snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
    else
        snprintf(buf, sizeof buf, "%d.%d.%d", v / 100, (v / 10) % 10, v % 10);
    check_version("mimalloc", "EXPECT_MIMALLOC", buf);
}

int main(void)
{
    cJSON_Hooks hooks = {counting_malloc, mi_free};
    cJSON_InitHooks(&hooks);

    check_mimalloc();
    check_http_json();
    {
        char detail[64];
        snprintf(detail, sizeof detail, "%zu cJSON allocations through mi_malloc", mi_allocs);
        check(mi_allocs > 0, "cJSON uses mimalloc", detail);
    }
    check_wolfssl();
    check_libuv();
    check_versions();

    printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
