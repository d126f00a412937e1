/* fuzz_cdef.c - libFuzzer target for the cdef parser. Each input is parsed as a cdef and
 * then as a type name into one long-lived database, so that the fuzzer also checks that a
 * failed cdef rolls the database back exactly (counts before and after must match). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ffi_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ctdb *db;
static unsigned long runs;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  char *src = malloc(size + 1);
  if (!src) return 0;
  memcpy(src, data, size);
  src[size] = 0;
  if (!db || ++runs % 4096 == 0) { ctdb_free(db); db = ctdb_new(); }
  int nt = db->nt, nr = db->nr, ns = db->nsym, np = db->np;
  err[0] = 0;
  if (cparse_cdef(db, src, err, sizeof err) != 0) {
    if (!err[0] || db->nt != nt || db->nr != nr || db->nsym != ns || db->np != np) {
      fprintf(stderr, "cdef failed without a message or left state behind: %s\n", err);
      abort();
    }
  }
  int vla;
  nt = db->nt;
  if (cparse_type(db, src, NULL, 0, &vla, err, sizeof err) < 0 && db->nt != nt) abort();
  free(src);
  return 0;
}
