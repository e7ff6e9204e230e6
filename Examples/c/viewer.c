/*
 * A viewer in C: connects to a camera by UID through the cloud, receives frames and checks each
 * one (camera.c's pattern), asks for a keyframe once, and prints what arrived.
 *
 *   cc -o viewer viewer.c -I Sources/CTrav/include -L .build/debug -lTravC
 *   ./viewer 127.0.0.1 5349 3478 ca.pem TRAV-XXXX-XXXX-XXXX-XXXX secret 50
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "example_cloud.h"
#include "trav.h"

/* Whether frame bytes follow camera.c's pattern: the frame number, then its low byte repeated. */
static int intact(const uint8_t *frame, size_t len) {
    if (len < 8) return 0;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n = (n << 8) | frame[i];
    for (size_t i = 8; i < len; i++)
        if (frame[i] != (uint8_t)(n & 0xff)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    trav_cloud_settings cloud = {0};
    if (cloud_from_args(argc, argv, "UID PASSWORD FRAMES", &cloud)) return 2;
    int wanted = atoi(argv[7]);

    trav_viewer *viewer = NULL;
    int rc = trav_viewer_connect(&cloud, argv[5], argv[6], 30000, &viewer);
    if (failed("connect", rc)) {
        return 1;
    }
    char path[32];
    trav_viewer_path(viewer, path, sizeof path);
    printf("connected via %s\n", path);

    /* The camera greets each viewer on a channel of its own. */
    trav_channel *channel = NULL;
    if (!failed("channel", trav_viewer_next_channel(viewer, 5000, &channel))) {
        char label[32], greeting[128];
        size_t len = sizeof greeting - 1;
        trav_channel_label(channel, label, sizeof label);
        if (!failed("channel receive", trav_channel_receive(channel, (uint8_t *)greeting, &len, 5000))) {
            greeting[len] = 0;
            printf("channel %s: %s\n", label, greeting);
        }
        trav_channel_close(channel);
    }
    fflush(stdout);

    static uint8_t frame[1 << 20];
    int received = 0, keyframes = 0, broken = 0;
    while (received < wanted) {
        trav_frame_info info;
        rc = trav_viewer_next_frame(viewer, frame, sizeof frame, 5000, &info);
        if (failed("frame", rc)) {
            break;
        }
        received++;
        keyframes += info.keyframe != 0;
        broken += !intact(frame, info.len);
        if (received == 5) failed("keyframe request", trav_viewer_request_keyframe(viewer));
    }
    printf("received %d frames (%d keyframes, %d broken)\n", received, keyframes, broken);
    trav_viewer_close(viewer);
    return received == wanted && broken == 0 && keyframes > 0 ? 0 : 1;
}
