/*
 * trav.h: the C API of trav, for camera firmware and viewer apps written in C.
 *
 * Link with libTravC (the `TravC` product of the trav package). Every call that can fail returns a
 * trav_status: TRAV_OK (0) or a negative code; trav_last_error() then says what went wrong, in words,
 * for the calling thread. Calls that wait take a timeout in milliseconds: 0 polls, a negative value
 * waits without limit. Handles are owned by the caller and released with their *_destroy / *_close
 * function, which also releases every socket, relay allocation and task the handle holds. A handle may
 * be used from any thread, one call at a time per handle.
 *
 *   camera                                          viewer
 *   trav_camera_create(key file, cloud, password)   trav_viewer_connect(cloud, UID, password)
 *   trav_camera_register()                          trav_viewer_next_frame() ...
 *   trav_camera_next_event() -> viewer connected    trav_viewer_request_keyframe()
 *   trav_camera_send_frame(keyframe flag) ...       trav_viewer_close()
 *   trav_camera_next_keyframe_request()
 *   trav_camera_destroy()
 */
#ifndef TRAV_H
#define TRAV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Result of a call: 0 on success, a negative code otherwise. */
typedef enum trav_status {
    TRAV_OK = 0,
    /** An argument is missing or malformed (a NULL handle, an unreadable key file, a bad UID). */
    TRAV_ERR_ARGUMENT = -1,
    /** Nothing happened within the timeout (for a poll: nothing pending). */
    TRAV_ERR_TIMEOUT = -2,
    /** The cloud could not be reached, refused the registration, or misbehaved. */
    TRAV_ERR_CLOUD = -3,
    /** The camera is unknown to the cloud or offline (the two look the same). */
    TRAV_ERR_UNAVAILABLE = -4,
    /** No strategy reached the peer. */
    TRAV_ERR_NO_PATH = -5,
    /** The camera refused the credential, or too many attempts were made. */
    TRAV_ERR_ACCESS_DENIED = -6,
    /** The key reached is not the one behind the UID (someone is in the middle). */
    TRAV_ERR_IDENTITY = -7,
    /** The connection or handle is closed. */
    TRAV_ERR_CLOSED = -8,
    /** The caller's buffer is too small; the size needed was written to the length argument. */
    TRAV_ERR_BUFFER_TOO_SMALL = -9,
    /** Anything else (trav_last_error() says what). */
    TRAV_ERR_INTERNAL = -10
} trav_status;

/** The stable name of a status, e.g. "no-path". Never NULL. */
const char *trav_status_name(int status);

/**
 * The message of the last failed call on this thread (empty if none). Valid until the next call on
 * this thread; copy it to keep it.
 */
const char *trav_last_error(void);

/** Where the cloud is and how to trust it. Unused fields are 0 / NULL. */
typedef struct trav_cloud_settings {
    /** The cloud's host name or IP address (signalling; the STUN server is on the same host). */
    const char *host;
    /** The signalling TLS port; 0: 5349. */
    uint16_t port;
    /** The cloud's STUN port; 0: 3478. */
    uint16_t stun_port;
    /** The cloud's CA certificate as PEM text; or NULL and ca_file. Neither: the system's trust store. */
    const char *ca_pem;
    /** A file holding the cloud's CA certificate (PEM), e.g. the ca.pem `trav cloud` writes. */
    const char *ca_file;
} trav_cloud_settings;

/* ---------------------------------------------------------------------------------------------- */
/* Camera                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/** A camera: its identity, cloud registration, viewers and one media sender for all of them. */
typedef struct trav_camera trav_camera;

/**
 * Loads the device identity from key_file (`trav identity new --out FILE`) and prepares a camera that
 * admits viewers presenting `password`. Nothing is sent until trav_camera_register().
 */
int trav_camera_create(const char *key_file, const trav_cloud_settings *cloud, const char *password,
                       trav_camera **out);

/** Writes the camera's UID (e.g. "TRAV-7QX2-M4KD-P9ZC-H3WA", NUL-terminated) into buf. */
int trav_camera_uid(trav_camera *camera, char *buf, size_t len);

/**
 * Registers with the cloud (waiting at most timeout_ms for the first registration) and starts serving
 * viewers; the registration is then kept alive and re-established across losses.
 */
int trav_camera_register(trav_camera *camera, int timeout_ms);

/** What trav_camera_next_event() reports. */
typedef enum trav_camera_event_kind {
    /** A viewer connected and passed the access check; `viewer` identifies it, `path` says how. */
    TRAV_EVENT_VIEWER_CONNECTED = 1,
    /** An introduction ended without a viewer; `error` and `message` say why. */
    TRAV_EVENT_INTRODUCTION_FAILED = 2,
    /** The registration with the cloud was lost; the camera reconnects by itself. */
    TRAV_EVENT_CLOUD_LOST = 3,
    /** Registered with the cloud again. */
    TRAV_EVENT_CLOUD_BACK = 4,
    /** A viewer's connection ended. */
    TRAV_EVENT_VIEWER_LEFT = 5
} trav_camera_event_kind;

