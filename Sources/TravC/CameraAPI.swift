import CTrav
import Foundation
import Logging
import Media
import Strategies
import Synchronization
import Traversal

/// What a `trav_camera` handle owns: the connector, the registration, the viewers and one media sender.
final class CameraHandle: Sendable {
    /// Events kept for a caller that does not poll; the oldest go first.
    static let eventLimit = 256
    /// Keyframe requests kept; the oldest go first (one is as good as many).
    static let keyframeRequestLimit = 64
    /// How long destroying a camera waits for its viewers to be told goodbye.
    static let closeTimeoutMs: Int32 = 2000

    struct State {
        var session: CameraSession?
        var viewers: [Int32: PeerConnection] = [:]
        /// Media sender viewer id → our viewer id.
        var mediaViewers: [Int: Int32] = [:]
        var tasks: [Task<Void, Never>] = []
        var nextViewer: Int32 = 1
    }

    let connector: Connector
    let access: CameraAccessPolicy
    let media: MediaSender
    let events = BlockingQueue<trav_camera_event>(limit: CameraHandle.eventLimit)
    let keyframes = BlockingQueue<Int32>(limit: CameraHandle.keyframeRequestLimit)
    let state = Mutex(State())

    init(connector: Connector, access: CameraAccessPolicy, logger: Logger) {
        self.connector = connector
        self.access = access
        self.media = MediaSender(logger: logger)
    }

    /// Registers (a C status) and starts the tasks that turn the session's events and keyframe requests into queue entries.
    func register(timeoutMs: Int32) -> Int32 {
        if state.withLock({ $0.session != nil }) { return TRAV_OK.rawValue }
        let connector = self.connector, access = self.access
        let session: CameraSession
        switch blocking(timeoutMs: timeoutMs, { try await connector.startCamera(access: access) }) {
        case .success(let s): session = s
        case .failure(let error): return LastError.set(error)
        }
        let pump = Task { [weak self] in
            for await event in session.events {
                guard let self else { return }
                self.record(event)
            }
        }
        let requests = Task { [weak self, media] in
            for await mediaID in media.keyframeRequests {
                guard let self, let viewer = self.state.withLock({ $0.mediaViewers[mediaID] }) else { continue }
                self.keyframes.push(viewer)
            }
        }
        state.withLock {
            $0.session = session
            $0.tasks += [pump, requests]
        }
        return TRAV_OK.rawValue
    }

    /// Turns a library event into a C event, keeping admitted viewers and watching for them to leave.
    private func record(_ event: CameraEvent) {
        var e = trav_camera_event()
        switch event {
        case .viewerConnected(let connection):
            let id = state.withLock { s -> Int32 in
                let id = s.nextViewer
                s.nextViewer += 1
                s.viewers[id] = connection
                return id
            }
            e.kind = TRAV_EVENT_VIEWER_CONNECTED
            e.viewer = id
            withUnsafeMutableBytes(of: &e.path) { copyCString(connection.path, into: $0.baseAddress!.assumingMemoryBound(to: CChar.self), length: $0.count) }
            setMessage(&e, connection.report.route ?? "")
            // The connection's datagram messages are unused here; reading them tells when it ends.
            let watcher = Task { [weak self] in
                do { for try await _ in connection.inbound {} } catch {}
                self?.viewerLeft(id)
            }
            state.withLock { $0.tasks.append(watcher) }
        case .browserAnswered:
            // Browser sessions live in the application's answerer; the C API reports native viewers.
            return
        case .introductionFailed(let requestID, let error):
            e.kind = TRAV_EVENT_INTRODUCTION_FAILED
            e.error = LastError.status(of: error).rawValue
            setMessage(&e, "\(requestID): \(error.code.name): \(error.detail)")
        case .cloudLost(let reason):
            e.kind = TRAV_EVENT_CLOUD_LOST
            setMessage(&e, reason)
        case .cloudBack(let observed):
            e.kind = TRAV_EVENT_CLOUD_BACK
            setMessage(&e, observed)
        }
        events.push(e)
    }

