// cloud-storm: N cameras registered with one cloud, kept registered by the real camera client
// (`CloudClient.camera`: keepalives, jittered reconnects, retry-after), each registration printed
// as `R <index> <unix-ms>` so Scripts/bench-cloud.sh can time a storm after the cloud restarts, and each
// change of presence as `U <index> <unix-ms>` (TLS closed, present over UDP), `S <index> <unix-ms>` (TLS closed, present
// over a presence stream, where UDP does not reach the cloud) or `T <index> <unix-ms>` (back on TLS).
//
//   cloud-storm --port P --ca FILE --cameras N [--host 127.0.0.1] [--parallel 8] [--seconds 900]
//               [--presence udp|tls] [--linger SECONDS] [--identities FILE]
//
// Each camera holds one TCP connection, or one UDP socket once present over UDP, and both while it registers
// with UDP presence (``OpenFileLimit/needed(cameras:udpPresence:reserve:)``): the script sizes the process's
// open-files budget to N, and the process refuses to start under it. --presence tls keeps every camera on TLS; --linger is how long a camera
// keeps TLS after registering before it relies on UDP presence alone (default 1 s).
// The process exits by itself after --seconds. With --identities FILE the cameras' keys and UIDs are kept in FILE
// (`index seed-hex UID` per line) and reused by the next run, so only the first run derives each UID (a scrypt):
// with a cloud that kept its device store too, a later run registers N cameras with no scrypt anywhere.
//
//   cloud-storm --cameras N --identities FILE --seed-store DATA/devices.sqlite
//
// prepares a fleet with no scrypt at all, for storms larger than the machine could derive UIDs for: N identities
// with made-up UIDs (random, checksummed, not derived from their keys), kept in FILE, and their bindings written
// into the cloud's SQLite device store as verified, then exits. The cloud then checks each registration's
// signature against the stored key, as for any known device; only the first registration's scrypt is skipped.
import Foundation
import Logging
import Synchronization
import Rendezvous
import Traversal

struct Options {
    var host = "127.0.0.1"
    var port: UInt16 = 0
    var caPath = ""
    var cameras = 100
    var parallel = 8
    var seconds = 900
    var presence = "udp"
    var linger = 1.0
    var identities: String?
    var seedStore: String?

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst().makeIterator()
        while let flag = rest.next() {
            guard let value = rest.next() else { Self.usage("\(flag) needs a value") }
            switch flag {
            case "--host": host = value
            case "--port": port = UInt16(value) ?? 0
            case "--ca": caPath = value
            case "--cameras": cameras = Int(value) ?? 0
            case "--parallel": parallel = Int(value) ?? 0
            case "--seconds": seconds = Int(value) ?? 0
            case "--presence": presence = value
            case "--linger": linger = Double(value) ?? -1
            case "--identities": identities = value
            case "--seed-store": seedStore = value
            default: Self.usage("unknown option \(flag)")
            }
        }
        if seedStore != nil {
            guard identities != nil, cameras > 0 else { Self.usage("--seed-store needs --identities and --cameras") }
            return
        }
        guard port != 0, !caPath.isEmpty, cameras > 0, parallel > 0, seconds > 0 else { Self.usage("--port, --ca and positive counts needed") }
        guard presence == "udp" || presence == "tls", linger >= 0 else { Self.usage("--presence is udp or tls, --linger not negative") }
    }

    static func usage(_ problem: String) -> Never {
        FileHandle.standardError.write(Data("cloud-storm: \(problem)\nusage: cloud-storm --port P --ca FILE --cameras N [--host H] [--parallel K] [--seconds S] [--presence udp|tls] [--linger SECONDS] [--identities FILE]\n".utf8))
        exit(2)
    }
}

