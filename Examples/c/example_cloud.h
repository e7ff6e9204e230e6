/* The cloud settings both examples take as their first four arguments: HOST PORT STUN_PORT CA_FILE. */
#ifndef EXAMPLE_CLOUD_H
#define EXAMPLE_CLOUD_H

#include <stdint.h>
#include <stdlib.h>

#include "trav.h"

static trav_cloud_settings cloud_from_args(char **args) {
    trav_cloud_settings cloud = {0};
    cloud.host = args[0];
    cloud.port = (uint16_t)atoi(args[1]);
    cloud.stun_port = (uint16_t)atoi(args[2]);
    cloud.ca_file = args[3];
    return cloud;
}

#endif
