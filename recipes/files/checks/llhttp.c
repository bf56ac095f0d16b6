/* llhttp: parse an HTTP/1.1 request (method, URL, headers, body) into a cJSON document.
 *
 * The version check uses the installed header: llhttp has no runtime version call.
 *
 * pkg-config: llhttp libcjson
 */
#include "check.h"

#include <cjson/cJSON.h>
#include <llhttp.h>

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

int main(void)
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
    check(json && strcmp(json, want) == 0, "cJSON document", json ? json : "(print failed)");
    cJSON_free(json);
    cJSON_Delete(r.doc);

    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    check_version("llhttp", "EXPECT_LLHTTP", buf);
    return finish();
}