/// One line per event on standard output, flushed at once (the script reads it while we run).
let output = Mutex(())
func emit(_ line: String) {
    output.withLock { _ in
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

func unixMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

let options = Options(CommandLine.arguments)
if let storePath = options.seedStore {
    let seeded = IdentityFile(path: options.identities)
    let store = try await SQLiteDeviceStore.open(path: storePath, logger: Logger(label: "cloud-storm"))
    for index in 0..<options.cameras {
        let (identity, deviceID) = seeded.identity(index, madeUp: true)
        try await store.registered(deviceID, publicKey: identity.publicKey.rawRepresentation, node: "seed", at: Date())
    }
    await store.close()
    emit("seeded \(options.cameras)")
    exit(0)
}
// A camera re-registering with UDP presence holds two sockets, and after a restart they all do at once: short of
// open files this process would trap (libdispatch), so it refuses to start instead.
let openFiles = OpenFileLimit.raiseToHardLimit()
let neededFiles = OpenFileLimit.needed(cameras: options.cameras, udpPresence: options.presence == "udp")
guard openFiles >= neededFiles else {
    Options.usage("\(options.cameras) cameras (\(options.presence) presence) need \(neededFiles) open files, the limit is \(openFiles)")
}
var logger = Logger(label: "cloud-storm")
logger.logLevel = .critical
let endpoint = CloudEndpoint(
    host: options.host, port: options.port, trust: .pinnedCA(try String(contentsOfFile: options.caPath, encoding: .utf8)))

/// Camera identities kept across runs (`--identities`): seed and UID by index.
final class IdentityFile: Sendable {
    private let known: [Int: (seed: [UInt8], deviceID: DeviceID)]
    private let appended: Mutex<FileHandle?>

    init(path: String?) {
        var known: [Int: (seed: [UInt8], deviceID: DeviceID)] = [:]
        if let path, let text = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 3, let index = Int(fields[0]), let deviceID = try? DeviceID(String(fields[2])) else { continue }
                let hex = Array(fields[1].utf8)
                guard hex.count == 64 else { continue }
                let seed = stride(from: 0, to: 64, by: 2).compactMap { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16) }
                if seed.count == 32 { known[index] = (seed, deviceID) }
            }
        }
        self.known = known
        if let path {
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            let handle = FileHandle(forWritingAtPath: path)
            _ = try? handle?.seekToEnd()
            appended = Mutex(handle)
        } else {
            appended = Mutex(nil)
        }
    }

    /// Camera `index`'s identity and UID: the kept ones, or new ones (kept for the next run); `madeUp`: a new one
    /// gets a random checksummed UID instead of its key's (no scrypt; the cloud must already hold the binding).
    func identity(_ index: Int, madeUp: Bool = false) -> (DeviceIdentity, DeviceID) {
        if let (seed, deviceID) = known[index], let identity = try? DeviceIdentity(seed: seed) { return (identity, deviceID) }
        var generator = SystemRandomNumberGenerator()
        let seed = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let identity = try! DeviceIdentity(seed: seed)
        let deviceID: DeviceID
        if madeUp {
            // One random packing in 32 has a valid check symbol.
            var drawn: DeviceID?
            while drawn == nil {
                drawn = DeviceID(packed: (0..<DeviceID.packedLength).map { _ in UInt8.random(in: 0...255, using: &generator) })
            }
            deviceID = drawn!
        } else {
            deviceID = identity.deviceID
        }
        appended.withLock { handle in
            let hex = seed.map { String(format: "%02x", $0) }.joined()
            handle?.write(Data("\(index) \(hex) \(deviceID)\n".utf8))
        }
        return (identity, deviceID)
    }
}

let identities = IdentityFile(path: options.identities)


/// Starts camera `index`, retrying its first registration (the cloud may be busy or rate-limiting) a bounded number of times.
func startCamera(_ index: Int) async -> (any CameraSignalling)? {
    let (identity, deviceID) = identities.identity(index)
    for _ in 0..<60 {
        do {
            return try await CloudClient.camera(
                identity: identity, deviceID: deviceID, endpoint: endpoint, logger: logger, usePresence: options.presence == "udp",
                presenceLinger: .milliseconds(Int(options.linger * 1000)),
                onRegistered: { _ in emit("R \(index) \(unixMilliseconds())") },
                onPresence: { path in
                    emit("\(path == .datagram ? "U" : path == .stream ? "S" : "T") \(index) \(unixMilliseconds())")
                })
        } catch {
            try? await Task.sleep(for: .milliseconds(Int.random(in: 500...1500)))
        }
    }
    emit("F \(index) \(unixMilliseconds())")
    return nil
}

let started = ContinuousClock.now
let cameras = await withTaskGroup(of: (any CameraSignalling)?.self) { group in
    var next = 0
    var cameras: [any CameraSignalling] = []
    while next < min(options.parallel, options.cameras) {
        let index = next
        group.addTask { await startCamera(index) }
        next += 1
    }
    for await camera in group {
        if let camera { cameras.append(camera) }
        if next < options.cameras {
            let index = next
            group.addTask { await startCamera(index) }
            next += 1
        }
    }
    return cameras
}
emit("ready \(cameras.count) \(unixMilliseconds())")
try? await Task.sleep(until: started + .seconds(options.seconds), clock: .continuous)
for camera in cameras { await camera.stop() }
