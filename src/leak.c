/* SPDX-License-Identifier: MIT */
/*
 * Leak records, reports and stack symbolization. bytepool links neither of the libraries
 * that help here: each is loaded with dlopen the first time it is needed, its functions
 * looked up with dlsym, and when it (or one of them) is missing the libc way is taken.
 * Their headers, when bytepool is built with them, give only types and prototypes.
 *
 * Stacks are captured with libunwind's unw_backtrace (libunwind.so.8, loaded at the first
 * tracked buffer) when bytepool was built with its header (BP__HAVE_LIBUNWIND), otherwise
 * with backtrace(3): the same return addresses, but glibc's walk through libgcc's unwinder
 * takes about ten times as long (libunwind caches what it learns about each frame; figures
 * in docs/design.md, Leak detection), and every tracked buffer pays it. They are named with
 * libdw (libdw.so.1, loaded at the first report; function and file:line from debug
 * information) when bytepool was built with its headers (BP__HAVE_LIBDW) and
 * BYTEPOOL_LEAK_SYMBOLIZER does not say dladdr, otherwise with dladdr(3) (exported
 * function names). A library once loaded stays loaded: libunwind's per-thread caches are
 * freed by thread-exit destructors in its code.
 */
#include "leak.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifdef BP__HAVE_LIBDW
#  include <dwarf.h>
#  include <elfutils/libdwfl.h>
#endif
#ifdef BP__HAVE_LIBUNWIND
#  define UNW_LOCAL_ONLY
#  include <libunwind.h>
#endif

/* ---- loading a library on need ---- */

#if defined(BP__HAVE_LIBDW) || defined(BP__HAVE_LIBUNWIND)
/* A function's name as the library exports it: the headers rename some (libunwind's
 * unw_step is _ULx86_64_step), so the name is taken after macro expansion. */
#define BP__SYMBOL_NAME(f) BP__SYMBOL_NAME_(f)
#define BP__SYMBOL_NAME_(f) #f

/* dlsym's answers are stored into function pointers (POSIX: they have the same size). */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers are not the size of void *");

/* Opens `soname` and looks up n functions into syms. True when every one is there; false
 * otherwise, with the library closed again and dlerror's reason in why. */
static bool load_library(const char *soname, const char *const *names, void **syms, size_t n, char *why, size_t len)
{
    void *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    const char *error = NULL;
    for (size_t i = 0; handle != NULL && i < n && error == NULL; i++) {
        dlerror();
        syms[i] = dlsym(handle, names[i]);
        if (syms[i] == NULL) error = dlerror();
    }
    if (handle != NULL && error == NULL) return true;
    if (handle == NULL) error = dlerror();
    snprintf(why, len, "%s", error != NULL ? error : soname);
    if (handle != NULL) dlclose(handle);
    return false;
}
#endif

/* ---- capturing stacks ---- */

#ifdef BP__HAVE_LIBUNWIND
/* The libunwind functions used. unw_tdep_getcontext is one of them on x86_64; elsewhere it
 * is a macro that captures the registers in place. */
#  ifdef __x86_64__
#    define BP__UNW_GETCONTEXT(X) X(unw_tdep_getcontext)
#  else
#    define BP__UNW_GETCONTEXT(X)
#  endif
#  define BP__UNW_FUNCTIONS(X) X(unw_backtrace) X(unw_init_local) X(unw_get_reg) X(unw_step) BP__UNW_GETCONTEXT(X)
#  define BP__UNW_MEMBER(f) __typeof__(f) *f;
#  define BP__UNW_NAME(f) BP__SYMBOL_NAME(f),

static struct {
    BP__UNW_FUNCTIONS(BP__UNW_MEMBER)
} unw;
static bool unw_loaded;
static pthread_once_t unw_once = PTHREAD_ONCE_INIT;

