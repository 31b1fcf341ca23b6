@_exported import TensorCore
@_exported import SafeTensors
@_exported import Layers
import Foundation
@_exported import ImageIO

/// AFA ("Learning Affinity from Attention") on the CPU: library entry points.
public enum AFAInfo {
    /// The package version (also printed by `afa --version`).
    public static let version = "0.1.0"

    /// One-paragraph description of the compute back end, for logs and `afa info`.
    public static func backendSummary() -> [(String, String)] {
        var rows: [(String, String)] = [
            ("version", version),
            ("OpenBLAS", BLASKernel.configuration),
            ("OpenBLAS core", BLASKernel.coreName),
            ("CPU vector ISA", BLASKernel.cpuISA?.description ?? "unknown"),
            ("threads", "\(Runtime.threads) Swift workers; OpenBLAS single-threaded per GEMM block (products are split over the workers)"),
        ]
        if let better = BLASKernel.recommendedCoreType() {
            rows.append(("warning", "generic kernel; set \(BLASKernel.coreTypeVariable)=\(better)"))
        }
        rows.append(("libpng", CodecInfo.pngVersion))
        rows.append(("libjpeg API", String(CodecInfo.jpegVersion)))
        return rows
    }
}

/// Errors of the training and inference pipeline that are not about shapes or files.
public enum AFAError: Error, CustomStringConvertible, LocalizedError {
    /// A value outside its allowed range (label ids, thresholds, boxes …).
    case invalidInput(String)
    /// A loss or activation became NaN or infinite.
    case nonFinite(String)

    public var description: String {
        switch self {
        case let .invalidInput(m): return "invalid input: \(m)"
        case let .nonFinite(m): return "non-finite value: \(m)"
        }
    }
    public var errorDescription: String? { description }
}
