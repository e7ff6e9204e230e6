import Testing
@testable import Traversal
@Test func versionIsSemantic() { #expect(TraversalVersion.string.split(separator: ".").count == 3) }