    private func viewerLeft(_ id: Int32) {
        let gone = state.withLock { s -> Bool in
            s.mediaViewers = s.mediaViewers.filter { $0.value != id }
            return s.viewers.removeValue(forKey: id) != nil
        }
        guard gone else { return }
        var e = trav_camera_event()
        e.kind = TRAV_EVENT_VIEWER_LEFT
        e.viewer = id
        events.push(e)
    }

    private func setMessage(_ e: inout trav_camera_event, _ message: String) {
        withUnsafeMutableBytes(of: &e.message) {
            copyCString(message, into: $0.baseAddress!.assumingMemoryBound(to: CChar.self), length: $0.count)
        }
    }

    /// The connection of viewer `id`, if connected.
    func viewer(_ id: Int32) -> PeerConnection? {
        state.withLock { $0.viewers[id] }
    }

    /// Releases everything: tasks, media, viewers (told goodbye within ``closeTimeoutMs``), the registration.
    func destroy() {
        let (session, viewers, tasks) = state.withLock { s in
            defer { s = State() }
            return (s.session, Array(s.viewers.values), s.tasks)
        }
        for t in tasks { t.cancel() }
        media.stop()
        _ = blocking(timeoutMs: Self.closeTimeoutMs) {
            for v in viewers { await v.close() }
            await session?.stop()
        }
        events.close()
        keyframes.close()
    }
}

/// The handle behind a `trav_camera *`.
private func camera(_ pointer: OpaquePointer?) -> CameraHandle? {
    Handle.object(pointer, as: CameraHandle.self)
}

/// `trav_camera_create`: loads the identity and prepares a camera admitting `password` (see trav.h).
@_cdecl("trav_camera_create")
public func travCameraCreate(_ keyFile: UnsafePointer<CChar>?, _ cloud: UnsafePointer<trav_cloud_settings>?,
                             _ password: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let out, let keyFile = text(keyFile), let cloud, let password = text(password) else {
        return LastError.set(TRAV_ERR_ARGUMENT, "trav_camera_create needs a key file, cloud settings, a password and an out pointer")
    }
    do {
        let logger = Logger(label: "trav.camera")
        let configuration = ConnectorConfiguration(identity: try DeviceIdentity.load(from: keyFile), cloud: try TravCloud(cloud.pointee),
                                                   strategies: StrategyCatalog.all, logger: logger)
        let handle = CameraHandle(connector: Connector(configuration: configuration), access: try .password(password), logger: logger)
        out.pointee = Handle.retain(handle)
        return TRAV_OK.rawValue
    } catch {
        return LastError.set(error)
    }
}

/// `trav_camera_uid`: the camera's UID into `buf`.
@_cdecl("trav_camera_uid")
public func travCameraUID(_ pointer: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ len: Int) -> Int32 {
    guard let handle = camera(pointer), let buf, len > 0 else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera or buffer") }
    let uid = handle.connector.configuration.identity.deviceID.description
    guard uid.utf8.count < len else { return LastError.set(TRAV_ERR_BUFFER_TOO_SMALL, "a UID needs \(uid.utf8.count + 1) bytes") }
    copyCString(uid, into: buf, length: len)
    return TRAV_OK.rawValue
}

/// `trav_camera_register`: registers with the cloud and starts serving viewers.
@_cdecl("trav_camera_register")
public func travCameraRegister(_ pointer: OpaquePointer?, _ timeoutMs: Int32) -> Int32 {
    guard let handle = camera(pointer) else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera") }
    return handle.register(timeoutMs: timeoutMs)
}

/// `trav_camera_next_event`: the next camera event, waiting at most `timeoutMs`.
@_cdecl("trav_camera_next_event")
public func travCameraNextEvent(_ pointer: OpaquePointer?, _ timeoutMs: Int32, _ event: UnsafeMutablePointer<trav_camera_event>?) -> Int32 {
    guard let handle = camera(pointer), let event else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera or event") }
    return handle.events.take(timeoutMs: timeoutMs, what: "event", ended: "the camera is destroyed") { e in
        event.pointee = e
        return TRAV_OK.rawValue
    }
}

