/* etcd.c - etcd v3 JSON gateway client (contract: etcd.h). */
#include "etcd.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_MAX_REPLY (8u << 20)

struct etcd {
    CURL *curl;
    char base[256];
    long timeout_ms;
    char *buf;             /* the reply being received */
    size_t len, cap;
    int overflow;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_NOTHING); }

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    struct etcd *e = arg;
    size_t k = sz * n;
    if (e->len + k + 1 > e->cap) {
        size_t cap = e->cap ? e->cap : 4096;
        while (cap < e->len + k + 1)
            cap *= 2;
        char *nb = cap <= ETCD_MAX_REPLY ? realloc(e->buf, cap) : NULL;
        if (!nb) {
            e->overflow = 1;
            return 0; /* aborts the transfer */
        }
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, p, k);
    e->len += k;
    e->buf[e->len] = '\0';
    return k;
}

int etcd_create(struct etcd **out, const char *base, long timeout_ms)
{
    pthread_once(&curl_once, curl_init_once);
    struct etcd *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof e->base) {
        free(e);
        return -EINVAL;
    }
    memcpy(e->base, base, n);
    e->base[n] = '\0';
    e->timeout_ms = timeout_ms;
    e->curl = curl_easy_init();
    if (!e->curl || sodium_init() < 0) {
        etcd_destroy(e);
        return -ENOMEM;
    }
    *out = e;
    return 0;
}

void etcd_destroy(struct etcd *e)
{
    if (!e)
        return;
    if (e->curl)
        curl_easy_cleanup(e->curl);
    free(e->buf);
    free(e);
}

/* POSTs body to base + path; on 200 parses the reply into *reply. */
static int post(struct etcd *e, const char *path, cJSON *body, cJSON **reply)
{
    char url[320];
    snprintf(url, sizeof url, "%s%s", e->base, path);
    char *text = cJSON_PrintUnformatted(body);
    if (!text)
        return -ENOMEM;
    e->len = 0;
    e->overflow = 0;
    CURL *c = e->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, e);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cr = curl_easy_perform(c);
    free(text);
    if (cr != CURLE_OK) {
        if (cr == CURLE_OPERATION_TIMEDOUT)
            return -ETIMEDOUT;
        if (cr == CURLE_WRITE_ERROR && e->overflow)
            return -EMSGSIZE;
        return -ECONNREFUSED;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    cJSON *j = e->len ? cJSON_ParseWithLength(e->buf, e->len) : NULL;
    if (code != 200) {
        int rc = -EPROTO;
        const cJSON *msg = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
        if (cJSON_IsString(msg) && strstr(msg->valuestring, "not found"))
            rc = -ENOENT;
        cJSON_Delete(j);
        return rc;
    }
    if (!j)
        return -EPROTO;
    *reply = j;
    return 0;
}

static int b64_add(cJSON *o, const char *name, const void *data, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *b = malloc(cap);
    if (!b)
        return -ENOMEM;
    sodium_bin2base64(b, cap, data, n, sodium_base64_VARIANT_ORIGINAL);
    int ok = cJSON_AddStringToObject(o, name, b) != NULL;
    free(b);
    return ok ? 0 : -ENOMEM;
}

/* Decodes a base64 string into a fresh NUL-terminated buffer, or NULL. */
static char *b64_dec(const char *s)
{
    size_t n = strlen(s), got = 0;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    if (sodium_base642bin((unsigned char *)out, n, s, n, NULL, &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(out);
        return NULL;
    }
    out[got] = '\0';
    return out;
}

/* Reads a JSON number or a string holding a decimal integer (the gateway writes int64 as text). */
static int json_i64(const cJSON *o, const char *name, int64_t *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsString(x)) {
        char *end;
        long long r = strtoll(x->valuestring, &end, 10);
        if (*end || end == x->valuestring)
            return -EPROTO;
        *v = r;
        return 0;
    }
    if (cJSON_IsNumber(x)) {
        *v = (int64_t)x->valuedouble;
        return 0;
    }
    return -EPROTO;
}

static cJSON *body_new(void) { return cJSON_CreateObject(); }

int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *lease)
{
    cJSON *b = body_new(), *r = NULL;
    if (!b || !cJSON_AddNumberToObject(b, "TTL", ttl_s)) {
        cJSON_Delete(b);
        return -ENOMEM;
    }
    int rc = post(e, "/v3/lease/grant", b, &r);
    cJSON_Delete(b);
    if (rc)
        return rc;
    rc = json_i64(r, "ID", lease);
    cJSON_Delete(r);
    return rc;
}

/* {"ID": "<lease>"}: the body of the lease calls. NULL when out of memory. */
static cJSON *lease_body(int64_t lease)
{
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)lease);
    cJSON *b = body_new();
    if (b && !cJSON_AddStringToObject(b, "ID", id)) {
        cJSON_Delete(b);
        b = NULL;
    }
    return b;
}

int etcd_lease_keepalive(struct etcd *e, int64_t lease)
{
    cJSON *b = lease_body(lease), *r = NULL;
    if (!b)
        return -ENOMEM;
    int rc = post(e, "/v3/lease/keepalive", b, &r);
    cJSON_Delete(b);
    if (rc)
        return rc;
    /* {"result":{"ID":..., "TTL":...}}; an expired lease answers without TTL (or TTL 0). */
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(r, "result");
    int64_t ttl = 0;
    if (!res || json_i64(res, "TTL", &ttl) || ttl <= 0)
        rc = -ENOENT;
    cJSON_Delete(r);
    return rc;
}

