#if canImport(Glibc)
import Glibc
#endif
import FloodKit
import DatagramIO
import STUNLite

/// What a run counted; lanes add into one of these.
struct FloodCounts {
    /// Requests sent, warm-up included.
    var sentTotal = 0
    /// Requests sent during the measured period.
    var sent = 0
    /// Valid answers received during the measured period (the rate's numerator).
    var answered = 0
    /// Valid answers received over the whole run, warm-up and drain included.
    var answeredTotal = 0
    /// Requests sent during the measured period that were answered before the run ended.
    var answeredOfMeasured = 0
    /// Measured-period requests given up on: their socket stalled or their slot came round again unanswered.
    var lost = 0
    /// Answers that failed a check (wrong class, transaction, address, fingerprint, or not STUN at all).
    var invalid = 0
    /// Valid answers for a request already answered or given up on (duplicates and stragglers).
    var late = 0
    /// The first failed check, for the report.
    var firstInvalid: String?
}

/// One socket's share of the flood: a pool of prepared requests, the window over them and the batches.
///
/// Requests are encoded once, up front, with ``STUNMessage/encode(integrityKey:integritySHA256Key:fingerprint:)``;
/// slot `i` of lane `l` carries transaction ID high word `l << 24 | i`, so an answer finds its slot
/// without a search. The pool holds ``poolWindows`` windows, so a slot is reused only after that many
/// windows' worth of later requests; if it is still unanswered then, it counts as lost.
final class FloodLane {
    /// Windows' worth of distinct requests in a lane's pool.
    static let poolWindows = 4
    /// Receive room per datagram; a longer answer is truncated by the kernel and counted invalid.
    static let maxAnswerBytes = 512

    private enum Slot: UInt8 { case free, warmup, measured }

    let socket: MultiMessageSocket
    private let configuration: FloodConfiguration
    private let lane: UInt32
    private let poolSize: Int
    private let requestLength: Int
    private let requests: UnsafeMutableRawBufferPointer
    private var transactionIDs: [STUNTransactionID] = []
    private var slots: [Slot]
    private var cursor = 0
    private(set) var outstanding = 0
    private var lastProgress: Double
    private let sendHeaders: UnsafeMutablePointer<MultiMessageHeader>
    private let sendVectors: UnsafeMutablePointer<iovec>
    private let answers: ReceiveBatch
    /// Whether sends use UDP GSO: one message per run of contiguous pool slots instead of one per request.
    let segmentation: Bool
    private var runLengths: [Int]

    /// Opens the socket and encodes the lane's pool of requests.
    init(lane: Int, configuration: FloodConfiguration, now: Double) throws(FloodError) {
        self.configuration = configuration
        self.lane = UInt32(lane)
        socket = try MultiMessageSocket(target: configuration.target)
        poolSize = configuration.window * Self.poolWindows
        slots = Array(repeating: .free, count: poolSize)
        lastProgress = now
        var sample = STUNMessage(method: .binding, messageClass: .request)
        requestLength = sample.encode(fingerprint: configuration.fingerprint).count
        requests = .allocate(byteCount: poolSize * requestLength, alignment: 16)
        var generator = SystemRandomNumberGenerator()
        for i in 0..<poolSize {
            sample.transactionID = STUNTransactionID(high: UInt32(lane) << 24 | UInt32(i), low: generator.next())
            transactionIDs.append(sample.transactionID)
            let bytes = sample.encode(fingerprint: configuration.fingerprint)
            precondition(bytes.count == requestLength, "every request in a pool has the same length")
            UnsafeMutableRawBufferPointer(rebasing: requests[(i * requestLength)..<((i + 1) * requestLength)]).copyBytes(from: bytes)
        }
        let batch = configuration.batch
        sendHeaders = .allocate(capacity: batch)
        sendHeaders.initialize(repeating: MultiMessageHeader(), count: batch)
        sendVectors = .allocate(capacity: batch)
        sendVectors.initialize(repeating: iovec(), count: batch)
        answers = ReceiveBatch(count: batch, maxBytes: Self.maxAnswerBytes)
        segmentation = configuration.segmentation && socket.enableSegmentation(segmentSize: requestLength)
        runLengths = Array(repeating: 0, count: batch)
    }

    deinit {
        requests.deallocate()
        sendHeaders.deallocate()
        sendVectors.deallocate()
    }

