// usrsctp (Debian libusrsctp-dev) for Swift, plus small helpers that fill the option structs.
#ifndef TRAV_CUSRSCTP_SHIM_H
#define TRAV_CUSRSCTP_SHIM_H
#ifndef INET
#define INET 1
#endif
#ifndef INET6
#define INET6 1
#endif
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <usrsctp.h>

/// The address family of callback-connected associations.
static const int trav_af_conn = AF_CONN;

/// Frees a buffer that usrsctp handed to a receive callback (the callee owns it).
static inline void trav_sctp_free(void *data) { free(data); }

/// The calling thread's errno.
static inline int trav_errno(void) { return errno; }

/// Fills an AF_CONN address for `addr` (an opaque association key) and `port`.
static inline struct sockaddr_conn trav_sconn(void *addr, uint16_t port) {
    struct sockaddr_conn s;
    memset(&s, 0, sizeof(s));
    s.sconn_family = AF_CONN;
    s.sconn_port = htons(port);
    s.sconn_addr = addr;
    return s;
}

/// Binds (local) or connects (remote) an AF_CONN socket; returns 0 or -1 with errno.
static inline int trav_sctp_bind(struct socket *so, void *addr, uint16_t port) {
    struct sockaddr_conn s = trav_sconn(addr, port);
    return usrsctp_bind(so, (struct sockaddr *)&s, sizeof(s));
}
static inline int trav_sctp_connect(struct socket *so, void *addr, uint16_t port) {
    struct sockaddr_conn s = trav_sconn(addr, port);
    return usrsctp_connect(so, (struct sockaddr *)&s, sizeof(s));
}

/// Sets an int socket option.
static inline int trav_sctp_set_int(struct socket *so, int level, int name, int value) {
    return usrsctp_setsockopt(so, level, name, &value, sizeof(value));
}

/// Applies the options every trav association uses; returns 0 or the first failing option's number.
/// `heartbeats` 0 turns SCTP heartbeats off (a session without keepalives must really go quiet when idle).
static inline int trav_sctp_configure(struct socket *so, void *addr, uint32_t path_mtu, int sndbuf, int rcvbuf,
                                      uint32_t rto_initial, uint32_t rto_min, uint32_t rto_max,
                                      uint16_t streams, uint16_t max_init_attempts, int heartbeats) {
    if (usrsctp_set_non_blocking(so, 1) < 0) return 1;
    struct linger l = {1, 0};
    if (usrsctp_setsockopt(so, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) < 0) return 2;
    if (trav_sctp_set_int(so, SOL_SOCKET, SO_SNDBUF, sndbuf) < 0) return 3;
    if (trav_sctp_set_int(so, SOL_SOCKET, SO_RCVBUF, rcvbuf) < 0) return 4;
    if (trav_sctp_set_int(so, IPPROTO_SCTP, SCTP_NODELAY, 1) < 0) return 5;
    if (trav_sctp_set_int(so, IPPROTO_SCTP, SCTP_EXPLICIT_EOR, 0) < 0) return 6;
    // Messages are handed over whole: partial delivery only for messages larger than the receive buffer.
    if (trav_sctp_set_int(so, IPPROTO_SCTP, SCTP_PARTIAL_DELIVERY_POINT, rcvbuf) < 0) return 13;
    struct sctp_assoc_value reset = { SCTP_ALL_ASSOC, SCTP_ENABLE_RESET_STREAM_REQ };
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_ENABLE_STREAM_RESET, &reset, sizeof(reset)) < 0) return 7;
    struct sctp_initmsg init;
    memset(&init, 0, sizeof(init));
    init.sinit_num_ostreams = streams;
    init.sinit_max_instreams = streams;
    init.sinit_max_attempts = max_init_attempts;
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_INITMSG, &init, sizeof(init)) < 0) return 8;
    struct sctp_rtoinfo rto = { 0, rto_initial, rto_max, rto_min };
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RTOINFO, &rto, sizeof(rto)) < 0) return 9;
    struct sctp_paddrparams pp;
    memset(&pp, 0, sizeof(pp));
    struct sockaddr_conn *sc = (struct sockaddr_conn *)&pp.spp_address;
    sc->sconn_family = AF_CONN;
    sc->sconn_addr = addr;
    pp.spp_assoc_id = 0;
    pp.spp_flags = SPP_PMTUD_DISABLE | (heartbeats ? SPP_HB_ENABLE : SPP_HB_DISABLE);
    pp.spp_pathmtu = path_mtu;
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &pp, sizeof(pp)) < 0) return 10;
    struct sctp_assoc_value ss = { SCTP_FUTURE_ASSOC, SCTP_SS_PRIORITY };
    if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PLUGGABLE_SS, &ss, sizeof(ss)) < 0) return 11;
    uint16_t events[] = { SCTP_ASSOC_CHANGE, SCTP_STREAM_RESET_EVENT, SCTP_SEND_FAILED_EVENT };
    for (unsigned i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        struct sctp_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.se_assoc_id = SCTP_ALL_ASSOC;
        ev.se_on = 1;
        ev.se_type = events[i];
        if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_EVENT, &ev, sizeof(ev)) < 0) return 12;
    }
    return 0;
}

