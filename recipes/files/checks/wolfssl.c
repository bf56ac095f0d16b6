/* wolfSSL: SHA-256 of "abc" (FIPS 180-2 vector), a TLS 1.3 client context, the build options
 * the family relies on (wolfSentry hooks, wolfCLU support), runtime version. */
#include "check.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/sha256.h>

int main(void)
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
#ifdef WOLFSSL_WOLFSENTRY_HOOKS
    /* the hook wolfSentry filters inbound connections through; NULL callback = uninstall */
    check(ctx && wolfSSL_CTX_set_AcceptFilter(ctx, NULL, NULL) == 0, "wolfSSL wolfSentry hooks",
          "WOLFSSL_WOLFSENTRY_HOOKS: accept filter settable");
#else
    check(0, "wolfSSL wolfSentry hooks", "wolfSSL built without --enable-wolfsentry");
#endif
    if (ctx)
        wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
    check_version("wolfSSL", "EXPECT_WOLFSSL", wolfSSL_lib_version());
    return finish();
}
