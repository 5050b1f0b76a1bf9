// The request parser's fuzz target.
//
// Built with libFuzzer (scripts/fuzz): `swift build --product webserver-fuzz --sanitize=fuzzer
// --sanitize=address -Xswiftc -DFUZZING`, which links libFuzzer's main and calls the entry point below.
// Built plainly it replays files given as arguments, so a crash the fuzzer found can be run again.
import Server

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    ParserCheck.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
import Foundation

@main
struct Replay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            data.withUnsafeBytes { ParserCheck.run($0) }
        }
    }
}
#endif