/** One camera event. */
typedef struct trav_camera_event {
    trav_camera_event_kind kind;
    /** The viewer's id (VIEWER_CONNECTED, VIEWER_LEFT), else 0. */
    int viewer;
    /** A trav_status for INTRODUCTION_FAILED, else 0. */
    int error;
    /** The winning strategy (VIEWER_CONNECTED, e.g. "udp-hole-punch"), NUL-terminated. */
    char path[32];
    /** The reason, the route or the observed address, NUL-terminated (may be cut short). */
    char message[192];
} trav_camera_event;

/** The next event, waiting at most timeout_ms (0: poll). TRAV_ERR_TIMEOUT when none came. */
int trav_camera_next_event(trav_camera *camera, int timeout_ms, trav_camera_event *event);

/**
 * Starts media for a connected viewer: opens its media and control channels. From then on it receives
 * every frame trav_camera_send_frame() sends (from the next keyframe on).
 */
int trav_camera_start_media(trav_camera *camera, int viewer);

/**
 * Sends one encoded frame to every viewer with media started. `keyframe` non-zero marks a frame a
 * decoder can start from: a viewer that fell behind skips to the next one. Never blocks: each viewer
 * has its own bounded queue.
 */
int trav_camera_send_frame(trav_camera *camera, const uint8_t *data, size_t len, int keyframe,
                           uint64_t timestamp_us);

/**
 * The next keyframe request from a viewer (it lost frames or just joined), waiting at most timeout_ms.
 * The encoder should make the next frame a keyframe. TRAV_ERR_TIMEOUT when none came.
 */
int trav_camera_next_keyframe_request(trav_camera *camera, int timeout_ms, int *viewer);

/** Number of viewers connected now. */
int trav_camera_viewer_count(trav_camera *camera);

/** Ends the registration, closes every viewer and releases the camera. NULL is ignored. */
void trav_camera_destroy(trav_camera *camera);

/* ---------------------------------------------------------------------------------------------- */
/* Channels (both sides)                                                                          */
/* ---------------------------------------------------------------------------------------------- */

/** A message channel to one peer (reliable and ordered), inside the encrypted session. */
typedef struct trav_channel trav_channel;

/** Opens a reliable channel named `label` to a connected viewer (camera side). */
int trav_camera_open_channel(trav_camera *camera, int viewer, const char *label, int timeout_ms,
                             trav_channel **out);

/** Sends one message (at most 4 MiB) on the channel. */
int trav_channel_send(trav_channel *channel, const uint8_t *data, size_t len);

/**
 * Receives the next message into buf, waiting at most timeout_ms. *len is buf's size on entry and the
 * message's size on return; TRAV_ERR_BUFFER_TOO_SMALL leaves the message queued.
 */
int trav_channel_receive(trav_channel *channel, uint8_t *buf, size_t *len, int timeout_ms);

/** Writes the channel's label, NUL-terminated, into buf. */
int trav_channel_label(trav_channel *channel, char *buf, size_t len);

/** Closes the channel and releases the handle. NULL is ignored. */
void trav_channel_close(trav_channel *channel);

/* ---------------------------------------------------------------------------------------------- */
/* Viewer                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/** A viewer's connection to one camera, receiving its media. */
typedef struct trav_viewer trav_viewer;

/** What trav_viewer_next_frame() tells about a frame. */
typedef struct trav_frame_info {
    /** Bytes written to the buffer. */
    size_t len;
    /** Non-zero for a keyframe. */
    int keyframe;
    /** The camera's timestamp, microseconds. */
    uint64_t timestamp_us;
    /** Milliseconds from the camera's send to arrival (the two clocks' offset included). */
    double latency_ms;
} trav_frame_info;

/**
 * Connects to the camera `uid` through the cloud with every strategy, presenting `password`, and
 * waits for its media channel: at most timeout_ms in all (a negative value: the library's defaults).
 * A fresh, ephemeral viewer identity is used.
 */
int trav_viewer_connect(const trav_cloud_settings *cloud, const char *uid, const char *password,
                        int timeout_ms, trav_viewer **out);

/** Writes the winning strategy's id (e.g. "direct-lan"), NUL-terminated, into buf. */
int trav_viewer_path(trav_viewer *viewer, char *buf, size_t len);

/**
 * The next frame into buf (of size cap), waiting at most timeout_ms. TRAV_ERR_BUFFER_TOO_SMALL leaves
 * the frame queued and sets info->len to its size; TRAV_ERR_CLOSED once the camera is gone.
 */
int trav_viewer_next_frame(trav_viewer *viewer, uint8_t *buf, size_t cap, int timeout_ms,
                           trav_frame_info *info);

/**
 * The next channel the camera opened to this viewer (after its media channel), waiting at most
 * timeout_ms. TRAV_ERR_TIMEOUT when none came.
 */
int trav_viewer_next_channel(trav_viewer *viewer, int timeout_ms, trav_channel **out);

/** Asks the camera for a keyframe (after a loss the application noticed). */
int trav_viewer_request_keyframe(trav_viewer *viewer);

/** Closes the connection and releases the viewer. NULL is ignored. */
void trav_viewer_close(trav_viewer *viewer);

#ifdef __cplusplus
}
#endif

#endif /* TRAV_H */
