/* cJSON: allocates through mimalloc hooks, prints and parses back a document; runtime version.
 *
 * pkg-config: libcjson mimalloc
 */
#include "check.h"

#include <cjson/cJSON.h>
#include <mimalloc.h>

static size_t mi_allocs;

static void *counting_malloc(size_t n)
{
    mi_allocs++;
    return mi_malloc(n);
}

int main(void)
{
    cJSON_Hooks hooks = {counting_malloc, mi_free};
    cJSON_InitHooks(&hooks);

    cJSON *doc = cJSON_CreateObject();
    cJSON *headers = cJSON_AddObjectToObject(doc, "headers");
    cJSON_AddStringToObject(headers, "Host", "vpn.example.org");
    cJSON_AddNumberToObject(doc, "port", 443);
    char *json = cJSON_PrintUnformatted(doc);
    cJSON *back = json ? cJSON_Parse(json) : NULL;
    cJSON *host = back ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(back, "headers"), "Host") : NULL;
    cJSON *port = back ? cJSON_GetObjectItemCaseSensitive(back, "port") : NULL;
    check(json && strcmp(json, "{\"headers\":{\"Host\":\"vpn.example.org\"},\"port\":443}") == 0
          && cJSON_IsString(host) && strcmp(host->valuestring, "vpn.example.org") == 0
          && cJSON_IsNumber(port) && port->valueint == 443,
          "cJSON round trip", json ? json : "(print failed)");
    cJSON_Delete(back);
    cJSON_free(json);
    cJSON_Delete(doc);

    char detail[64];
    snprintf(detail, sizeof detail, "%zu cJSON allocations through mi_malloc", mi_allocs);
    check(mi_allocs > 0, "cJSON uses mimalloc", detail);
    check_version("cJSON", "EXPECT_CJSON", cJSON_Version());
    return finish();
}
