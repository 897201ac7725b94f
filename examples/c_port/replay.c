/*
 * replay: a small C port of Xen's vmap placement rules and of the VLPT address arithmetic,
 * checked against the golden vectors that `vaalloc vectors DIR` writes.
 *
 *   cc -std=c99 -Wall -Wextra -O2 -I DIR -o replay replay.c
 *   ./replay DIR/alloc-xen_vmap.txt DIR/alloc-xen_vmap-grow.txt DIR/vlpt.txt
 *
 * DIR/vaalloc_xen.h (generated) supplies the layout constants and the VLPT macros, so this
 * file holds only what a hypervisor port would write by hand: the bitmap allocator
 * (vm_alloc/vm_free as in xen/common/vmap.c) and the range check around the VLPT macros.
 * Each file prints "FILE: N checks, M failed", N counted as `vaalloc vectors` counts them in
 * manifest.json: one per expected value compared (an alloc trace: 3 for the boot state, then 3
 * per op, the result, vm_low and vm_top; a VLPT file: one per third or second record).
 * Exit status 0 when every file ran checks and every expected result matched; 1 when one
 * did not match (every mismatch is printed, one line each); 2 when a file cannot be read, is
 * malformed (the line is printed), or holds no check at all (an empty file proves nothing).
 *
 * Text vector format (see vaalloc/vectors.py): one record per line, fields separated by
 * spaces, numbers in C syntax, '-' for "this call fails", '#' starts a comment.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vaalloc_xen.h"

#define MAX_FIELDS 8
#define NO_VALUE UINT64_MAX /* a '-' field */

/* ---- Xen's vmap allocator (one region) ------------------------------------------------ */

struct vmap {
    uint64_t base;    /* VA of bit 0 */
    uint64_t granule; /* bytes per bit (PAGE_SIZE) */
    uint64_t *bitmap; /* vm_end bits; Xen maps only the pages below vm_top, we allocate all */
    uint64_t vm_low;  /* every bit below vm_low is set */
    uint64_t vm_top;  /* bits covered by the bitmap pages mapped so far */
    uint64_t vm_end;  /* bits in the region */
};

static int test_bit(const struct vmap *v, uint64_t nr)
{
    return (v->bitmap[nr / 64] >> (nr % 64)) & 1;
}

static void set_bit(struct vmap *v, uint64_t nr) { v->bitmap[nr / 64] |= 1ULL << (nr % 64); }

static int test_and_clear_bit(struct vmap *v, uint64_t nr)
{
    int old = test_bit(v, nr);
    v->bitmap[nr / 64] &= ~(1ULL << (nr % 64));
    return old;
}

/* First set (want=1) or clear (want=0) bit in [offset, size), else size. */
static uint64_t find_next(const struct vmap *v, uint64_t size, uint64_t offset, int want)
{
    for (; offset < size; offset++)
        if (test_bit(v, offset) == want)
            return offset;
    return size;
}

static uint64_t pfn_up(uint64_t bytes, uint64_t page) { return (bytes + page - 1) / page; }

/* vm_init_type(): the bitmap lives in the region's first vm_low pages, marked used. */
static int vmap_init(struct vmap *v, uint64_t start, uint64_t end, uint64_t granule)
{
    uint64_t bits_per_page = granule * 8;
    v->base = start;
    v->granule = granule;
    v->vm_end = (end - start) / granule;
    v->vm_low = pfn_up((v->vm_end + 7) / 8, granule);
    v->vm_top = pfn_up((v->vm_low + 7) / 8, granule) * bits_per_page;
    /* Deliberate difference shared with vaalloc: never let vm_top pass vm_end. */
    if (v->vm_top > v->vm_end)
        v->vm_top = v->vm_end;
    v->bitmap = calloc((size_t)(v->vm_end / 64 + 1), sizeof(uint64_t));
    if (!v->bitmap)
        return -1;
    for (uint64_t bit = 0; bit < v->vm_low && bit < v->vm_end; bit++)
        set_bit(v, bit);
    return 0;
}

/* vm_alloc(): first fit above vm_low; a guard bit before (the candidate skips the first free
 * bit of a hole) and after (start + nr < next used bit) every allocation, except that the
 * run may end exactly at vm_top.  Returns the VA, or 0 when nothing fits. */
