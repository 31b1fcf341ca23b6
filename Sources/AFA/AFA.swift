@_exported import TensorCore
import ImageIO

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
            ("threads (BLAS / Swift workers)", "\(BLASKernel.threadCount) / \(Runtime.threads)"),
        ]
        if let better = BLASKernel.recommendedCoreType() {
            rows.append(("warning", "generic kernel; set \(BLASKernel.coreTypeVariable)=\(better)"))
        }
        rows.append(("libpng", CodecInfo.pngVersion))
        rows.append(("libjpeg API", String(CodecInfo.jpegVersion)))
        return rows
    }
}