static void load_libunwind(void)
{
    static const char *const names[] = {BP__UNW_FUNCTIONS(BP__UNW_NAME)};
    void *syms[sizeof names / sizeof names[0]];
    char why[256];
    if (!load_library("libunwind.so.8", names, syms, sizeof names / sizeof names[0], why, sizeof why)) return;
    size_t i = 0;
#  define BP__UNW_SET(f) memcpy(&unw.f, &syms[i++], sizeof unw.f);
    BP__UNW_FUNCTIONS(BP__UNW_SET)
#  undef BP__UNW_SET
    unw_loaded = true;
}

/* Present when the process runs under ThreadSanitizer. unw_backtrace keeps a per-thread
 * trace cache, freed by a thread-exit destructor that takes a lock after TSan has let go of
 * the thread: TSan's interceptor then crashes. Under TSan, stacks are walked frame by frame
 * with unw_step, which keeps no per-thread cache, one thread at a time: libunwind's slow
 * path reads a global signal mask that another thread's walk writes under libunwind's own
 * lock, which TSan reports as a race (a stress run of 6 threads found it). */
extern void __tsan_init(void) __attribute__((weak));
static pthread_mutex_t tsan_walk_lock = PTHREAD_MUTEX_INITIALIZER;

static int bp__leak_step_stack(void **frames, int max)
{
    unw_context_t context;
    unw_cursor_t cursor;
#  ifdef __x86_64__
    if (unw.unw_tdep_getcontext(&context) != 0) return 0;
#  else
    if (unw_getcontext(&context) != 0) return 0;
#  endif
    if (unw.unw_init_local(&cursor, &context) != 0) return 0;
    int depth = 0;
    do {
        unw_word_t ip;
        if (unw.unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
        frames[depth++] = (void *)(uintptr_t)ip;
    } while (depth < max && unw.unw_step(&cursor) > 0);
    return depth;
}
#endif

/* The return addresses of the calling stack, innermost first; how many. (Named bp_ so that
 * a report leaves its frame out with the library's own.) */
static int bp__leak_capture_stack(void **frames, int max)
{
#ifdef BP__HAVE_LIBUNWIND
    pthread_once(&unw_once, load_libunwind);
    if (unw_loaded) {
        if (__tsan_init != NULL) {
            pthread_mutex_lock(&tsan_walk_lock);
            int walked = bp__leak_step_stack(frames, max);
            pthread_mutex_unlock(&tsan_walk_lock);
            return walked;
        }
        int depth = unw.unw_backtrace(frames, max);
        return depth > 0 ? depth : 0;
    }
#endif
    return backtrace(frames, max);
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

static void lock_for_fork(pthread_mutex_t *lock, int when)
{
    if (when == BP__FORK_PREPARE) pthread_mutex_lock(lock);
    else pthread_mutex_unlock(lock);
}

void bp__leak_atfork(int when)
{
#ifdef BP__HAVE_LIBUNWIND
    lock_for_fork(&tsan_walk_lock, when);
#endif
    lock_for_fork(&sink_lock, when);
}

void bp__leak_tracker_atfork(bp__leak_tracker *t, int when) { lock_for_fork(&t->lock, when); }

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

#ifdef BP__HAVE_LIBDW
/* The libdw functions used (looked up by these names in libdw.so.1). */
#  define BP__DW_FUNCTIONS(X)                                                                 \
    X(dwfl_begin) X(dwfl_end) X(dwfl_report_begin) X(dwfl_report_end) X(dwfl_linux_proc_report) \
    X(dwfl_linux_proc_find_elf) X(dwfl_standard_find_debuginfo) X(dwfl_addrmodule)             \
    X(dwfl_module_addrname) X(dwfl_module_info) X(dwfl_module_addrdie) X(dwfl_module_nextcu)   \
    X(dwarf_haspc) X(dwarf_getsrc_die) X(dwarf_linesrc) X(dwarf_lineno) X(dwarf_getsrcfiles)   \
    X(dwarf_getscopes) X(dwarf_tag) X(dwarf_attr) X(dwarf_formudata) X(dwarf_filesrc)
#  define BP__DW_MEMBER(f) __typeof__(f) *f;
#  define BP__DW_NAME(f) BP__SYMBOL_NAME(f),
typedef struct libdw_functions {
    BP__DW_FUNCTIONS(BP__DW_MEMBER)
} libdw_functions;
#endif

/* How frames are named: chosen, and libdw loaded, at the first report that names any (or
 * again after bp__leak_symbolizer_reset in test builds); fixed from then on. */
static struct {
    pthread_mutex_t lock;
    bool chosen;
    bool with_libdw;
    char note[384]; /* for the reports: a setting not understood, why frames lack file:line
                       though libdw was wanted; else "" */
    const char *soname;
#ifdef BP__HAVE_LIBDW
    libdw_functions dw;
    Dwfl_Callbacks callbacks;
#endif
} naming = {.lock = PTHREAD_MUTEX_INITIALIZER, .soname = "libdw.so.1"};

#ifdef BP__HAVE_LIBDW
static bool load_libdw(char *why, size_t len)
{
    static const char *const names[] = {BP__DW_FUNCTIONS(BP__DW_NAME)};
    void *syms[sizeof names / sizeof names[0]];
    if (!load_library(naming.soname, names, syms, sizeof names / sizeof names[0], why, len)) return false;
    size_t i = 0;
#  define BP__DW_SET(f) memcpy(&naming.dw.f, &syms[i++], sizeof naming.dw.f);
    BP__DW_FUNCTIONS(BP__DW_SET)
#  undef BP__DW_SET
    naming.callbacks = (Dwfl_Callbacks){
        .find_elf = naming.dw.dwfl_linux_proc_find_elf,
        .find_debuginfo = naming.dw.dwfl_standard_find_debuginfo,
    };
    return true;
}
#endif

/* Chooses how frames are named (BYTEPOOL_LEAK_SYMBOLIZER: libdw, the default, or dladdr)
 * and loads libdw for the former; true when frames get file:line. Called with naming.lock
 * held. */
static bool choose_naming(void)
{
    if (naming.chosen) return naming.with_libdw;
    naming.chosen = true;
    naming.with_libdw = false;
    naming.note[0] = '\0';
    const char *setting = getenv("BYTEPOOL_LEAK_SYMBOLIZER");
    if (setting != NULL && strcasecmp(setting, "dladdr") == 0) return false;
    const char *invalid = setting != NULL && setting[0] != '\0' && strcasecmp(setting, "libdw") != 0 ? setting : NULL;
    char why[256] = "";
#ifdef BP__HAVE_LIBDW
    if (!load_libdw(why, sizeof why)) snprintf(naming.note, sizeof naming.note, "frames without file:line: %s", why);
    else naming.with_libdw = true;
#endif
    if (invalid != NULL) {
        snprintf(why, sizeof why, "%s", naming.note);
        snprintf(naming.note, sizeof naming.note, "BYTEPOOL_LEAK_SYMBOLIZER=%.32s is neither libdw nor dladdr%s%s",
                 invalid, why[0] != '\0' ? "; " : "", why);
    }
    return naming.with_libdw;
}

#if BP__TESTING
void bp__leak_symbolizer_reset(const char *soname)
{
    pthread_mutex_lock(&naming.lock);
    naming.chosen = false;
    naming.soname = soname != NULL ? soname : "libdw.so.1";
    pthread_mutex_unlock(&naming.lock);
}
#endif

bool bp__leak_has_line_info(void)
{
    pthread_mutex_lock(&naming.lock);
    bool with_libdw = choose_naming();
    pthread_mutex_unlock(&naming.lock);
    return with_libdw;
}

/* One report's view of the process: its modules as libdw found them (dwfl NULL: dladdr). */
typedef struct symbolizer {
    const char *note; /* naming.note */
    void *own_base;   /* where libbytepool.so is loaded; NULL in the static library */
#ifdef BP__HAVE_LIBDW
    const libdw_functions *dw;
    Dwfl *dwfl;
#endif
} symbolizer;

static void symbolizer_open(symbolizer *s)
{
    pthread_mutex_lock(&naming.lock);
    bool with_libdw = choose_naming();
    pthread_mutex_unlock(&naming.lock);
    s->note = naming.note;
    s->own_base = NULL;
#ifndef BP_STATIC_DEFINE
    Dl_info self;
    if (dladdr(&naming, &self) != 0) s->own_base = self.dli_fbase;
#endif
#ifdef BP__HAVE_LIBDW
    s->dw = &naming.dw;
    s->dwfl = with_libdw ? s->dw->dwfl_begin(&naming.callbacks) : NULL;
    if (s->dwfl != NULL) {
        s->dw->dwfl_report_begin(s->dwfl);
        if (s->dw->dwfl_linux_proc_report(s->dwfl, getpid()) != 0 ||
            s->dw->dwfl_report_end(s->dwfl, NULL, NULL) != 0) {
            s->dw->dwfl_end(s->dwfl);
            s->dwfl = NULL;
        }
    }
#else
    (void)with_libdw;
#endif
}

static void symbolizer_close(symbolizer *s)
{
#ifdef BP__HAVE_LIBDW
    if (s->dwfl != NULL) s->dw->dwfl_end(s->dwfl);
#else
    (void)s;
#endif
}

/* A frame as a report shows it: "function (file:line)", "function (module)",
 * "function+0x12 (module)" or "0x1234 (module+0x12)". `function` is NULL when neither libdw
 * nor dladdr knows it (dladdr knows exported functions only); then `own_module` says
 * whether the frame is in libbytepool.so (never for the static library, whose object also
 * holds the program's code). */
typedef struct frame_name {
    char line[512];
    const char *function;
    bool own_module;
} frame_name;

#ifdef BP__HAVE_LIBDW
static bool is_public_header(const char *file)
{
    size_t n = strlen(file);
    return n >= 10 && strcmp(file + n - 10, "bytepool.h") == 0 && (n == 10 || file[n - 11] == '/');
}

/* The compilation unit holding pc. libdw looks it up in .debug_aranges, which clang does
 * not emit unless asked (-gdwarf-aranges): for code of such a unit it finds none, or a
 * neighbour that does not hold pc (a program built with clang and linked with this
 * library built with gcc). Then every unit's own address ranges are searched: a walk over
 * the units per frame, once per report. */
static Dwarf_Die *unit_of(const libdw_functions *dw, Dwfl_Module *module, uintptr_t pc, Dwarf_Addr *bias)
{
    Dwarf_Die *cu = dw->dwfl_module_addrdie(module, pc, bias);
    if (cu != NULL && dw->dwarf_haspc(cu, pc - *bias) == 1) return cu;
    for (cu = NULL; (cu = dw->dwfl_module_nextcu(module, cu, bias)) != NULL;)
        if (dw->dwarf_haspc(cu, pc - *bias) == 1) return cu;
    return NULL;
}

/* An allocation site inside the header's inline bp_alloc (or another inline function of
 * it) would name the header's line; the line to show is where the program called it: the
 * call site of the innermost inlined scope that was called from outside the header. False
 * when the address is in no such scope or the debug information does not say. */
static bool call_site_of_inline(const libdw_functions *dw, Dwarf_Die *cu, Dwarf_Addr address, const char **file,
                                int *lineno)
{
    Dwarf_Files *files = NULL;
    if (dw->dwarf_getsrcfiles(cu, &files, NULL) != 0) return false;
    Dwarf_Die *scopes = NULL;
    int n = dw->dwarf_getscopes(cu, address, &scopes);
    bool found = false;
    for (int i = 0; i < n && !found; i++) { /* innermost first */
        if (dw->dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine) continue;
        Dwarf_Attribute attr;
        Dwarf_Word file_index = 0, line = 0;
        if (dw->dwarf_formudata(dw->dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &file_index) != 0 ||
            dw->dwarf_formudata(dw->dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &line) != 0)
            continue;
        const char *name = dw->dwarf_filesrc(files, file_index, NULL, NULL);
        if (name == NULL || is_public_header(name)) continue; /* called from the header itself */
        *file = name;
        *lineno = (int)line;
        found = true;
    }
    free(scopes);
    return found;
}

/* Names the function at pc through libdw; false when it does not know it. */
static bool name_frame_with_libdw(symbolizer *s, uintptr_t pc, char *out, size_t len, const char **function)
{
    const libdw_functions *dw = s->dw;
    Dwfl_Module *module = dw->dwfl_addrmodule(s->dwfl, pc);
    const char *name = module != NULL ? dw->dwfl_module_addrname(module, pc) : NULL;
    if (name == NULL) return false;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = unit_of(dw, module, pc, &bias);
    Dwarf_Line *line = cu != NULL ? dw->dwarf_getsrc_die(cu, pc - bias) : NULL;
    int lineno = 0;
    const char *file = line != NULL && dw->dwarf_lineno(line, &lineno) == 0 ? dw->dwarf_linesrc(line, NULL, NULL) : NULL;
    if (file != NULL && is_public_header(file)) call_site_of_inline(dw, cu, pc - bias, &file, &lineno);
    *function = name;
    if (file != NULL) snprintf(out, len, "%s (%s:%d)", name, file, lineno);
    else snprintf(out, len, "%s (%s)", name, dw->dwfl_module_info(module, NULL, NULL, NULL, NULL, NULL, NULL, NULL));
    return true;
}
#endif

static void name_frame(symbolizer *s, void *address, frame_name *name)
{
    /* A return address points past the call; look up the call itself. */
    uintptr_t pc = (uintptr_t)address - 1;
    name->function = NULL;
    name->own_module = false;
#ifdef BP__HAVE_LIBDW
    if (s->dwfl != NULL && name_frame_with_libdw(s, pc, name->line, sizeof name->line, &name->function)) return;
#endif
    Dl_info info;
    if (dladdr((void *)pc, &info) == 0) {
        snprintf(name->line, sizeof name->line, "%p", address);
    } else if (info.dli_sname != NULL) {
        name->function = info.dli_sname;
        snprintf(name->line, sizeof name->line, "%s+0x%lx (%s)", info.dli_sname,
                 (unsigned long)(pc - (uintptr_t)info.dli_saddr), info.dli_fname ? info.dli_fname : "?");
    } else {
        name->own_module = info.dli_fbase == s->own_base;
        snprintf(name->line, sizeof name->line, "%p (%s+0x%lx)", address, info.dli_fname ? info.dli_fname : "?",
                 (unsigned long)(pc - (uintptr_t)info.dli_fbase));
    }
}

/* ---- reports ---- */

typedef struct text {
    char *data;
    size_t used, size;
} text;

static void text_add(text *t, const char *fmt, ...) BP__PRINTF(2, 3);

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

/* Whether a frame is bytepool's own or backtrace()'s (sanitizers intercept it). Without
 * libdw, bytepool's internal functions have no name, but in libbytepool.so their object
 * tells. */
static bool is_library_frame(const frame_name *f)
{
    if (f->function == NULL) return f->own_module;
    return strncmp(f->function, "bp_", 3) == 0 || strstr(f->function, "backtrace") != NULL;
}

/* Prints a stack, leaving out the library's frames at the top and the C runtime's at the
 * bottom. */
static void add_stack(text *out, symbolizer *s, void *const *frames, int depth)
{
    int shown = 0;
    bool in_library = true;
    for (int i = 0; i < depth; i++) {
        frame_name name;
        name_frame(s, frames[i], &name);
        if (in_library && is_library_frame(&name)) continue;
        in_library = false;
        if (name.function != NULL && strncmp(name.function, "__libc_start", 12) == 0) break;
        text_add(out, "    #%d %s\n", shown++, name.line);
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
    if (s.note[0] != '\0') text_add(&out, "  (%s)\n", s.note);
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
