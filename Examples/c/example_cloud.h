/* What both examples share: the cloud settings from their first four arguments (HOST PORT STUN_PORT
 * CA_FILE), and how a failed call is reported. */
#ifndef EXAMPLE_CLOUD_H
#define EXAMPLE_CLOUD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "trav.h"

/* Reads HOST PORT STUN_PORT CA_FILE and three more arguments into `cloud`; 0, or 2 after printing
 * the usage (`rest` names the three) when the count is wrong. */
static int cloud_from_args(int argc, char **argv, const char *rest, trav_cloud_settings *cloud) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT STUN_PORT CA_FILE %s\n", argv[0], rest);
        return 2;
    }
    cloud->host = argv[1];
    cloud->port = (uint16_t)atoi(argv[2]);
    cloud->stun_port = (uint16_t)atoi(argv[3]);
    cloud->ca_file = argv[4];
    return 0;
}

/* Prints a failed call as "what: status-name: message" on stderr; returns rc, so `if (failed(...))` reads. */
static int failed(const char *what, int rc) {
    if (rc != TRAV_OK) fprintf(stderr, "%s: %s: %s\n", what, trav_status_name(rc), trav_last_error());
    return rc;
}

#endif
