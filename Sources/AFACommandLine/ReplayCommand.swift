import AFA
import ArgumentParser
import Foundation

/// `afa replay`: re-run a golden-format case and dump every computed tensor under the golden names.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a golden-format case file and write every tensor this implementation computes.",
        discussion: """
            For a full-iteration case the dump holds fwd.*, and with --teacher-forced also loss.* and grad.* \
            computed with the case's golden labels as targets. Compare it with the reference using \
            compare.py (numpy only).
            """)

    @Argument(help: "The case file (safetensors in the golden format).")
    var casePath: String

    @Option(name: .long, help: "Where to write the dump (safetensors; written atomically).")
    var output: String

    @Flag(name: .long, help: "Use the case's golden labels (and gradients) instead of this implementation's own.")
    var teacherForced = false

    @OptionGroup var threads: ThreadOptions

    func run() throws {
        try threads.apply()
        let dump = try Replay.run(casePath: casePath, teacherForced: teacherForced)
        try dump.write(to: output)
        print("wrote \(dump.names.count) tensors to \(output)")
    }
}
