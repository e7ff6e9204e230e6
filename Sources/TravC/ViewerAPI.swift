import CTrav
import Foundation
import Logging
import Media
import Strategies
import Synchronization
import Traversal

/// What a `trav_channel` handle owns: the channel and the task moving its messages to a queue.
final class ChannelHandle: Sendable {
    /// Messages kept for a caller that does not read; beyond it the oldest go (the channel's own
    /// receive buffer, `PeerChannel/receiveBufferLimit`, bounds the bytes before that).
    static let messageLimit = 1024

    let channel: PeerChannel
    let messages = BlockingQueue<[UInt8]>(limit: ChannelHandle.messageLimit)
    private let pump: Task<Void, Never>

    init(_ channel: PeerChannel) {
        self.channel = channel
        pump = messages.fill(from: channel.messages)
    }

    /// Stops reading and closes the channel.
    func close() {
        pump.cancel()
        channel.close()
        messages.close()
    }
}

/// What a `trav_viewer` handle owns: the connection, its media receiver, and the frames not yet read.
final class ViewerHandle: Sendable {
    /// Frames kept for a caller that does not read; beyond it the oldest go.
    static let frameLimit = 256

    /// Channels from the camera kept until the caller takes them; beyond it the oldest go (and close).
    static let channelLimit = 64

    let connection: PeerConnection
    let receiver: MediaReceiver
    let frames = BlockingQueue<MediaReceiver.Received>(limit: ViewerHandle.frameLimit)
    let channels = BlockingQueue<PeerChannel>(limit: ViewerHandle.channelLimit)
    private let pump: Task<Void, Never>
    private let channelPump: Task<Void, Never>

    init(connection: PeerConnection, receiver: MediaReceiver) {
        self.connection = connection
        self.receiver = receiver
        pump = frames.fill(from: receiver.frames)
        // The media receiver has taken the media channel; the camera's later channels come here.
        channelPump = channels.fill(from: connection.incomingChannels)
    }

    /// Stops receiving and closes the connection, telling the camera.
    func close() {
        pump.cancel()
        channelPump.cancel()
        receiver.stop()
        let connection = self.connection
        _ = blocking(timeoutMs: CameraHandle.closeTimeoutMs) { await connection.close() }
        frames.close()
    }
}

private func channel(_ pointer: OpaquePointer?) -> ChannelHandle? {
    Handle.object(pointer, as: ChannelHandle.self)
}

private func viewer(_ pointer: OpaquePointer?) -> ViewerHandle? {
    Handle.object(pointer, as: ViewerHandle.self)
}

/// `trav_channel_send`: sends one message.
@_cdecl("trav_channel_send")
public func travChannelSend(_ pointer: OpaquePointer?, _ data: UnsafePointer<UInt8>?, _ len: Int) -> Int32 {
    guard let handle = channel(pointer), let data, len >= 0 else { return LastError.set(TRAV_ERR_ARGUMENT, "no channel or data") }
    let bytes = Array(UnsafeBufferPointer(start: data, count: len))
    let ch = handle.channel
    return blockingStatus(timeoutMs: -1) { try await ch.send(bytes) }
}

/// `trav_channel_receive`: the next message into `buf`, waiting at most `timeoutMs`.
@_cdecl("trav_channel_receive")
public func travChannelReceive(_ pointer: OpaquePointer?, _ buf: UnsafeMutablePointer<UInt8>?, _ len: UnsafeMutablePointer<Int>?,
                               _ timeoutMs: Int32) -> Int32 {
    guard let handle = channel(pointer), let buf, let len else { return LastError.set(TRAV_ERR_ARGUMENT, "no channel, buffer or length") }
    return handle.messages.take(timeoutMs: timeoutMs, what: "message", ended: "the channel is closed") { m in
        guard m.count <= len.pointee else {
            handle.messages.pushFront(m)
            len.pointee = m.count
            return LastError.set(TRAV_ERR_BUFFER_TOO_SMALL, "the message has \(m.count) bytes")
        }
        m.withUnsafeBufferPointer { if let base = $0.baseAddress { buf.update(from: base, count: m.count) } }
        len.pointee = m.count
        return TRAV_OK.rawValue
    }
}

/// `trav_channel_label`: the channel's label into `buf`.
@_cdecl("trav_channel_label")
public func travChannelLabel(_ pointer: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ len: Int) -> Int32 {
    writeText(channel(pointer)?.channel.label, into: buf, length: len, what: "channel")
}

/// `trav_channel_close`: closes the channel and releases the handle.
@_cdecl("trav_channel_close")
public func travChannelClose(_ pointer: OpaquePointer?) {
    Handle.release(pointer) { (handle: ChannelHandle) in handle.close() }
}

