#include "trav.h"

const char *trav_status_name(int status) {
    switch (status) {
    case TRAV_OK: return "ok";
    case TRAV_ERR_ARGUMENT: return "argument";
    case TRAV_ERR_TIMEOUT: return "timeout";
    case TRAV_ERR_CLOUD: return "cloud";
    case TRAV_ERR_UNAVAILABLE: return "unavailable";
    case TRAV_ERR_NO_PATH: return "no-path";
    case TRAV_ERR_ACCESS_DENIED: return "access-denied";
    case TRAV_ERR_IDENTITY: return "identity-mismatch";
    case TRAV_ERR_CLOSED: return "closed";
    case TRAV_ERR_BUFFER_TOO_SMALL: return "buffer-too-small";
    case TRAV_ERR_INTERNAL: return "internal";
    default: return "unknown";
    }
}
