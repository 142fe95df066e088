/* SPDX-License-Identifier: MIT */
/*
 * Settings: defaults, validation and BYTEPOOL_* environment variables, all driven by one
 * table so that a setting's field name, variable and limits are written once.
 */
#include "common.h"
#include "os.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum setting_kind { KIND_SIZE, KIND_UNSIGNED, KIND_LEAK_LEVEL };

static const char *const leak_level_names[] = {"disabled", "simple", "advanced", "paranoid"};

typedef struct setting {
    const char *field;
    const char *env;
    size_t offset;
    enum setting_kind kind;
} setting;

static const setting settings[] = {
    {"page_size", "BYTEPOOL_PAGE_SIZE", offsetof(bp_config, page_size), KIND_SIZE},
    {"chunk_size", "BYTEPOOL_CHUNK_SIZE", offsetof(bp_config, chunk_size), KIND_SIZE},
    {"arenas", "BYTEPOOL_ARENAS", offsetof(bp_config, arenas), KIND_UNSIGNED},
    {"recycler_capacity", "BYTEPOOL_RECYCLER_CAPACITY", offsetof(bp_config, recycler_capacity),
     KIND_UNSIGNED},
    {"small_cache_size", "BYTEPOOL_SMALL_CACHE_SIZE", offsetof(bp_config, small_cache_size), KIND_UNSIGNED},
    {"normal_cache_size", "BYTEPOOL_NORMAL_CACHE_SIZE", offsetof(bp_config, normal_cache_size), KIND_UNSIGNED},
    {"max_cached_size", "BYTEPOOL_MAX_CACHED_SIZE", offsetof(bp_config, max_cached_size), KIND_SIZE},
    {"cache_class_max_bytes", "BYTEPOOL_CACHE_CLASS_MAX_BYTES", offsetof(bp_config, cache_class_max_bytes),
     KIND_SIZE},
    {"cache_trim_interval", "BYTEPOOL_CACHE_TRIM_INTERVAL", offsetof(bp_config, cache_trim_interval),
     KIND_UNSIGNED},
    {"chunk_decay_ms", "BYTEPOOL_CHUNK_DECAY_MS", offsetof(bp_config, chunk_decay_ms), KIND_UNSIGNED},
    {"dirty_decay_ms", "BYTEPOOL_DIRTY_DECAY_MS", offsetof(bp_config, dirty_decay_ms), KIND_UNSIGNED},
    {"dirty_max_percent", "BYTEPOOL_DIRTY_MAX_PERCENT", offsetof(bp_config, dirty_max_percent), KIND_UNSIGNED},
    {"leak_detection", "BYTEPOOL_LEAK_DETECTION", offsetof(bp_config, leak_detection), KIND_LEAK_LEVEL},
    {"leak_sampling_interval", "BYTEPOOL_LEAK_SAMPLING_INTERVAL", offsetof(bp_config, leak_sampling_interval),
     KIND_UNSIGNED},
    {"arena_cache_size", "BYTEPOOL_ARENA_CACHE_SIZE", offsetof(bp_config, arena_cache_size), KIND_UNSIGNED},
    {"arena_cache_max_bytes", "BYTEPOOL_ARENA_CACHE_MAX_BYTES", offsetof(bp_config, arena_cache_max_bytes),
     KIND_SIZE},
    {"run_cache_size", "BYTEPOOL_RUN_CACHE_SIZE", offsetof(bp_config, run_cache_size), KIND_UNSIGNED},
    {"release_check", "BYTEPOOL_RELEASE_CHECK", offsetof(bp_config, release_check), KIND_UNSIGNED},
    {"background_purge", "BYTEPOOL_BACKGROUND_PURGE", offsetof(bp_config, background_purge), KIND_UNSIGNED},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static size_t setting_get(const bp_config *cfg, const setting *s)
{
    const char *field = (const char *)cfg + s->offset;
    if (s->kind == KIND_SIZE) return *(const size_t *)(const void *)field;
    return *(const unsigned *)(const void *)field;
}

static void setting_set(bp_config *cfg, const setting *s, size_t value)
{
    char *field = (char *)cfg + s->offset;
    if (s->kind == KIND_SIZE) *(size_t *)(void *)field = value;
    else *(unsigned *)(void *)field = (unsigned)value;
}

void bp_config_init(bp_config *cfg)
{
    if (cfg == NULL) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->page_size = 8192;
    cfg->chunk_size = (size_t)4 << 20;
    unsigned arenas = 2 * bp__os_cpu_count();
    cfg->arenas = arenas > 1024 ? 1024 : arenas;
    cfg->recycler_capacity = 4096;
    cfg->small_cache_size = 256;
    cfg->normal_cache_size = 64;
    cfg->max_cached_size = 64 * 1024;
    cfg->cache_class_max_bytes = 1024 * 1024;
    cfg->cache_trim_interval = 8192;
    cfg->chunk_decay_ms = 1000;
    cfg->dirty_decay_ms = 1000;
    /* Resident memory within about a tenth of the recent peak of live bytes, at a page
     * fault for each purged page that is used again (docs/design.md, Returning memory). */
    cfg->dirty_max_percent = 10;
    /* Off by default, unlike Netty: even sampled, a stack capture per tracked buffer costs
     * a large share of the allocation path (docs/design.md, Leak detection). */
    cfg->leak_detection = BP_LEAK_DISABLED;
    cfg->leak_sampling_interval = 128;
    /* Enough for a burst of about a thousand buffers per class (16 KiB ones included) to
     * move between thread caches and the arena without touching a chunk; the thread bins
     * hold 256 small and 64 normal ones. */
    cfg->arena_cache_size = 8192;
    cfg->arena_cache_max_bytes = (size_t)16 << 20;
    /* A burst of a thousand buffers of one normal class (64 KiB ones, say) comes back and
     * goes out again without splitting and coalescing runs. */
    cfg->run_cache_size = 1024;
    /* Off: a sole owner's release stays a plain store; a compare-and-set on every last
     * release costs bursts of allocations and releases too much (docs/design.md). */
    cfg->release_check = 0;
    /* On: memory follows live bytes without the program calling anything (a thread that
     * wakes a few times a second; docs/design.md, Returning memory). */
    cfg->background_purge = 1;
}

/* Why setting `s` is invalid in `cfg` (NULL when it is fine). */
static const char *setting_problem(const bp_config *cfg, const setting *s)
{
    size_t v = setting_get(cfg, s);
    if (s->offset == offsetof(bp_config, page_size)) {
        if (!bp__is_pow2(v)) return "must be a power of two";
        if (v < 4096 || v > 65536) return "must be between 4096 and 65536";
        if (v < bp__os_page_size()) return "must not be smaller than the OS page size";
    } else if (s->offset == offsetof(bp_config, chunk_size)) {
        if (!bp__is_pow2(v)) return "must be a power of two";
        if (bp__is_pow2(cfg->page_size) && v < 8 * cfg->page_size)
            return "must be at least 8 pages (8 x page_size)";
        if (v > ((size_t)1 << 30)) return "must not exceed 1 GiB";
    } else if (s->offset == offsetof(bp_config, arenas)) {
        if (v < 1 || v > 1024) return "must be between 1 and 1024";
    } else if (s->offset == offsetof(bp_config, recycler_capacity)) {
        if (v > (1u << 20)) return "must not exceed 1048576";
    } else if (s->offset == offsetof(bp_config, small_cache_size) ||
               s->offset == offsetof(bp_config, normal_cache_size) ||
               s->offset == offsetof(bp_config, arena_cache_size) ||
               s->offset == offsetof(bp_config, run_cache_size)) {
        if (v > 65536) return "must not exceed 65536";
    } else if (s->offset == offsetof(bp_config, chunk_decay_ms)) {
        if (v > 3600000) return "must not exceed 3600000 (one hour)";
    } else if (s->offset == offsetof(bp_config, dirty_decay_ms)) {
        if (v > 3600000 && v != BP_DECAY_NEVER) return "must not exceed 3600000 (one hour), or be 4294967295 (never)";
    } else if (s->offset == offsetof(bp_config, dirty_max_percent)) {
        if (v > 1000) return "must not exceed 1000";
    } else if (s->offset == offsetof(bp_config, leak_detection)) {
        if (v > BP_LEAK_PARANOID) return "must be 0 (disabled), 1 (simple), 2 (advanced) or 3 (paranoid)";
    } else if (s->offset == offsetof(bp_config, leak_sampling_interval)) {
        if (v < 1 || v > (1u << 30)) return "must be between 1 and 1073741824";
    } else if (s->offset == offsetof(bp_config, arena_cache_max_bytes) ||
               s->offset == offsetof(bp_config, cache_class_max_bytes) ||
               s->offset == offsetof(bp_config, max_cached_size)) {
        if (v > ((size_t)1 << 30)) return "must not exceed 1 GiB";
    } else if (s->offset == offsetof(bp_config, release_check) || s->offset == offsetof(bp_config, background_purge)) {
        if (v > 1) return "must be 0 (off) or 1 (on)";
    }
    return NULL;
}

int bp_config_validate(const bp_config *cfg, char *errbuf, size_t errbuf_len)
{
    if (cfg == NULL) {
        if (errbuf_len > 0) snprintf(errbuf, errbuf_len, "config is NULL");
        return BP_EINVAL;
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *problem = setting_problem(cfg, &settings[i]);
        if (problem == NULL) continue;
        if (errbuf_len > 0)
            snprintf(errbuf, errbuf_len, "%s=%zu: %s", settings[i].field,
                     setting_get(cfg, &settings[i]), problem);
        return BP_EINVAL;
    }
    return 0;
}

/* Decimal digits with an optional K, M or G suffix (powers of 1024) for sizes; nothing else,
 * not even spaces. Returns a reason on failure. */
static const char *parse_value(const char *text, enum setting_kind kind, size_t *out)
{
    if (kind == KIND_LEAK_LEVEL) {
        for (size_t i = 0; i < sizeof leak_level_names / sizeof leak_level_names[0]; i++)
            if (strcasecmp(text, leak_level_names[i]) == 0) {
                *out = i;
                return NULL;
            }
        return "not a level (disabled, simple, advanced or paranoid)";
    }
    if (!isdigit((unsigned char)text[0])) return "not a number";
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno == ERANGE) return "too large";
    unsigned shift = 0;
    if (kind == KIND_SIZE && *end != '\0' && end[1] == '\0') {
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        default: break;
        }
    }
    if (*end != '\0') return kind == KIND_SIZE ? "not a size (digits, optionally K, M or G)"
                                               : "not a whole number";
    if (v > (SIZE_MAX >> shift)) return "too large";
    v <<= shift;
    if (kind == KIND_UNSIGNED && v > 0xffffffffull) return "too large";
    *out = (size_t)v;
    return NULL;
}

