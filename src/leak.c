/*
 * Leak records, reports and stack symbolization. Stacks are captured with libunwind's
 * unw_backtrace when bytepool was built with it (BP_HAVE_LIBUNWIND), otherwise with
 * backtrace(3): the same return addresses, but glibc's walk through libgcc's unwinder took
 * ~0.9 us for a 6-frame stack here against ~0.07 us (libunwind caches what it learns about
 * each frame), and every tracked buffer pays it. They are named with libdw (function and
 * file:line from debug information) when bytepool was built with it (BP_HAVE_LIBDW),
 * otherwise with dladdr(3) (exported function names).
 */
#include "leak.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef BP_HAVE_LIBDW
#  include <dwarf.h>
#  include <elfutils/libdwfl.h>
#endif
#ifdef BP_HAVE_LIBUNWIND
#  define UNW_LOCAL_ONLY
#  include <libunwind.h>

/* Present when the process runs under ThreadSanitizer. unw_backtrace keeps a per-thread
 * trace cache, freed by a thread-exit destructor that takes a lock after TSan has let go of
 * the thread: TSan's interceptor then crashes. (backtrace(3) is no way out: libunwind
 * defines it too, and a program linking libunwind gets that one.) Under TSan, stacks are
 * walked frame by frame with unw_step, which keeps no per-thread cache, one thread at a
 * time: libunwind's slow path reads a global signal mask that another thread's walk writes
 * under libunwind's own lock, which TSan reports as a race (a stress run of 6 threads found
 * it). */
extern void __tsan_init(void) __attribute__((weak));
static pthread_mutex_t tsan_walk_lock = PTHREAD_MUTEX_INITIALIZER;

static int bp__leak_step_stack(void **frames, int max)
{
    unw_context_t context;
    unw_cursor_t cursor;
    if (unw_getcontext(&context) != 0 || unw_init_local(&cursor, &context) != 0) return 0;
    int depth = 0;
    do {
        unw_word_t ip;
        if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
        frames[depth++] = (void *)(uintptr_t)ip;
    } while (depth < max && unw_step(&cursor) > 0);
    return depth;
}
#endif

/* The return addresses of the calling stack, innermost first; how many. (Named bp_ so that
 * a report leaves its frame out with the library's own.) */
static int bp__leak_capture_stack(void **frames, int max)
{
#ifdef BP_HAVE_LIBUNWIND
    if (__tsan_init != NULL) {
        pthread_mutex_lock(&tsan_walk_lock);
        int walked = bp__leak_step_stack(frames, max);
        pthread_mutex_unlock(&tsan_walk_lock);
        return walked;
    }
    int depth = unw_backtrace(frames, max);
    return depth > 0 ? depth : 0;
#else
    return backtrace(frames, max);
#endif
}

/* ---- the sink ---- */

static void stderr_sink(const char *report, void *user_data)
{
    (void)user_data;
    fputs(report, stderr);
    fflush(stderr);
}

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static bp_leak_sink sink_fn = stderr_sink;
static void *sink_user_data;

bp_leak_sink bp_set_leak_sink(bp_leak_sink sink, void *user_data)
{
    pthread_mutex_lock(&sink_lock);
    bp_leak_sink previous = sink_fn;
    sink_fn = sink != NULL ? sink : stderr_sink;
    sink_user_data = sink != NULL ? user_data : NULL;
    pthread_mutex_unlock(&sink_lock);
    return previous;
}

/* ---- records ---- */

void bp__leak_init(bp__leak_tracker *t, unsigned level, unsigned interval)
{
    pthread_mutex_init(&t->lock, NULL);
    t->head = NULL;
    t->level = level;
    t->interval = level == BP_LEAK_PARANOID || interval == 0 ? 1 : interval;
}

void bp__leak_destroy(bp__leak_tracker *t)
{
    for (bp__leak_record *r = t->head; r != NULL;) {
        bp__leak_record *next = r->next;
        free(r);
        r = next;
    }
    t->head = NULL;
    pthread_mutex_destroy(&t->lock);
}

bp__leak_record *bp__leak_track(bp__leak_tracker *t, size_t capacity)
{
    bp__leak_record *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->capacity = capacity;
    r->depth = bp__leak_capture_stack(r->frames, BP__LEAK_FRAMES);
    pthread_mutex_lock(&t->lock);
    r->next = t->head;
    if (t->head != NULL) t->head->prev = r;
    t->head = r;
    pthread_mutex_unlock(&t->lock);
    return r;
}

void bp__leak_untrack(bp__leak_tracker *t, bp__leak_record *r)
{
    pthread_mutex_lock(&t->lock);
    if (r->prev != NULL) r->prev->next = r->next;
    else t->head = r->next;
    if (r->next != NULL) r->next->prev = r->prev;
    pthread_mutex_unlock(&t->lock);
    free(r);
}

