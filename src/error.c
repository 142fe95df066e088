/* SPDX-License-Identifier: MIT */
/*
 * Error codes and misuse reporting. The code list lives once, in BP_ERROR_MAP
 * (bytepool.h); the handler is process-wide and replaceable at any time, and starts as
 * bp_misuse_abort when BYTEPOOL_ABORT_ON_MISUSE=1.
 */
#include "common.h"

#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *bp_strerror(int err)
{
    switch (err) {
    case BP_OK: return "success";
#define BP__ERROR_TEXT(name, value, text) case BP_##name: return text;
        BP_ERROR_MAP(BP__ERROR_TEXT)
#undef BP__ERROR_TEXT
    default: return "unknown error";
    }
}

const char *bp_err_name(int err)
{
    switch (err) {
    case BP_OK: return "BP_OK";
#define BP__ERROR_NAME(name, value, text) case BP_##name: return "BP_" #name;
        BP_ERROR_MAP(BP__ERROR_NAME)
#undef BP__ERROR_NAME
    default: return "BP_UNKNOWN";
    }
}

/* Handler and argument change together under one lock; misuse is the cold path, so the
 * reader takes the lock too and calls the handler after letting go of it. */
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static bp_misuse_handler hook_handler = NULL;
static void *hook_user_data = NULL;

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void read_env(void)
{
    const char *abort_on_misuse = getenv("BYTEPOOL_ABORT_ON_MISUSE");
    if (abort_on_misuse == NULL || strcmp(abort_on_misuse, "1") != 0) return;
    pthread_mutex_lock(&hook_lock);
    hook_handler = bp_misuse_abort;
    hook_user_data = NULL;
    pthread_mutex_unlock(&hook_lock);
}

void bp__misuse_env_init(void) { pthread_once(&env_once, read_env); }

void bp__misuse_atfork(int when)
{
    if (when == BP__FORK_PREPARE) pthread_mutex_lock(&hook_lock);
    else pthread_mutex_unlock(&hook_lock);
}

bp_misuse_handler bp_set_misuse_handler(bp_misuse_handler handler, void *user_data)
{
    bp__misuse_env_init(); /* before: the program's choice is the one that stays */
    pthread_mutex_lock(&hook_lock);
    bp_misuse_handler previous = hook_handler;
    hook_handler = handler;
    hook_user_data = user_data;
    pthread_mutex_unlock(&hook_lock);
    return previous;
}

void bp_misuse_abort(int err, const char *func, const char *message, void *user_data)
{
    (void)user_data;
    fprintf(stderr, "bytepool: %s: %s (%s)\n", func, message, bp_err_name(err));
    fflush(stderr);
    abort();
}

int bp__misuse(int err, const char *func, const char *fmt, ...)
{
    bp__misuse_env_init();
    pthread_mutex_lock(&hook_lock);
    bp_misuse_handler handler = hook_handler;
    void *user_data = hook_user_data;
    pthread_mutex_unlock(&hook_lock);
    if (handler != NULL) {
        char message[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
        handler(err, func, message, user_data);
    }
    return err;
}

void bp__assert_fail(const char *cond, const char *file, int line)
{
    fprintf(stderr, "bytepool: internal check failed: %s at %s:%d\n", cond, file, line);
    fflush(stderr);
    abort();
}
