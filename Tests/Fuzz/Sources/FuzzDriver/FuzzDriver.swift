import Foundation

/// libFuzzer's entry point when the program has its own `main` (SwiftPM gives every executable one).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// The input function of this process (libFuzzer calls a C function, which cannot capture it).
nonisolated(unsafe) private var target: ((Data) -> Void)?

/// Runs libFuzzer with the command line's arguments on `body`, which gets each input and must not crash.
public func fuzzMain(_ body: @escaping (Data) -> Void) -> Never {
    target = body
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in
        target!(bytes.map { Data(bytes: $0, count: count) } ?? Data())
        return 0
    })
}