void bp__leak_note(bp__leak_tracker *t, bp__leak_record *r, const char *what, const char *hint)
{
    if (t->level < BP_LEAK_ADVANCED) return;
    /* Only the owner of a buffer notes accesses to it; the lock orders them against a report. */
    void *frames[BP__LEAK_FRAMES];
    int depth = bp__leak_capture_stack(frames, BP__LEAK_FRAMES);
    pthread_mutex_lock(&t->lock);
    bp__leak_access *a = &r->accesses[r->naccesses++ % BP__LEAK_ACCESSES];
    a->what = what;
    a->hint = hint;
    a->depth = depth;
    memcpy(a->frames, frames, (size_t)depth * sizeof frames[0]);
    pthread_mutex_unlock(&t->lock);
}

/* ---- naming frames ---- */

typedef struct symbolizer {
#ifdef BP_HAVE_LIBDW
    Dwfl *dwfl;
#else
    int unused;
#endif
} symbolizer;

static void symbolizer_open(symbolizer *s)
{
#ifdef BP_HAVE_LIBDW
    static const Dwfl_Callbacks callbacks = {
        .find_elf = dwfl_linux_proc_find_elf,
        .find_debuginfo = dwfl_standard_find_debuginfo,
    };
    s->dwfl = dwfl_begin(&callbacks);
    if (s->dwfl != NULL) {
        dwfl_report_begin(s->dwfl);
        if (dwfl_linux_proc_report(s->dwfl, getpid()) != 0 || dwfl_report_end(s->dwfl, NULL, NULL) != 0) {
            dwfl_end(s->dwfl);
            s->dwfl = NULL;
        }
    }
#else
    s->unused = 0;
#endif
}

static void symbolizer_close(symbolizer *s)
{
#ifdef BP_HAVE_LIBDW
    if (s->dwfl != NULL) dwfl_end(s->dwfl);
#else
    (void)s;
#endif
}

#ifdef BP_HAVE_LIBDW
static bool is_public_header(const char *file)
{
    size_t n = strlen(file);
    return n >= 10 && strcmp(file + n - 10, "bytepool.h") == 0 && (n == 10 || file[n - 11] == '/');
}

/* An allocation site inside the header's inline bp_alloc (or another inline function of
 * it) would name the header's line; the line to show is where the program called it: the
 * call site of the innermost inlined scope that was called from outside the header. False
 * when the address is in no such scope or the debug information does not say. */
static bool call_site_of_inline(Dwfl_Module *module, uintptr_t pc, const char **file, int *lineno)
{
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(module, pc, &bias);
    Dwarf_Files *files = NULL;
    if (cu == NULL || dwarf_getsrcfiles(cu, &files, NULL) != 0) return false;
    Dwarf_Die *scopes = NULL;
    int n = dwarf_getscopes(cu, pc - bias, &scopes);
    bool found = false;
    for (int i = 0; i < n && !found; i++) { /* innermost first */
        if (dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine) continue;
        Dwarf_Attribute attr;
        Dwarf_Word file_index = 0, line = 0;
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &file_index) != 0 ||
            dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &line) != 0)
            continue;
        const char *name = dwarf_filesrc(files, file_index, NULL, NULL);
        if (name == NULL || is_public_header(name)) continue; /* called from the header itself */
        *file = name;
        *lineno = (int)line;
        found = true;
    }
    free(scopes);
    return found;
}
#endif

/* "function (file:line)" or "function+0x12 (module)"; returns the function name's start in
 * `out` so callers can recognise bytepool's own frames. */
static void name_frame(symbolizer *s, void *address, char *out, size_t len, const char **function)
{
    /* A return address points past the call; look up the call itself. */
    uintptr_t pc = (uintptr_t)address - 1;
    *function = NULL;
#ifdef BP_HAVE_LIBDW
    if (s->dwfl != NULL) {
        Dwfl_Module *module = dwfl_addrmodule(s->dwfl, pc);
        const char *name = module != NULL ? dwfl_module_addrname(module, pc) : NULL;
        Dwfl_Line *line = module != NULL ? dwfl_module_getsrc(module, pc) : NULL;
        int lineno = 0;
        const char *file = line != NULL ? dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL) : NULL;
        if (file != NULL && is_public_header(file)) call_site_of_inline(module, pc, &file, &lineno);
        if (name != NULL) {
            *function = name;
            if (file != NULL) snprintf(out, len, "%s (%s:%d)", name, file, lineno);
            else snprintf(out, len, "%s (%s)", name, dwfl_module_info(module, NULL, NULL, NULL, NULL, NULL, NULL, NULL));
            return;
        }
    }
#else
    (void)s;
#endif
    Dl_info info;
    if (dladdr((void *)pc, &info) != 0 && info.dli_sname != NULL) {
        *function = info.dli_sname;
        snprintf(out, len, "%s+0x%lx (%s)", info.dli_sname, (unsigned long)(pc - (uintptr_t)info.dli_saddr),
                 info.dli_fname ? info.dli_fname : "?");
    } else if (dladdr((void *)pc, &info) != 0) {
        snprintf(out, len, "%p (%s+0x%lx)", address, info.dli_fname ? info.dli_fname : "?",
                 (unsigned long)(pc - (uintptr_t)info.dli_fbase));
    } else {
        snprintf(out, len, "%p", address);
    }
}

