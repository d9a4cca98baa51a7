// Test plugin in C: keeps records whose value does not start with "drop", drops the rest.
//
// The bindings in gen/ are generated from wit/processor.wit; see README.md to regenerate and
// build. Ownership follows the canonical ABI: arguments belong to the callee (free them), and
// results are freed by the generated post-return functions (so they must come from malloc).

#include <stdlib.h>
#include <string.h>

#include "processor.h"

static bool starts_with_drop(const processor_option_list_u8_t *value) {
  return value->is_some && value->val.len >= 4 && memcmp(value->val.ptr, "drop", 4) == 0;
}

bool exports_processor_init(processor_string_t *config, processor_string_t *err) {
  (void)err;
  processor_string_free(config);
  return true;
}

void exports_processor_process(processor_batch_t *batch, processor_list_outcome_t *ret) {
  size_t n = batch->records.len;
  // One byte for an empty batch: malloc(0) may return NULL, which would read as failure.
  processor_outcome_t *out = malloc(n ? n * sizeof *out : 1);
  if (out == NULL) {
    abort();
  }
  for (size_t i = 0; i < n; i++) {
    out[i].tag = starts_with_drop(&batch->records.ptr[i].value) ? SLUICE_PLUGIN_TYPES_OUTCOME_DROP
                                                                  : SLUICE_PLUGIN_TYPES_OUTCOME_KEEP;
  }
  ret->ptr = out;
  ret->len = n;
  processor_batch_free(batch);
}

void exports_processor_tick(int64_t now_ms, processor_list_output_record_t *ret) {
  (void)now_ms;
  ret->ptr = NULL;
  ret->len = 0;
}

void exports_processor_snapshot(processor_list_u8_t *ret) {
  ret->ptr = NULL;
  ret->len = 0;
}

bool exports_processor_restore(processor_list_u8_t *state, processor_string_t *err) {
  (void)err;
  processor_list_u8_free(state);
  return true;
}
