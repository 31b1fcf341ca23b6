import AFA
import ArgumentParser

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Print the compute back end: OpenBLAS build, selected kernel, threads, codecs.")

    @OptionGroup var threadOptions: ThreadOptions

    @Flag(name: .long, help: "Print only the OPENBLAS_CORETYPE value this CPU should use (empty when the selected kernel is already the best).")
    var recommendedCoreType = false

    func run() throws {
        try threadOptions.apply()
        if recommendedCoreType {
            print(BLASKernel.coreTypeToExport ?? "")
            return
        }
        let rows = AFAInfo.backendSummary()
        let width = rows.map(\.0.count).max() ?? 0
        for (k, v) in rows {
            print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v)
        }
    }
}
