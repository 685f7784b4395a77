/* endpoint.c - naming of supervisor instances (socket paths, shm names). */
#include "endpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int oag_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > OAG_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

int oag_default_dir(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && xdg[0] == '/')
        return fmt(buf, cap, "%s/oag", xdg);
    return fmt(buf, cap, "/tmp/oag-%u", (unsigned)getuid());
}

int oag_default_socket(char *buf, size_t cap, const char *name)
{
    char dir[256];
    int rc = oag_default_dir(dir, sizeof dir);
    if (rc)
        return rc;
    return fmt(buf, cap, "%s/%s.sock", dir, name);
}

int oag_region_name(char *buf, size_t cap, const char *name)
{
    return fmt(buf, cap, "/oag-%u-%s", (unsigned)getuid(), name);
}

int oag_resolve_endpoint(char *buf, size_t cap, const char *endpoint)
{
    if (!endpoint || !*endpoint)
        endpoint = getenv("OAG_ENDPOINT");
    if (!endpoint || !*endpoint)
        return oag_default_socket(buf, cap, OAG_DEFAULT_NAME);
    if (!strncmp(endpoint, "unix:", 5))
        endpoint += 5;
    return fmt(buf, cap, "%s", endpoint);
}
