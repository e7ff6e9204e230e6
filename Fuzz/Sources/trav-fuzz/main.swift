import CFuzzDriver
import FuzzTargets

#if canImport(Glibc)
import Glibc
#endif

// trav-fuzz TARGET [libFuzzer flags] [corpus dirs]   fuzz one target
// trav-fuzz --list                                     the targets, one per line
// trav-fuzz --seeds TARGET DIR                         write TARGET's seed inputs into DIR
let arguments = CommandLine.arguments
if arguments.count >= 2, arguments[1] == "--list" {
    for target in FuzzTargets.all { print("\(target.name)\t\(target.summary)") }
    exit(0)
}
if arguments.count == 4, arguments[1] == "--seeds", let target = FuzzTargets.named(arguments[2]) {
    for (name, bytes) in target.seeds() {
        let path = arguments[3] + "/" + name
        guard let file = fopen(path, "wb") else {
            print("trav-fuzz: cannot write \(path)")
            exit(1)
        }
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }
    exit(0)
}
guard arguments.count >= 2, let target = FuzzTargets.named(arguments[1]) else {
    print("usage: trav-fuzz TARGET [libFuzzer flags] [corpus dirs] | --list | --seeds TARGET DIR")
    print("targets: " + FuzzTargets.all.map(\.name).joined(separator: " "))
    exit(2)
}
Selected.target = target

// libFuzzer sees the program name and everything after the target name.
var driverArguments = [arguments[0]] + arguments.dropFirst(2)
var argc = CInt(driverArguments.count)
var argv: [UnsafeMutablePointer<CChar>?] = driverArguments.map { strdup($0) } + [nil]
let status = argv.withUnsafeMutableBufferPointer { buffer -> CInt in
    var base = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &base) { data, size in fuzzOneInput(data, size) }
}
exit(status)