/// `trav_viewer_connect`: connects to camera `uid` through the cloud and waits for its media channel.
@_cdecl("trav_viewer_connect")
public func travViewerConnect(_ cloud: UnsafePointer<trav_cloud_settings>?, _ uid: UnsafePointer<CChar>?, _ password: UnsafePointer<CChar>?,
                              _ timeoutMs: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let cloud, let uid = text(uid), let out else {
        return LastError.set(TRAV_ERR_ARGUMENT, "trav_viewer_connect needs cloud settings, a UID and an out pointer")
    }
    let credential: AccessCredential = text(password).map { .password($0) } ?? .pairedKey
    let connector: Connector
    let device: DeviceID
    do {
        let configuration = ConnectorConfiguration(identity: .ephemeral(), cloud: try TravCloud(cloud.pointee), strategies: StrategyCatalog.all,
                                                   logger: Logger(label: "trav.viewer"))
        connector = Connector(configuration: configuration)
        device = try DeviceID(uid)
    } catch {
        return LastError.set(error)
    }
    let connected = blocking(timeoutMs: timeoutMs) { () async throws -> ViewerHandle in
        let connection = try await connector.connect(to: device, credential: credential)
        do {
            return ViewerHandle(connection: connection, receiver: try await MediaReceiver(connection: connection))
        } catch {
            await connection.close()
            throw error
        }
    }
    switch connected {
    case .success(let handle):
        out.pointee = Handle.retain(handle)
        return TRAV_OK.rawValue
    case .failure(let error):
        return LastError.set(error)
    }
}

/// `trav_viewer_path`: the winning strategy's id into `buf`.
@_cdecl("trav_viewer_path")
public func travViewerPath(_ pointer: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ len: Int) -> Int32 {
    writeText(viewer(pointer)?.connection.path, into: buf, length: len, what: "viewer")
}

/// `trav_viewer_next_frame`: the next frame into `buf`, waiting at most `timeoutMs`.
@_cdecl("trav_viewer_next_frame")
public func travViewerNextFrame(_ pointer: OpaquePointer?, _ buf: UnsafeMutablePointer<UInt8>?, _ cap: Int, _ timeoutMs: Int32,
                                _ info: UnsafeMutablePointer<trav_frame_info>?) -> Int32 {
    guard let handle = viewer(pointer), let buf, let info else { return LastError.set(TRAV_ERR_ARGUMENT, "no viewer, buffer or info") }
    return handle.frames.take(timeoutMs: timeoutMs, what: "frame", ended: "the camera closed the media channel") { received in
        let frame = received.packet.frame
        info.pointee.len = frame.data.count
        guard frame.data.count <= cap else {
            handle.frames.pushFront(received)
            return LastError.set(TRAV_ERR_BUFFER_TOO_SMALL, "the frame has \(frame.data.count) bytes")
        }
        frame.data.withUnsafeBufferPointer { if let base = $0.baseAddress { buf.update(from: base, count: frame.data.count) } }
        info.pointee.keyframe = frame.isKeyframe ? 1 : 0
        let parts = frame.timestamp.components
        info.pointee.timestamp_us = UInt64(clamping: parts.seconds * 1_000_000 + parts.attoseconds / 1_000_000_000_000)
        info.pointee.latency_ms = received.latencyMs
        return TRAV_OK.rawValue
    }
}

/// `trav_viewer_next_channel`: the next channel the camera opened, waiting at most `timeoutMs`.
@_cdecl("trav_viewer_next_channel")
public func travViewerNextChannel(_ pointer: OpaquePointer?, _ timeoutMs: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let handle = viewer(pointer), let out else { return LastError.set(TRAV_ERR_ARGUMENT, "no viewer or out pointer") }
    return handle.channels.take(timeoutMs: timeoutMs, what: "channel", ended: "the connection is closed") { channel in
        out.pointee = Handle.retain(ChannelHandle(channel))
        return TRAV_OK.rawValue
    }
}

/// `trav_viewer_request_keyframe`: asks the camera for a keyframe.
@_cdecl("trav_viewer_request_keyframe")
public func travViewerRequestKeyframe(_ pointer: OpaquePointer?) -> Int32 {
    guard let handle = viewer(pointer) else { return LastError.set(TRAV_ERR_ARGUMENT, "no viewer") }
    let receiver = handle.receiver
    return blockingStatus(timeoutMs: CameraHandle.closeTimeoutMs) { try await receiver.requestKeyframe() }
}

/// `trav_viewer_close`: closes the connection and releases the viewer.
@_cdecl("trav_viewer_close")
public func travViewerClose(_ pointer: OpaquePointer?) {
    Handle.release(pointer) { (handle: ViewerHandle) in handle.close() }
}
