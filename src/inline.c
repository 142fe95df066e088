/* SPDX-License-Identifier: MIT */
/*
 * The external definitions of the inline functions in bytepool.h (C99 inline: exactly
 * one translation unit says `extern inline`), so callers that do not inline them - at -O0,
 * through a function pointer, from another language - link against the library.
 */
#include "bytepool.h"

extern inline bp_allocator *bp_allocator_new(const bp_config *cfg, int *err);
extern inline bp_allocator *bp_allocator_new_unpooled(int *err);
extern inline bp_allocator *bp_allocator_default(void);

#define BP__EXTERN_TYPED(name, type)                                                       \
    extern inline int bp_get_##name(const bp_buf *b, size_t index, type *out);             \
    extern inline int bp_set_##name(bp_buf *b, size_t index, type value);                  \
    extern inline int bp_read_##name(bp_buf *b, type *out);                                \
    extern inline int bp_write_##name(bp_buf *b, type value);

BP__EXTERN_TYPED(u8, uint8_t)
BP__EXTERN_TYPED(i8, int8_t)
BP__EXTERN_TYPED(u16, uint16_t)
BP__EXTERN_TYPED(i16, int16_t)
BP__EXTERN_TYPED(u32, uint32_t)
BP__EXTERN_TYPED(i32, int32_t)
BP__EXTERN_TYPED(u64, uint64_t)
BP__EXTERN_TYPED(i64, int64_t)
BP__EXTERN_TYPED(u16_le, uint16_t)
BP__EXTERN_TYPED(i16_le, int16_t)
BP__EXTERN_TYPED(u32_le, uint32_t)
BP__EXTERN_TYPED(i32_le, int32_t)
BP__EXTERN_TYPED(u64_le, uint64_t)
BP__EXTERN_TYPED(i64_le, int64_t)
BP__EXTERN_TYPED(f32, float)
BP__EXTERN_TYPED(f64, double)
BP__EXTERN_TYPED(f32_le, float)
BP__EXTERN_TYPED(f64_le, double)

extern inline uint64_t bp__bin_state(const bp__tcache_bin *bin);
extern inline bp_buf *bp__bin_hot(const bp__tcache_bin *bin);
extern inline bp_buf *bp__bin_take_hot(bp__tcache_bin *bin, bp_buf *hot, uint64_t state);
extern inline bp_buf *bp__bin_pop(bp__tcache_bin *bin, uint64_t state);
extern inline int bp__bin_push(bp__tcache_bin *bin, bp_buf *b);
extern inline unsigned bp__class_above_4k(size_t size);
extern inline bp_buf *bp__alloc_cached(bp_allocator *a, size_t capacity, size_t max_capacity);
extern inline bp_buf *bp_alloc(bp_allocator *a, size_t capacity);
extern inline int bp__release_cached(bp_buf *b, uint32_t n);
extern inline int bp_release(bp_buf *b);
extern inline size_t bp_capacity(const bp_buf *b);
extern inline size_t bp_max_capacity(const bp_buf *b);
extern inline size_t bp_reader_index(const bp_buf *b);
extern inline size_t bp_writer_index(const bp_buf *b);
extern inline size_t bp_readable_bytes(const bp_buf *b);
extern inline size_t bp_writable_bytes(const bp_buf *b);
extern inline void *bp_data(bp_buf *b, size_t index);