static uint64_t vmap_alloc(struct vmap *v, uint64_t nr, uint64_t align)
{
    uint64_t start, bit, saved_top = v->vm_top;

    if (!align)
        align = 1;
    else if (align & (align - 1))
        align &= -align; /* ISOLATE_LSB */

    for (;;) {
        start = v->vm_low;
        while (start < v->vm_top) {
            bit = find_next(v, v->vm_top, start + 1, 1);
            start = (start + align) & ~(align - 1);
            if (bit < v->vm_top) {
                if (start + nr < bit)
                    break;
                start = find_next(v, v->vm_top, bit + 1, 0);
            } else {
                if (start + nr <= bit)
                    break;
                start = bit;
            }
        }
        if (start < v->vm_top)
            break;
        if (v->vm_top >= v->vm_end) {
            /* Xen keeps the bitmap pages it mapped; vaalloc's rule is that a failed call
             * changes nothing, so the vectors expect vm_top back where it was. */
            v->vm_top = saved_top;
            return 0;
        }
        v->vm_top += v->granule * 8; /* map one more bitmap page */
        if (v->vm_top > v->vm_end)
            v->vm_top = v->vm_end;
    }

    for (bit = start; bit < start + nr; bit++)
        set_bit(v, bit);
    if (start <= v->vm_low + 2)
        v->vm_low = bit;
    return v->base + start * v->granule;
}

/* vm_index(): the bit of va if it starts a live allocation (bit set, bit before clear). */
static uint64_t vmap_index(const struct vmap *v, uint64_t va)
{
    uint64_t idx;
    if (va < v->base || (va - v->base) % v->granule)
        return 0;
    idx = (va - v->base) / v->granule;
    if (idx * v->granule < v->vm_end / 8 || idx >= v->vm_top || idx < 1)
        return 0;
    return (!test_bit(v, idx - 1) && test_bit(v, idx)) ? idx : 0;
}

/* vm_free(): returns the granules freed, or 0 where Xen would WARN and refuse. */
static uint64_t vmap_free(struct vmap *v, uint64_t va)
{
    uint64_t bit = vmap_index(v, va), first = bit;
    if (!bit)
        return 0;
    if (bit < v->vm_low) {
        v->vm_low = bit - 1;
        while (!test_bit(v, v->vm_low - 1))
            --v->vm_low;
    }
    while (test_and_clear_bit(v, bit))
        if (++bit == v->vm_top)
            break;
    return bit - first;
}

/* ---- VLPT address arithmetic ------------------------------------------------------------ */

/* Is ipa inside the nr gigabytes from first_gb that the slot run shows? */
static int vlpt_covers(uint64_t first_gb, uint64_t nr, uint64_t ipa)
{
    uint64_t gb = ipa >> VAALLOC_FIRST_SHIFT;
    return gb >= first_gb && gb < first_gb + nr;
}

/* ---- the reader ------------------------------------------------------------------------- */

struct record {
    char op[16];
    uint64_t f[MAX_FIELDS];
    int n;
};

static int parse_line(char *line, struct record *r)
{
    char *tok, *end, *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    tok = strtok(line, " \t\r\n");
    if (!tok)
        return 0; /* blank or comment */
    snprintf(r->op, sizeof(r->op), "%s", tok);
    r->n = 0;
    if (!strcmp(r->op, "allocator")) /* the kind is a word, not a number */
        tok = strtok(NULL, " \t\r\n");
    while ((tok = strtok(NULL, " \t\r\n")) != NULL) {
        if (r->n == MAX_FIELDS)
            return -1;
        if (!strcmp(tok, "-")) {
            r->f[r->n++] = NO_VALUE;
            continue;
        }
        if (tok[0] < '0' || tok[0] > '9') /* strtoull would take "-1" or " +1" silently */
            return -1;
        errno = 0;
        r->f[r->n++] = strtoull(tok, &end, 0);
        if (*end || errno == ERANGE || r->f[r->n - 1] == NO_VALUE)
            return -1;
    }
    return 1;
}

struct tally {
    long checks, failures;
};

static void expect(struct tally *t, const char *file, int line, const char *what, uint64_t got,
                   uint64_t want)
{
    t->checks++;
    if (got == want)
        return;
    t->failures++;
    if (want == NO_VALUE)
        printf("%s:%d: %s: got 0x%" PRIx64 ", expected a failure\n", file, line, what, got);
    else if (got == NO_VALUE)
        printf("%s:%d: %s: failed, expected 0x%" PRIx64 "\n", file, line, what, want);
    else
        printf("%s:%d: %s: got 0x%" PRIx64 ", expected 0x%" PRIx64 "\n", file, line, what, got,
               want);
}