/// `trav_camera_start_media`: opens viewer `viewer`'s media channels and feeds it frames from now on.
@_cdecl("trav_camera_start_media")
public func travCameraStartMedia(_ pointer: OpaquePointer?, _ viewer: Int32) -> Int32 {
    guard let handle = camera(pointer) else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera") }
    guard let connection = handle.viewer(viewer) else { return LastError.set(TRAV_ERR_CLOSED, "no viewer \(viewer)") }
    let media = handle.media
    switch blocking(timeoutMs: Int32(Connector.accessTimeout.milliseconds), { try await media.add(connection) }) {
    case .success(let fed):
        handle.state.withLock { $0.mediaViewers[fed.id] = viewer }
        return TRAV_OK.rawValue
    case .failure(let error):
        return LastError.set(error)
    }
}

/// `trav_camera_send_frame`: offers one encoded frame to every viewer with media.
@_cdecl("trav_camera_send_frame")
public func travCameraSendFrame(_ pointer: OpaquePointer?, _ data: UnsafePointer<UInt8>?, _ len: Int, _ keyframe: Int32,
                                _ timestampMicros: UInt64) -> Int32 {
    guard let handle = camera(pointer), let data, len > 0 else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera or frame") }
    guard len <= PeerChannel.maxMessageSize - MediaPacket.headerLength else {
        return LastError.set(TRAV_ERR_ARGUMENT, "a frame may have at most \(PeerChannel.maxMessageSize - MediaPacket.headerLength) bytes")
    }
    let bytes = Array(UnsafeBufferPointer(start: data, count: len))
    handle.media.send(MediaFrame(kind: .video, timestamp: .microseconds(Int64(clamping: timestampMicros)), isKeyframe: keyframe != 0, data: bytes))
    return TRAV_OK.rawValue
}

/// `trav_camera_next_keyframe_request`: the next viewer asking for a keyframe.
@_cdecl("trav_camera_next_keyframe_request")
public func travCameraNextKeyframeRequest(_ pointer: OpaquePointer?, _ timeoutMs: Int32, _ viewer: UnsafeMutablePointer<Int32>?) -> Int32 {
    guard let handle = camera(pointer) else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera") }
    return handle.keyframes.take(timeoutMs: timeoutMs, what: "keyframe request", ended: "the camera is destroyed") { id in
        viewer?.pointee = id
        return TRAV_OK.rawValue
    }
}

/// `trav_camera_viewer_count`: viewers connected now.
@_cdecl("trav_camera_viewer_count")
public func travCameraViewerCount(_ pointer: OpaquePointer?) -> Int32 {
    guard let handle = camera(pointer) else { return LastError.set(TRAV_ERR_ARGUMENT, "no camera") }
    return Int32(handle.state.withLock { $0.viewers.count })
}

/// `trav_camera_open_channel`: opens a reliable channel to viewer `viewer`.
@_cdecl("trav_camera_open_channel")
public func travCameraOpenChannel(_ pointer: OpaquePointer?, _ viewer: Int32, _ label: UnsafePointer<CChar>?, _ timeoutMs: Int32,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let handle = camera(pointer), let label = text(label), let out else {
        return LastError.set(TRAV_ERR_ARGUMENT, "no camera, label or out pointer")
    }
    guard let connection = handle.viewer(viewer) else { return LastError.set(TRAV_ERR_CLOSED, "no viewer \(viewer)") }
    switch blocking(timeoutMs: timeoutMs, { try await connection.openChannel(label: label, delivery: .reliable) }) {
    case .success(let channel):
        out.pointee = Handle.retain(ChannelHandle(channel))
        return TRAV_OK.rawValue
    case .failure(let error):
        return LastError.set(error)
    }
}

/// `trav_camera_destroy`: ends the registration, closes every viewer, releases the camera.
@_cdecl("trav_camera_destroy")
public func travCameraDestroy(_ pointer: OpaquePointer?) {
    Handle.release(pointer) { (handle: CameraHandle) in handle.destroy() }
}

/// `trav_last_error`: the calling thread's last error message.
@_cdecl("trav_last_error")
public func travLastError() -> UnsafePointer<CChar> {
    LastError.current
}