    /// Tops the window up, in batches, until it is full or the socket buffer is; `measured` marks the requests as counted.
    func fill(measured: Bool, budget: inout Int, counts: inout FloodCounts) throws(FloodError) {
        while outstanding < configuration.window, budget > 0 {
            let n = min(configuration.batch, configuration.window - outstanding, budget)
            var first = cursor
            // Without GSO one message per request; with it one per run of slots contiguous in the pool.
            var messages = 0
            var slot = first
            var left = n
            while left > 0 {
                let run = segmentation ? min(left, poolSize - slot, MultiMessageSocket.maxSegmentsPerSend) : 1
                sendVectors[messages] = iovec(iov_base: requests.baseAddress! + slot * requestLength, iov_len: run * requestLength)
                sendHeaders[messages] = MultiMessageHeader()
                sendHeaders[messages].header.msg_iov = sendVectors + messages
                sendHeaders[messages].header.msg_iovlen = 1
                runLengths[messages] = run
                messages += 1
                left -= run
                slot = (slot + run) % poolSize
            }
            let sentMessages = try socket.send(sendHeaders, count: messages)
            if sentMessages == 0 { return }
            let sent = runLengths[0..<sentMessages].reduce(0, +)
            for _ in 0..<sent {
                switch slots[first] {
                case .measured:
                    counts.lost += 1
                    outstanding -= 1
                case .warmup:
                    outstanding -= 1
                case .free:
                    break
                }
                slots[first] = measured ? .measured : .warmup
                first = (first + 1) % poolSize
            }
            cursor = first
            outstanding += sent
            budget -= sent
            counts.sentTotal += sent
            if measured { counts.sent += sent }
        }
    }

    /// Reads one batch of answers without blocking and checks each; returns how many datagrams arrived.
    func receive(now: Double, inMeasuredPeriod: Bool, counts: inout FloodCounts) throws(FloodError) -> Int {
        let n = try answers.receive(on: socket)
        for i in 0..<n {
            check(answers.bytes(i), truncated: answers.isTruncated(i), inMeasuredPeriod: inMeasuredPeriod, counts: &counts)
        }
        if n > 0 {
            lastProgress = now
        } else if outstanding > 0, now - lastProgress > configuration.stallSeconds {
            giveUpOnOutstanding(counts: &counts)
            lastProgress = now
        }
        return n
    }

    private func check(_ bytes: UnsafeRawBufferPointer, truncated: Bool, inMeasuredPeriod: Bool, counts: inout FloodCounts) {
        func invalid(_ why: String) {
            counts.invalid += 1
            if counts.firstInvalid == nil { counts.firstInvalid = why }
        }
        guard !truncated else { return invalid("answer longer than \(Self.maxAnswerBytes) bytes") }
        let message: STUNMessage
        do {
            message = try STUNMessage.decode(bytes)
        } catch {
            return invalid("undecodable answer: \(error)")
        }
        guard message.method == .binding, message.messageClass == .successResponse, !message.isClassic else {
            return invalid("not a Binding success response: \(message.method) \(message.messageClass)")
        }
        let slot = Int(message.transactionID.high & 0x00FF_FFFF)
        guard message.transactionID.high >> 24 == lane, slot < poolSize, transactionIDs[slot] == message.transactionID else {
            return invalid("unknown transaction \(message.transactionID)")
        }
        guard let mapped = try? message.attribute(XORMappedAddress.self), mapped.address == socket.local else {
            return invalid("XOR-MAPPED-ADDRESS missing or not \(socket.local)")
        }
        if configuration.fingerprint, message.fingerprintValid != true {
            return invalid("FINGERPRINT missing or wrong")
        }
        counts.answeredTotal += 1
        if inMeasuredPeriod { counts.answered += 1 }
        switch slots[slot] {
        case .free:
            counts.late += 1
        case .warmup:
            outstanding -= 1
        case .measured:
            counts.answeredOfMeasured += 1
            outstanding -= 1
        }
        slots[slot] = .free
    }

    /// Counts every in-flight measured request as lost and empties the window (the server dropped them).
    private func giveUpOnOutstanding(counts: inout FloodCounts) {
        for i in 0..<poolSize where slots[i] != .free {
            if slots[i] == .measured { counts.lost += 1 }
            slots[i] = .free
        }
        outstanding = 0
    }

    /// At the end: whatever is still in flight from the measured period is lost.
    func finish(counts: inout FloodCounts) {
        for i in 0..<poolSize where slots[i] == .measured { counts.lost += 1 }
    }
}