/// Sets the path MTU of the association's one path (PMTU discovery off: the transport's limit is known).
static inline int trav_sctp_set_mtu(struct socket *so, void *addr, uint32_t path_mtu, int heartbeats) {
    struct sctp_paddrparams pp;
    memset(&pp, 0, sizeof(pp));
    struct sockaddr_conn *sc = (struct sockaddr_conn *)&pp.spp_address;
    sc->sconn_family = AF_CONN;
    sc->sconn_addr = addr;
    pp.spp_flags = SPP_PMTUD_DISABLE | (heartbeats ? SPP_HB_ENABLE : SPP_HB_DISABLE);
    pp.spp_pathmtu = path_mtu;
    return usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &pp, sizeof(pp));
}

/// Sets the association's retransmission timer bounds in ms (a session that moved between a stream and a
/// datagram path); 0 leaves a value as it is.
static inline int trav_sctp_set_rto(struct socket *so, uint32_t rto_initial, uint32_t rto_min, uint32_t rto_max) {
    struct sctp_rtoinfo rto = { SCTP_CURRENT_ASSOC, rto_initial, rto_max, rto_min };
    return usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RTOINFO, &rto, sizeof(rto));
}

/// Reads the association's retransmission timer bounds in ms; returns 0, or -1 with errno.
static inline int trav_sctp_get_rto(struct socket *so, uint32_t *rto_initial, uint32_t *rto_min, uint32_t *rto_max) {
    struct sctp_rtoinfo rto;
    memset(&rto, 0, sizeof(rto));
    rto.srto_assoc_id = SCTP_CURRENT_ASSOC;
    socklen_t len = sizeof(rto);
    if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_RTOINFO, &rto, &len) < 0) return -1;
    *rto_initial = rto.srto_initial;
    *rto_min = rto.srto_min;
    *rto_max = rto.srto_max;
    return 0;
}

/// Sets a stream's priority for the priority scheduler (lower value: sent first).
static inline int trav_sctp_set_stream_priority(struct socket *so, uint16_t sid, uint16_t value) {
    struct sctp_stream_value v = { SCTP_CURRENT_ASSOC, sid, value };
    return usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_SS_VALUE, &v, sizeof(v));
}

/// Sends one whole message on stream `sid` with payload protocol `ppid` (host order); `pr_policy` 0 is
/// fully reliable (trav never passes it: see SCTPAssociation.send), else SCTP_PR_SCTP_TTL (value: ms) or
/// SCTP_PR_SCTP_RTX (value: retransmissions).
/// Returns the bytes sent, or -1 with errno (EWOULDBLOCK: the send buffer has no room for it).
static inline ssize_t trav_sctp_send(struct socket *so, const void *data, size_t len, uint16_t sid, uint32_t ppid,
                                     int unordered, uint16_t pr_policy, uint32_t pr_value) {
    struct sctp_sendv_spa spa;
    memset(&spa, 0, sizeof(spa));
    spa.sendv_flags = SCTP_SEND_SNDINFO_VALID;
    spa.sendv_sndinfo.snd_sid = sid;
    spa.sendv_sndinfo.snd_ppid = htonl(ppid);
    spa.sendv_sndinfo.snd_flags = SCTP_EOR | (unordered ? SCTP_UNORDERED : 0);
    if (pr_policy != 0) {
        spa.sendv_flags |= SCTP_SEND_PRINFO_VALID;
        spa.sendv_prinfo.pr_policy = pr_policy;
        spa.sendv_prinfo.pr_value = pr_value;
    }
    return usrsctp_sendv(so, data, len, NULL, 0, &spa, (socklen_t)sizeof(spa), SCTP_SENDV_SPA, 0);
}