static int replay_record(struct vmap *v, int *have_vmap, struct record *r, struct tally *t,
                         const char *file, int line)
{
    if (!strcmp(r->op, "allocator") && r->n == 6) {
        /* One allocator per file, over a non-empty range of whole granules. */
        if (*have_vmap || !r->f[2] || r->f[0] >= r->f[1] || (r->f[1] - r->f[0]) % r->f[2])
            return -1;
        if (vmap_init(v, r->f[0], r->f[1], r->f[2]))
            return -1;
        *have_vmap = 1;
        expect(t, file, line, "boot vm_low", v->vm_low, r->f[3]);
        expect(t, file, line, "boot vm_top", v->vm_top, r->f[4]);
        expect(t, file, line, "boot vm_end", v->vm_end, r->f[5]);
    } else if (!strcmp(r->op, "alloc") && r->n == 5 && *have_vmap && r->f[0]) {
        uint64_t va = vmap_alloc(v, r->f[0], r->f[1]);
        expect(t, file, line, "vm_alloc", va ? va : NO_VALUE, r->f[2]);
        expect(t, file, line, "vm_low", v->vm_low, r->f[3]);
        expect(t, file, line, "vm_top", v->vm_top, r->f[4]);
    } else if (!strcmp(r->op, "free") && r->n == 4 && *have_vmap) {
        uint64_t freed = vmap_free(v, r->f[0]);
        expect(t, file, line, "vm_free", freed ? freed : NO_VALUE, r->f[1]);
        expect(t, file, line, "vm_low", v->vm_low, r->f[2]);
        expect(t, file, line, "vm_top", v->vm_top, r->f[3]);
    } else if (!strcmp(r->op, "third") && r->n == 5) {
        uint64_t got = NO_VALUE;
        if (vlpt_covers(r->f[1], r->f[2], r->f[3]))
            got = VAALLOC_VLPT_THIRD_VA(r->f[0], r->f[1], r->f[3]);
        expect(t, file, line, "third_va", got, r->f[4]);
    } else if (!strcmp(r->op, "second") && r->n == 6) {
        uint64_t got = NO_VALUE;
        /* The loop slot is an input, and must be the one the header was generated with:
         * vectors and header from two different runs are a bad input, not a failed check. */
        if (r->f[0] != VAALLOC_VLPT_LOOP_SLOT) {
            printf("%s:%d: loop slot %" PRIu64 ", but vaalloc_xen.h says %llu\n", file, line,
                   r->f[0], (unsigned long long)VAALLOC_VLPT_LOOP_SLOT);
            return -1;
        }
        if (vlpt_covers(r->f[2], r->f[3], r->f[4]))
            got = VAALLOC_VLPT_SECOND_VA(r->f[0], r->f[1], r->f[2], r->f[4]);
        expect(t, file, line, "second_va", got, r->f[5]);
    } else {
        return -1;
    }
    return 0;
}

static int replay_file(const char *file, struct tally *t)
{
    char buf[512];
    struct record r;
    struct vmap v = {0};
    int have_vmap = 0, line = 0, status = 0, parsed;
    FILE *fp = fopen(file, "r");

    if (!fp) {
        perror(file);
        return 2;
    }
    while (fgets(buf, sizeof(buf), fp)) {
        line++;
        if (!strchr(buf, '\n') && !feof(fp)) { /* longer than any record: not a vector file */
            printf("%s:%d: malformed record (line too long)\n", file, line);
            status = 2;
            break;
        }
        parsed = parse_line(buf, &r);
        if (parsed == 0)
            continue;
        if (parsed < 0 || replay_record(&v, &have_vmap, &r, t, file, line)) {
            printf("%s:%d: malformed record\n", file, line);
            status = 2;
            break;
        }
    }
    if (status == 0 && ferror(fp)) {
        printf("%s: read error\n", file);
        status = 2;
    }
    fclose(fp);
    free(v.bitmap);
    return status;
}

int main(int argc, char **argv)
{
    int worst = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTOR_FILE.txt...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct tally t = {0, 0};
        int status = replay_file(argv[i], &t);
        const char *why = status == 2 ? " (malformed file)" : "";
        if (status == 0 && !t.checks) {
            status = 2; /* nothing was compared: an empty file must not pass */
            why = " (no checks: empty file?)";
        }
        if (status == 0 && t.failures)
            status = 1;
        printf("%s: %ld checks, %ld failed%s\n", argv[i], t.checks, t.failures, why);
        if (status > worst)
            worst = status;
    }
    return worst;
}
