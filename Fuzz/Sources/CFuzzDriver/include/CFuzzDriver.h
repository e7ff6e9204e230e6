#ifndef TRAV_CFUZZDRIVER_H
#define TRAV_CFUZZDRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, for a binary whose own `main` chooses the target (libFuzzer's FuzzerInterface.h).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