int etcd_lease_revoke(struct etcd *e, int64_t lease)
{
    cJSON *b = lease_body(lease), *r = NULL;
    if (!b)
        return -ENOMEM;
    int rc = post(e, "/v3/kv/lease/revoke", b, &r);
    if (rc == -EPROTO || rc == -ENOENT)
        rc = post(e, "/v3/lease/revoke", b, &r);
    cJSON_Delete(b);
    cJSON_Delete(r);
    return rc;
}

int etcd_put(struct etcd *e, const char *key, const char *val, int64_t lease)
{
    cJSON *b = body_new(), *r = NULL;
    int rc = -ENOMEM;
    if (!b || b64_add(b, "key", key, strlen(key)) || b64_add(b, "value", val, strlen(val)))
        goto out;
    if (lease) {
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)lease);
        if (!cJSON_AddStringToObject(b, "lease", id))
            goto out;
    }
    rc = post(e, "/v3/kv/put", b, &r);
    cJSON_Delete(r);
out:
    cJSON_Delete(b);
    return rc;
}

int etcd_range_prefix(struct etcd *e, const char *prefix,
                      void (*fn)(const char *key, const char *val, void *arg), void *arg)
{
    size_t n = strlen(prefix);
    char end[512];
    if (n == 0 || n >= sizeof end)
        return -EINVAL;
    /* range_end = the prefix with its last byte plus one: every key starting with prefix. */
    memcpy(end, prefix, n);
    end[n - 1] = (char)(end[n - 1] + 1);
    cJSON *b = body_new(), *r = NULL;
    int rc = -ENOMEM;
    if (!b || b64_add(b, "key", prefix, n) || b64_add(b, "range_end", end, n))
        goto out;
    rc = post(e, "/v3/kv/range", b, &r);
    if (rc)
        goto out;
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(r, "kvs"), *kv;
    int count = 0;
    cJSON_ArrayForEach(kv, kvs)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(kv, "key");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(kv, "value");
        if (!cJSON_IsString(k))
            continue;
        char *ks = b64_dec(k->valuestring);
        char *vs = cJSON_IsString(v) ? b64_dec(v->valuestring) : calloc(1, 1);
        if (ks && vs) {
            fn(ks, vs, arg);
            count++;
        }
        free(ks);
        free(vs);
    }
    rc = count;
    cJSON_Delete(r);
out:
    cJSON_Delete(b);
    return rc;
}

/* ---- watch ------------------------------------------------------------------------------ */

struct watch_ctx {
    struct etcd *e;
    int (*on_event)(void *arg);
    int (*stop)(void *arg);
    void *arg;
    int ended;                 /* a callback asked to stop */
};

/* The stream: one JSON object per line; a line with result.events is a change. */
static size_t on_watch_data(char *p, size_t sz, size_t n, void *arg)
{
    struct watch_ctx *w = arg;
    size_t k = sz * n;
    if (on_data(p, sz, n, w->e) != k)
        return 0;
    char *nl;
    while ((nl = memchr(w->e->buf, '\n', w->e->len)) != NULL) {
        size_t line = (size_t)(nl - w->e->buf);
        cJSON *j = cJSON_ParseWithLength(w->e->buf, line);
        const cJSON *res = j ? cJSON_GetObjectItemCaseSensitive(j, "result") : NULL;
        const cJSON *ev = res ? cJSON_GetObjectItemCaseSensitive(res, "events") : NULL;
        int change = cJSON_IsArray(ev) && cJSON_GetArraySize(ev) > 0;
        cJSON_Delete(j);
        memmove(w->e->buf, nl + 1, w->e->len - line - 1);
        w->e->len -= line + 1;
        if (change && w->on_event(w->arg)) {
            w->ended = 1;
            return 0;
        }
    }
    return k;
}

static int on_watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct watch_ctx *w = arg;
    (void)a, (void)b, (void)c, (void)d;
    if (w->stop(w->arg)) {
        w->ended = 1;
        return 1;
    }
    return 0;
}

int etcd_watch_prefix(struct etcd *e, const char *prefix, int (*on_event)(void *arg),
                      int (*stop)(void *arg), void *arg)
{
    size_t n = strlen(prefix);
    char end[512];
    if (n == 0 || n >= sizeof end)
        return -EINVAL;
    memcpy(end, prefix, n);
    end[n - 1] = (char)(end[n - 1] + 1);
    cJSON *b = body_new(), *cr = cJSON_CreateObject();
    if (!b || !cr || b64_add(cr, "key", prefix, n) || b64_add(cr, "range_end", end, n)) {
        cJSON_Delete(b);
        cJSON_Delete(cr);
        return -ENOMEM;
    }
    cJSON_AddItemToObject(b, "create_request", cr);
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (!text)
        return -ENOMEM;
    char url[320];
    snprintf(url, sizeof url, "%s/v3/watch", e->base);
    struct watch_ctx w = { e, on_event, stop, arg, 0 };
    e->len = 0;
    e->overflow = 0;
    CURL *c = e->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_watch_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_watch_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &w);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    free(text);
    if (w.ended)
        return 0;
    if (rc == CURLE_OK)
        return -ECONNRESET; /* etcd ended the stream */
    return rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;
}
