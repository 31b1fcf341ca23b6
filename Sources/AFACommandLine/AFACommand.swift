import AFA
import ArgumentParser

/// The `afa` command line.
public struct AFACommand: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "afa",
        abstract: "AFA (Learning Affinity from Attention) weakly-supervised segmentation on the CPU.",
        version: AFAInfo.version,
        subcommands: [TrainCommand.self, EvalCommand.self, InferCommand.self, ReportCommand.self, SynthCommand.self, ReplayCommand.self, BenchCommand.self, InfoCommand.self])
}

/// Options shared by commands that compute.
public struct ThreadOptions: ParsableArguments {
    public init() {}

    @Option(name: .long, help: "Threads for OpenBLAS and the Swift workers (default: one per core).")
    var threads: Int?

    /// Sets the thread count: --threads, else `default`, else one per core.
    public func apply(default fallback: Int? = nil) throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1, got \(t)") }
        Runtime.setThreads(threads ?? fallback)
    }
}
