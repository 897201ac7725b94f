/*
 * vmap_lib: the vm_alloc/vm_free port of replay.c as a shared library, for ctypes.
 *
 * replay.c is compiled as is (its main renamed), so the placement code fuzzed through this
 * library is byte for byte the code the golden-vector replay checks.  A hypervisor port would
 * export its own allocator the same way: a handle, alloc, free, and the two hints for the
 * stricter comparison.  Build (DIR holds vaalloc_xen.h, written by `vaalloc vectors DIR`):
 *
 *   cc -std=c99 -Wall -Wextra -Werror -O2 -fPIC -shared -I DIR -o libvmap.so vmap_lib.c
 *
 * and fuzz it with vaalloc.testing (docs/testing.md, "Fuzz your port").
 */
#define main vaalloc_replay_main
#include "replay.c"
#undef main

/* A new region [start, end) of granule-byte bits, or NULL when out of memory. */
struct vmap *vmap_lib_create(uint64_t start, uint64_t end, uint64_t granule)
{
    struct vmap *v = calloc(1, sizeof(*v));
    if (v && vmap_init(v, start, end, granule)) {
        free(v);
        v = NULL;
    }
    return v;
}

/* vm_alloc(nr, align): the VA of the first granule, or 0 when nothing fits. */
uint64_t vmap_lib_alloc(struct vmap *v, uint64_t nr, uint64_t align)
{
    return vmap_alloc(v, nr, align);
}

/* vm_free(va): the granules freed, or 0 where Xen would WARN and refuse. */
uint64_t vmap_lib_free(struct vmap *v, uint64_t va) { return vmap_free(v, va); }

uint64_t vmap_lib_vm_low(const struct vmap *v) { return v->vm_low; }

uint64_t vmap_lib_vm_top(const struct vmap *v) { return v->vm_top; }

void vmap_lib_destroy(struct vmap *v)
{
    if (v)
        free(v->bitmap);
    free(v);
}