bool bp__leak_has_line_info(void)
{
#ifdef BP_HAVE_LIBDW
    return true;
#else
    return false;
#endif
}

/* ---- reports ---- */

typedef struct text {
    char *data;
    size_t used, size;
} text;

static void text_add(text *t, const char *fmt, ...) BP_PRINTF(2, 3);

#include <stdarg.h>
static void text_add(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data ? t->data + t->used : NULL, t->data ? t->size - t->used : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (t->data != NULL && t->used + (size_t)n < t->size) {
            t->used += (size_t)n;
            return;
        }
        size_t size = (t->size ? t->size * 2 : 4096) + (size_t)n;
        char *grown = realloc(t->data, size);
        if (grown == NULL) return;
        t->data = grown;
        t->size = size;
    }
}

/* Prints a stack, leaving out the frames of bytepool and of backtrace() at the top and the
 * C runtime's at the bottom. */
static void add_stack(text *out, symbolizer *s, void *const *frames, int depth)
{
    int shown = 0;
    bool in_library = true;
    for (int i = 0; i < depth; i++) {
        char line[512];
        const char *function;
        name_frame(s, frames[i], line, sizeof line, &function);
        /* Leading frames of bytepool itself, or of backtrace() (sanitizers intercept it). */
        if (in_library && function != NULL && (strncmp(function, "bp_", 3) == 0 || strstr(function, "backtrace") != NULL))
            continue;
        in_library = false;
        if (function != NULL && strncmp(function, "__libc_start", 12) == 0) break;
        text_add(out, "    #%d %s\n", shown++, line);
    }
}

/* A leak with its allocation stack as printed: leaks are grouped by what the reader sees
 * (raw addresses can differ where the stacks do not, e.g. under a sanitizer's unwinder). */
typedef struct named_leak {
    const bp__leak_record *record;
    text stack;
} named_leak;

static int by_stack_text(const void *x, const void *y)
{
    const named_leak *a = x, *b = y;
    return strcmp(a->stack.data ? a->stack.data : "", b->stack.data ? b->stack.data : "");
}

long bp__leak_report(bp__leak_tracker *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = 0;
    for (bp__leak_record *r = t->head; r != NULL; r = r->next) n += !r->reported;
    bp__leak_record **leaks = n ? malloc(n * sizeof *leaks) : NULL;
    if (n > 0 && leaks == NULL) {
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    size_t k = 0;
    for (bp__leak_record *r = t->head; r != NULL; r = r->next)
        if (!r->reported) leaks[k++] = r;
    if (n == 0) {
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    symbolizer s;
    symbolizer_open(&s);
    named_leak *named = calloc(n, sizeof *named);
    if (named == NULL) {
        symbolizer_close(&s);
        pthread_mutex_unlock(&t->lock);
        free(leaks);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        leaks[i]->reported = true; /* each leak is named once */
        named[i].record = leaks[i];
        add_stack(&named[i].stack, &s, leaks[i]->frames, leaks[i]->depth);
    }
    qsort(named, n, sizeof *named, by_stack_text);
    text out = {0};
    if (t->interval > 1)
        text_add(&out, "bytepool LEAK: %zu buffer%s never released (%s leak detection tracks 1 buffer in %u; "
                       "BYTEPOOL_LEAK_DETECTION=paranoid tracks every one).\n",
                 n, n == 1 ? " was" : "s were", t->level == BP_LEAK_ADVANCED ? "advanced" : "simple", t->interval);
    else
        text_add(&out, "bytepool LEAK: %zu buffer%s never released (paranoid leak detection).\n", n,
                 n == 1 ? " was" : "s were");
    for (size_t i = 0; i < n;) {
        size_t j = i, bytes = 0;
        while (j < n && by_stack_text(&named[i], &named[j]) == 0) bytes += named[j++].record->capacity;
        text_add(&out, "  %zu buffer%s (%zu bytes) allocated at:\n%s", j - i, j - i == 1 ? "" : "s", bytes,
                 named[i].stack.data ? named[i].stack.data : "");
        const bp__leak_record *r = named[i].record;
        unsigned kept = r->naccesses < BP__LEAK_ACCESSES ? r->naccesses : BP__LEAK_ACCESSES;
        for (unsigned a = 0; a < kept; a++) {
            const bp__leak_access *acc = &r->accesses[(r->naccesses - kept + a) % BP__LEAK_ACCESSES];
            text_add(&out, "  access %u of %u: %s%s%s\n", r->naccesses - kept + a + 1, r->naccesses, acc->what,
                     acc->hint ? ", hint: " : "", acc->hint ? acc->hint : "");
            add_stack(&out, &s, acc->frames, acc->depth);
        }
        i = j;
    }
    for (size_t i = 0; i < n; i++) free(named[i].stack.data);
    free(named);
    symbolizer_close(&s);
    pthread_mutex_unlock(&t->lock);
    free(leaks);
    pthread_mutex_lock(&sink_lock);
    bp_leak_sink sink = sink_fn;
    void *user_data = sink_user_data;
    pthread_mutex_unlock(&sink_lock);
    if (out.data != NULL) sink(out.data, user_data);
    free(out.data);
    return (long)n;
}
