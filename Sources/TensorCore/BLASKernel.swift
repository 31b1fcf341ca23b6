import CBLASShim
import Foundation
import Logging

/// The widest SIMD instruction set a CPU offers or an OpenBLAS kernel uses, in increasing order.
public enum VectorISA: Int, Comparable, CustomStringConvertible, Sendable {
    case sse = 0, avx, avx2, avx512

    public static func < (a: VectorISA, b: VectorISA) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .sse: return "SSE"
        case .avx: return "AVX"
        case .avx2: return "AVX2+FMA"
        case .avx512: return "AVX-512"
        }
    }

    /// The OpenBLAS `OPENBLAS_CORETYPE` value that runs this instruction set.
    public var openBLASCoreType: String? {
        switch self {
        case .avx512: return "SkylakeX"
        case .avx2: return "Haswell"
        case .avx: return "Sandybridge"
        case .sse: return nil
        }
    }
}

/// Which OpenBLAS kernel runs, and whether a faster one exists for this CPU.
///
/// A dynamic-arch OpenBLAS picks its kernel from the CPU id when it loads. Older releases do not
/// know newer CPUs and fall back to a generic SSE kernel that is 3-5 times slower. The choice can
/// only be overridden through the `OPENBLAS_CORETYPE` environment variable, which OpenBLAS reads
/// while it loads; so a process must set it and re-execute itself before the override applies.
public enum BLASKernel {
    /// Name of the environment variable OpenBLAS reads at load time.
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    /// Set by `reexecWithFastKernelIfNeeded` in the child, so a failed override cannot loop.
    static let reexecMarker = "AFA_OPENBLAS_REEXEC"

    /// The kernel OpenBLAS selected (e.g. "SkylakeX", "Haswell", "Prescott").
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// OpenBLAS's build configuration string.
    public static var configuration: String {
        String(cString: openblas_get_config()).trimmingCharacters(in: .whitespaces)
    }

    /// OpenBLAS's current thread count.
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// The widest instruction set the CPU supports, from /proc/cpuinfo (nil where unknown).
    public static let cpuISA: VectorISA? = detectCPUISA()

    /// The instruction set of an OpenBLAS x86 kernel name (nil for names we do not know).
    public static func isa(ofCore name: String) -> VectorISA? {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "steamroller", "excavator": return .avx2
        case "sandybridge", "bulldozer", "piledriver": return .avx
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine",
             "northwood", "banias", "opteron", "opteron_sse3", "barcelona", "bobcat", "generic":
            return .sse
        default: return nil
        }
    }

    /// The core type to request when OpenBLAS runs a kernel older than the CPU supports; nil when the
    /// selected kernel is already the best (or the CPU/kernel is unknown).
    public static func recommendedCoreType(coreName: String = coreName, cpu: VectorISA? = cpuISA) -> String? {
        guard let cpu, let running = isa(ofCore: coreName), running < cpu else { return nil }
        return cpu.openBLASCoreType
    }

    /// The `OPENBLAS_CORETYPE` value scripts should export so that other processes (test runners,
    /// benchmarks) get the kernel this process runs: the override applied by a re-exec, or else the
    /// recommendation; nil when the default kernel is already the best.
    public static var coreTypeToExport: String? {
        let env = ProcessInfo.processInfo.environment
        if env[reexecMarker] != nil { return env[coreTypeVariable] }
        return recommendedCoreType()
    }

    /// Logs a warning when OpenBLAS runs a slower kernel than this CPU supports (for server apps
    /// that link the library and cannot re-execute themselves).
    public static func warnIfSlowKernel(logger: Logger) {
        if let better = recommendedCoreType() {
            logger.warning("""
                OpenBLAS runs its generic '\(coreName)' kernel although this CPU supports \
                \(cpuISA?.description ?? "more"); start the process with \(coreTypeVariable)=\(better) \
                for several times the GEMM throughput
                """)
        }
    }

    /// For executables: when OpenBLAS picked a slower kernel than the CPU supports and the user did not
    /// set `OPENBLAS_CORETYPE`, set it and re-execute this process (same arguments, same environment
    /// otherwise). Call it first thing in `main`, before any BLAS work. Returns only when no re-exec
    /// is needed or possible.
    public static func reexecWithFastKernelIfNeeded(arguments: [String] = CommandLine.arguments) {
        let env = ProcessInfo.processInfo.environment
        // (an empty value counts as unset: launchers such as mpirun -x pass unset variables on empty)
        guard (env[coreTypeVariable] ?? "").isEmpty, env[reexecMarker] == nil,
              let core = recommendedCoreType() else { return }
        setenv(coreTypeVariable, core, 1)
        setenv(reexecMarker, "1", 1)
        let exe = "/proc/self/exe"
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv(exe, argv)
        // execv returned: it failed. Carry on with the slow kernel rather than die.
        for p in argv { free(p) }
        unsetenv(coreTypeVariable)
    }

    private static func detectCPUISA() -> VectorISA? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) { return .avx512 }
        if flags.contains("avx2") && flags.contains("fma") { return .avx2 }
        if flags.contains("avx") { return .avx }
        return .sse
    }

    /// AMD before Zen 5 (family < 26) executes AVX-512 on 256-bit pipes.
    static var isAMDZen4OrOlder: Bool {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        let lines = text.split(separator: "\n")
        guard lines.first(where: { $0.hasPrefix("vendor_id") })?.contains("AuthenticAMD") == true,
              let fam = lines.first(where: { $0.hasPrefix("cpu family") }),
              let family = Int(fam.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) else { return false }
        return family < 26
    }

    /// Nominal clock in GHz from /proc/cpuinfo (nil where unknown).
    public static var nominalGHz: Double? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu MHz") }),
              let mhz = Double(line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
        else { return nil }
        return mhz / 1000
    }

    /// Theoretical single-precision FMA peak in GFLOP/s for `threads` cores at the nominal clock, assuming
    /// two FMA pipes per core (16 lanes each for AVX-512 — 8 on AMD Zen 4, whose pipes are 256 bits wide —
    /// 8 for AVX2, 2 flops per FMA). Turbo clocks can exceed it.
    public static func theoreticalPeakGFLOPS(threads: Int) -> Double? {
        guard let ghz = nominalGHz, let isa = cpuISA else { return nil }
        let lanes: Double
        switch isa {
        case .avx512: lanes = isAMDZen4OrOlder ? 8 : 16
        case .avx2: lanes = 8
        case .avx: lanes = 8 / 2   // no FMA: one add + one mul per cycle
        case .sse: lanes = 4 / 2
        }
        return ghz * 2 * lanes * 2 * Double(threads)
    }
}