int bp_config_from_env(bp_config *cfg, char *errbuf, size_t errbuf_len)
{
    if (cfg == NULL) {
        if (errbuf_len > 0) snprintf(errbuf, errbuf_len, "config is NULL");
        return BP_EINVAL;
    }
    bp_config result;
    bp_config_init(&result);
    bp_config_init(cfg);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *text = getenv(settings[i].env);
        if (text == NULL) continue;
        size_t value;
        const char *problem = parse_value(text, settings[i].kind, &value);
        if (problem == NULL) {
            setting_set(&result, &settings[i], value);
            continue;
        }
        if (errbuf_len > 0) snprintf(errbuf, errbuf_len, "%s=%s: %s", settings[i].env, text, problem);
        return BP_EINVAL;
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *problem = setting_problem(&result, &settings[i]);
        if (problem == NULL) continue;
        const char *text = getenv(settings[i].env);
        if (errbuf_len > 0) {
            if (text != NULL)
                snprintf(errbuf, errbuf_len, "%s=%s: %s", settings[i].env, text, problem);
            else
                snprintf(errbuf, errbuf_len, "%s=%zu (default): %s", settings[i].env,
                         setting_get(&result, &settings[i]), problem);
        }
        return BP_EINVAL;
    }
    *cfg = result;
    return 0;
}
