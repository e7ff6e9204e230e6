import Foundation
import Testing
@testable import Rendezvous
@testable import Traversal

/// The routing table and the lease of a cloud node, without sockets or a database: time is passed in.
@Suite struct NodeRoutingTests {
    final class Peer {}
    typealias Machine = NodeRoutingStateMachine<Peer>

    let start = ContinuousClock.now

    @Test func aRoutedRequestGoesToItsNodeUntilItsViewerCloses() {
        var machine = Machine()
        let viewer = UUID()
        #expect(machine.open("r1", viewer: viewer, to: "node-a", now: start) == true)
        #expect(machine.open("r1", viewer: viewer, to: "node-b", now: start) == false, "a request is routed once")
        #expect(machine.node(for: "r1", viewer: viewer, now: start) == "node-a")
        #expect(machine.node(for: "r1", viewer: UUID(), now: start) == nil, "another viewer's request of the same ID is not routed")
        #expect(machine.viewerClosed(viewer) == ["node-a"])
        #expect(machine.node(for: "r1", viewer: viewer, now: start) == nil)
        #expect(!machine.hasRoutes(viewer))
    }

    @Test func routesAreBoundedPerViewerAndInAll() {
        var configuration = Machine.Configuration()
        configuration.maxRoutesPerViewer = 2
        configuration.maxRoutes = 3
        var machine = Machine(configuration: configuration)
        let (one, two) = (UUID(), UUID())
        #expect(machine.open("a", viewer: one, to: "n", now: start) == true)
        #expect(machine.open("b", viewer: one, to: "n", now: start) == true)
        #expect(machine.open("c", viewer: one, to: "n", now: start) == false, "per viewer")
        #expect(machine.open("a", viewer: two, to: "n", now: start) == true)
        #expect(machine.open("b", viewer: two, to: "n", now: start) == false, "in all")
        machine.close("a", viewer: one)
        #expect(machine.open("b", viewer: two, to: "n", now: start) == true, "a closed route frees its place")
    }

    @Test func anUnansweredRouteTimesOutAndAnAnsweredOneEndsSilently() {
        var machine = Machine()
        let viewer = UUID()
        _ = machine.open("silent", viewer: viewer, to: "n", now: start)
        _ = machine.open("answered", viewer: viewer, to: "n", now: start)
        machine.replied(to: viewer, requestID: "answered", now: start)
        #expect(machine.expire(now: start + .seconds(1)).unanswered.isEmpty, "nothing before the lifetime")
        let expired = machine.expire(now: start + machine.configuration.routeLifetime)
        #expect(expired.unanswered == [.init(viewer: viewer, requestID: "silent")])
        #expect(machine.routes.isEmpty)
    }

    @Test func aMessageThroughARouteKeepsItAlive() {
        var machine = Machine()
        let viewer = UUID()
        let lifetime = machine.configuration.routeLifetime
        _ = machine.open("r", viewer: viewer, to: "n", now: start)
        #expect(machine.node(for: "r", viewer: viewer, now: start + lifetime / 2) == "n")
        #expect(machine.expire(now: start + lifetime).unanswered.isEmpty)
        #expect(machine.expire(now: start + lifetime * 1.5).unanswered.count == 1)
    }

    @Test func remoteViewersAreReusedBoundedAndExpire() {
        var configuration = Machine.Configuration()
        configuration.maxRemoteViewers = 1
        var machine = Machine(configuration: configuration)
        let key = Machine.RemoteViewerKey(node: "b", viewer: UUID())
        let first = machine.remoteViewer(key, now: start) { Peer() }
        #expect(first != nil)
        #expect(machine.remoteViewer(key, now: start) { Peer() } === first, "one peer per viewer connection")
        #expect(machine.remoteViewer(.init(node: "b", viewer: UUID()), now: start) { Peer() } == nil, "bounded")
        let closed = machine.expire(now: start + configuration.remoteViewerLifetime).remoteViewers
        #expect(closed.count == 1 && closed[0] === first)
        #expect(machine.remoteViewerClosed(key) == nil)
    }

