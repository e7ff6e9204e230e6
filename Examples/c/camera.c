/*
 * A camera in C: registers with the cloud, admits viewers with a password, and streams synthetic
 * frames (a keyframe every second, or at once when a viewer asks) until its viewers have left.
 *
 *   cc -o camera camera.c -I Sources/CTrav/include -L .build/debug -lTravC
 *   ./camera 127.0.0.1 5349 3478 ca.pem camera.key secret 30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example_cloud.h"
#include "trav.h"

enum { FRAME_BYTES = 4000, FRAMES_PER_SECOND = 25 };

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Frame n: its number (8 bytes, big-endian), then n's low byte repeated; the viewer checks both. */
static void make_frame(uint8_t *frame, uint64_t n) {
    for (int i = 0; i < 8; i++) frame[i] = (uint8_t)(n >> (56 - 8 * i));
    memset(frame + 8, (int)(n & 0xff), FRAME_BYTES - 8);
}

/* Opens a "hello" channel to the viewer and sends one greeting on it. */
static void greet(trav_camera *camera, int viewer, const char *uid) {
    trav_channel *channel = NULL;
    if (failed("open channel", trav_camera_open_channel(camera, viewer, "hello", 5000, &channel))) return;
    char greeting[96];
    snprintf(greeting, sizeof greeting, "hello from %s", uid);
    failed("channel send", trav_channel_send(channel, (const uint8_t *)greeting, strlen(greeting)));
    trav_channel_close(channel);
}

int main(int argc, char **argv) {
    trav_cloud_settings cloud = {0};
    if (cloud_from_args(argc, argv, "KEY_FILE PASSWORD SECONDS", &cloud)) return 2;
    int seconds = atoi(argv[7]);

    trav_camera *camera = NULL;
    if (failed("create", trav_camera_create(argv[5], &cloud, argv[6], &camera))) return 1;
    char uid[64];
    trav_camera_uid(camera, uid, sizeof uid);
    if (failed("register", trav_camera_register(camera, 20000))) {
        trav_camera_destroy(camera);
        return 1;
    }
    printf("camera %s registered\n", uid);
    fflush(stdout);

    static uint8_t frame[FRAME_BYTES];
    uint64_t started = now_us(), next_frame = started, n = 0;
    int served = 0, want_keyframe = 1;
    while (now_us() - started < (uint64_t)seconds * 1000000u) {
        trav_camera_event event;
        while (trav_camera_next_event(camera, 0, &event) == TRAV_OK) {
            switch (event.kind) {
            case TRAV_EVENT_VIEWER_CONNECTED:
                printf("viewer %d connected via %s\n", event.viewer, event.path);
                failed("start media", trav_camera_start_media(camera, event.viewer));
                greet(camera, event.viewer, uid);
                served = 1;
                break;
            case TRAV_EVENT_VIEWER_LEFT:
                printf("viewer %d left\n", event.viewer);
                break;
            case TRAV_EVENT_INTRODUCTION_FAILED:
                printf("introduction failed: %s: %s\n", trav_status_name(event.error), event.message);
                break;
            case TRAV_EVENT_CLOUD_LOST:
                printf("cloud lost: %s\n", event.message);
                break;
            case TRAV_EVENT_CLOUD_BACK:
                printf("cloud back: %s\n", event.message);
                break;
            }
            fflush(stdout);
        }
        int viewer;
        while (trav_camera_next_keyframe_request(camera, 0, &viewer) == TRAV_OK) want_keyframe = 1;
        if (served && trav_camera_viewer_count(camera) == 0) break;

        if (now_us() >= next_frame) {
            int keyframe = want_keyframe || n % FRAMES_PER_SECOND == 0;
            make_frame(frame, n);
            failed("send", trav_camera_send_frame(camera, frame, sizeof frame, keyframe, now_us() - started));
            want_keyframe = 0;
            n++;
            next_frame += 1000000u / FRAMES_PER_SECOND;
        }
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    printf("camera sent %llu frames\n", (unsigned long long)n);
    trav_camera_destroy(camera);
    return served ? 0 : 1;
}
