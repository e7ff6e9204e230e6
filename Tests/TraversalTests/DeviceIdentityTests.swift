import Crypto
import Foundation
import Testing
@testable import Traversal

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fresh, empty private directory for one test; removed by the caller.
private func scratchDirectory() -> String {
    var template = Array("/tmp/trav-identity-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return String(cString: path!)
}

private func removeTree(_ directory: String) {
    if let entries = opendir(directory) {
        while let entry = readdir(entries) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink(directory + "/" + name) }
        }
        closedir(entries)
    }
    rmdir(directory)
}

private func mode(of path: String) -> UInt32 {
    var status = stat()
    _ = stat(path, &status)
    return UInt32(status.st_mode) & 0o777
}

private func writeFile(_ path: String, _ text: String, mode: mode_t) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    _ = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
    close(descriptor)
    chmod(path, mode)
}

@Suite struct DeviceIdentityTests {
    @Test func savedKeyFileHasMode0600AndLoadsTheSameKey() throws {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let path = directory + "/camera.key"
        let identity = DeviceIdentity.generate()
        try identity.save(to: path)
        #expect(mode(of: path) == 0o600)
        let loaded = try DeviceIdentity.load(from: path)
        #expect(loaded.publicKey.rawRepresentation == identity.publicKey.rawRepresentation)
        #expect(loaded.deviceID == identity.deviceID)
    }

    @Test func keyFileIsHeaderLineThenBase64Seed() throws {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let path = directory + "/camera.key"
        let identity = try DeviceIdentity(seed: [UInt8](repeating: 7, count: 32))
        try identity.save(to: path)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines == ["trav-device-identity v1 ed25519", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="])
    }

    @Test func saveRefusesToOverwriteAnExistingFile() throws {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let path = directory + "/camera.key"
        try DeviceIdentity.generate().save(to: path)
        let error = #expect(throws: IdentityFileError.self) { try DeviceIdentity.generate().save(to: path) }
        #expect(error?.code == .alreadyExists)
    }

    @Test func ephemeralIdentityIsNotSaved() {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let error = #expect(throws: IdentityFileError.self) {
            try DeviceIdentity.ephemeral().save(to: directory + "/viewer.key")
        }
        #expect(error?.code == .ephemeral)
    }

    @Test(arguments: [0o640, 0o604, 0o644, 0o660] as [mode_t])
    func loadRefusesGroupOrWorldAccessibleFile(permissions: mode_t) throws {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let path = directory + "/camera.key"
        writeFile(path, DeviceIdentity.generate().fileContents, mode: permissions)
        let error = #expect(throws: IdentityFileError.self) { try DeviceIdentity.load(from: path) }
        #expect(error?.code == .insecurePermissions)
    }

    @Test(arguments: [
        "",
        "trav-device-identity v1 ed25519\n",
        "trav-device-identity v2 ed25519\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "trav-device-identity v1 ed25519\nnot base64!\n",
        "trav-device-identity v1 ed25519\nBwcHBwcH\n",
        "trav-device-identity v1 ed25519\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nextra\n",
        String(repeating: "A", count: 5000),
    ])
    func loadRefusesCorruptFile(contents: String) throws {
        let directory = scratchDirectory()
        defer { removeTree(directory) }
        let path = directory + "/camera.key"
        writeFile(path, contents, mode: 0o600)
        let error = #expect(throws: IdentityFileError.self) { try DeviceIdentity.load(from: path) }
        #expect(error?.code == .corrupt)
    }

    @Test func loadReportsMissingFile() {
        let error = #expect(throws: IdentityFileError.self) {
            try DeviceIdentity.load(from: "/nonexistent/trav/camera.key")
        }
        #expect(error?.code == .notFound)
    }

    @Test func descriptionNeverShowsTheSeed() throws {
        let identity = try DeviceIdentity(seed: [UInt8](repeating: 7, count: 32))
        #expect(!identity.description.contains("BwcHBwcH"))
        #expect(identity.description.contains(identity.publicKey.rawRepresentation.base64EncodedString()))
    }

    @Test func signatureVerifiesUnderThePublicKey() throws {
        let identity = DeviceIdentity.generate()
        let signature = try identity.signature(for: [1, 2, 3] as [UInt8])
        #expect(identity.publicKey.isValidSignature(signature, for: [1, 2, 3] as [UInt8]))
        #expect(!identity.publicKey.isValidSignature(signature, for: [1, 2, 4] as [UInt8]))
    }
}