    @Test func aDeadNodeEndsItsRoutesAndItsViewers() {
        var machine = Machine()
        let viewer = UUID()
        _ = machine.open("to-dead", viewer: viewer, to: "dead", now: start)
        _ = machine.open("to-live", viewer: viewer, to: "live", now: start)
        let remote = machine.remoteViewer(.init(node: "dead", viewer: UUID()), now: start) { Peer() }
        _ = machine.remoteViewer(.init(node: "live", viewer: UUID()), now: start) { Peer() }
        let (unanswered, closed) = machine.nodeDied("dead")
        #expect(unanswered == [.init(viewer: viewer, requestID: "to-dead")])
        #expect(closed.count == 1 && closed[0] === remote)
        #expect(machine.node(for: "to-live", viewer: viewer, now: start) == "live")
    }

    @Test func aNodeHeartbeatsSweepsAndForgetsOnlyOthers() {
        var liveness = NodeLivenessStateMachine(node: "me")
        let now = Date(timeIntervalSince1970: 1_000)
        let actions = liveness.tick(now: now)
        #expect(actions == [.heartbeat(leaseUntil: now.addingTimeInterval(10)), .sweep(expiredBefore: now)])
        #expect(liveness.heartbeatConfirmed(until: now.addingTimeInterval(10), now: now).isEmpty)
        #expect(liveness.expired(["me", "gone"]) == [.forget(node: "gone")], "a node never forgets itself")
    }

    @Test func aNodeWhoseLeaseLapsedWritesItsSessionsAgain() {
        var liveness = NodeLivenessStateMachine(node: "me")
        let now = Date(timeIntervalSince1970: 1_000)
        _ = liveness.heartbeatConfirmed(until: now.addingTimeInterval(10), now: now)
        #expect(liveness.heartbeatConfirmed(until: now.addingTimeInterval(15), now: now.addingTimeInterval(5)).isEmpty)
        // The database was out of reach past the lease: other nodes may have released this node's sessions.
        #expect(liveness.heartbeatConfirmed(until: now.addingTimeInterval(40), now: now.addingTimeInterval(30)) == [.reassertSessions])
    }

    @Test func anEnvelopeRoundTripsAndOneTooLargeForANotifyIsRefused() throws {
        let viewer = UUID()
        let envelope = NodeEnvelope(
            kind: .hub, from: "b", viewer: viewer, viewerAddress: "198.51.100.7:5000",
            message: .decline(requestID: "r1"))
        #expect(try NodeEnvelope(payload: try envelope.payload()) == envelope)
        let huge = NodeEnvelope(
            kind: .viewer, from: "a", viewer: viewer,
            message: .error(requestID: "r1", code: "x", message: String(repeating: "a", count: NodeEnvelope.maxPayloadBytes)))
        #expect(throws: NodeRouteError.self) { try huge.payload() }
        do {
            _ = try huge.payload()
        } catch let error as NodeRouteError {
            #expect(error.code == .payloadTooLarge)
        }
    }

    @Test func aBadPayloadIsATypedError() {
        for payload in ["", "{", #"{"kind":"hub","from":"a","viewer":"not-a-uuid","close":false}"#,
                        String(repeating: " ", count: NodeEnvelope.maxPayloadBytes + 1)] {
            #expect(throws: NodeRouteError.self) { try NodeEnvelope(payload: payload) }
        }
    }

    @Test func theRequestIDIsReadFromAnyMessageThatNamesOne() {
        #expect(NodeEnvelope.requestID(of: .decline(requestID: "r7")) == "r7")
        #expect(NodeEnvelope.requestID(of: .error(requestID: "r8", code: "timeout", message: "m")) == "r8")
        #expect(NodeEnvelope.requestID(of: .accessProof(requestID: "r9", sealed: "c2VhbGVk")) == "r9")
        #expect(NodeEnvelope.requestID(of: .refuse(requestID: "r10", reason: .accessDenied)) == "r10")
        #expect(NodeEnvelope.requestID(of: .ping) == nil)
    }

    @Test func aNodeChannelIsAnIdentifierWhateverTheName() {
        let name = NodeChannel.name(of: "node \"1\"; DROP TABLE x")
        #expect(name.count == "trav_node_".count + 32)
        #expect(name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
        #expect(NodeChannel.name(of: "a") != NodeChannel.name(of: "b"))
    }
}