/// Resets (closes) the outgoing side of stream `sid` (RFC 6525; RFC 8831 §6.7 closes a data channel so).
static inline int trav_sctp_reset_stream(struct socket *so, uint16_t sid) {
    size_t size = sizeof(struct sctp_reset_streams) + sizeof(uint16_t);
    struct sctp_reset_streams *srs = (struct sctp_reset_streams *)calloc(1, size);
    if (srs == NULL) return -1;
    srs->srs_assoc_id = SCTP_ALL_ASSOC;
    srs->srs_flags = SCTP_STREAM_RESET_OUTGOING;
    srs->srs_number_streams = 1;
    srs->srs_stream_list[0] = sid;
    int r = usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RESET_STREAMS, srs, (socklen_t)size);
    free(srs);
    return r;
}

/// The association's smoothed round-trip time, congestion window and path MTU, or -1 when there is no association.
static inline int trav_sctp_status(struct socket *so, uint32_t *srtt, uint32_t *cwnd, uint32_t *mtu, uint32_t *rwnd) {
    struct sctp_status st;
    memset(&st, 0, sizeof(st));
    socklen_t len = sizeof(st);
    if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_STATUS, &st, &len) < 0) return -1;
    *srtt = st.sstat_primary.spinfo_srtt;
    *cwnd = st.sstat_primary.spinfo_cwnd;
    *mtu = st.sstat_primary.spinfo_mtu;
    *rwnd = st.sstat_rwnd;
    return 0;
}

/// The stack's process-wide loss-recovery counters (usrsctp's `struct sctpstat`): T3-rtx expiries, fast
/// retransmitted DATA chunks, all retransmitted DATA chunks, duplicate DATA chunks received.
static inline void trav_sctp_counters(uint32_t *t3, uint32_t *fast, uint32_t *retransmitted, uint32_t *duplicates) {
    struct sctpstat st;
    memset(&st, 0, sizeof(st));
    usrsctp_get_stat(&st);
    *t3 = st.sctps_timodata;
    *fast = st.sctps_sendfastretrans;
    *retransmitted = st.sctps_sendretransdata;
    *duplicates = st.sctps_recvdupdata;
}

/// Whether the association negotiated PR-SCTP (RFC 3758): 1 or 0, or -1 when there is no association.
static inline int trav_sctp_pr_supported(struct socket *so) {
    struct sctp_assoc_value av;
    memset(&av, 0, sizeof(av));
    av.assoc_id = SCTP_CURRENT_ASSOC;
    socklen_t len = sizeof(av);
    if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_PR_SUPPORTED, &av, &len) < 0) return -1;
    return av.assoc_value != 0;
}

/// Reads a notification's type, and for association changes its state.
static inline uint16_t trav_sctp_notification_type(const void *data) {
    return ((const union sctp_notification *)data)->sn_header.sn_type;
}
static inline uint16_t trav_sctp_assoc_change_state(const void *data) {
    return ((const union sctp_notification *)data)->sn_assoc_change.sac_state;
}
/// A stream reset event's flags and stream list (count from the length).
static inline uint16_t trav_sctp_stream_reset_flags(const void *data) {
    return ((const union sctp_notification *)data)->sn_strreset_event.strreset_flags;
}
static inline size_t trav_sctp_stream_reset_count(const void *data) {
    const struct sctp_stream_reset_event *e = &((const union sctp_notification *)data)->sn_strreset_event;
    if (e->strreset_length < sizeof(struct sctp_stream_reset_event)) return 0;
    return (e->strreset_length - sizeof(struct sctp_stream_reset_event)) / sizeof(uint16_t);
}
static inline uint16_t trav_sctp_stream_reset_stream(const void *data, size_t i) {
    return ((const union sctp_notification *)data)->sn_strreset_event.strreset_stream_list[i];
}
#endif
