import AFA
import ArgumentParser

/// `afa report`.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write one self-contained HTML page about a run: curves, mIoU over iterations, per-class IoU, confusion matrix, pictures.",
        discussion: "Reads RUN/config.json, log.jsonl, eval.jsonl and pictures/; works on a run in progress. No scripts, no network: charts are inline SVG, pictures inline PNG.")

    @Argument(help: "The run directory (afa train --out).") var runDirectory: String
    @Option(help: "Where to write the page (default: RUN/report.html).") var out: String?

    func run() throws {
        let report = try RunReport(runDirectory: runDirectory)
        let path = out ?? runDirectory + "/report.html"
        try report.write(to: path)
        print("report: \(path)")
    }
}
