import AFA
import ArgumentParser
import Foundation
import Logging
import Synchronization

/// How the long-running commands report.
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// A live progress line on a terminal, plain log lines otherwise, tables as text.
    case text
    /// Plain log lines even on a terminal: for `mpirun`, whose ranks write to a pseudo-terminal even when
    /// mpirun's own output goes to a file.
    case plain
    /// One JSON object per line on stdout (progress, evaluations, the result), messages as JSON on stderr.
    case json
}

/// `--quiet` and `--log-format` (afa train, afa eval, afa-mpi train).
public struct OutputOptions: ParsableArguments {
    public init() {}

    @Flag(help: "Print only warnings, errors and the result (no progress, no tables).") var quiet = false
    @Option(help: "text: a live progress line on a terminal, log lines otherwise; plain: log lines always (mpirun's ranks see a terminal); json: one JSON object per line, for scripts.")
    var logFormat: LogFormat = .text

    /// Makes these settings the console's (and so the log handler's).
    func apply() { Console.settings.withLock { $0 = (quiet, logFormat) } }
}

/// The CLI's console: what `OutputOptions` chose, read by the log handler the executables install.
/// (Process-wide, like the terminal it describes; the library keeps no such state.)
public enum Console {
    static let settings = Mutex<(quiet: Bool, format: LogFormat)>((false, .text))
    static var quiet: Bool { settings.withLock { $0.quiet } }
    static var json: Bool { settings.withLock { $0.format == .json } }
    static var plain: Bool { settings.withLock { $0.format == .plain } }

    /// Installs the swift-log handler the library's messages go through: `afa: warning: …` on stderr,
    /// or a JSON object per message with --log-format json; info messages are dropped with --quiet.
    public static func bootstrapLogging() {
        LoggingSystem.bootstrap { CommandLineLogHandler(label: $0) }
    }

    /// One JSON object as a line on stdout.
    static func emit(_ object: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// An evaluation report as a JSON-ready dictionary.
    static func object(_ report: EvaluationReport) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(report))) as? [String: Any] ?? [:]
    }
}

/// swift-log's handler for the command line.
struct CommandLineLogHandler: LogHandler {
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let (level, message) = (event.level, event.message)
        if Console.quiet && level < .warning { return }
        var all = metadata.merging(event.metadata ?? [:]) { $1 }
        if let error = event.error { all["error"] = "\(error)" }
        let text: String
        if Console.json {
            var obj: [String: Any] = ["event": "log", "level": level.rawValue, "label": label, "message": message.description]
            for (k, v) in all { obj[k] = v.description }
            guard let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) else { return }
            text = String(decoding: data, as: UTF8.self)
        } else {
            let extras = all.isEmpty ? "" : " (" + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + ")"
            text = "afa: \(level == .info ? "" : level.rawValue + ": ")\(message)\(extras)"
        }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

/// Progress of a loop: one live line on a terminal, plain lines when stdout is a file or pipe, JSON
/// objects with --log-format json, nothing with --quiet.
final class ProgressLine {
    let total: Int
    let first: Int
    /// What is counted ("iter", "image") and, when a command has several loops, which one.
    let unit: String
    let stage: String?
    /// A live line: stdout is a terminal and --log-format is text.
    let tty = isatty(STDOUT_FILENO) != 0 && !Console.plain
    let start = Date()
    private var drawn = false

    init(_ unit: String, stage: String? = nil, total: Int, start: Int = 0) {
        self.unit = unit; self.stage = stage; self.total = total; first = start
    }

    private var what: String { (stage.map { $0 + ": " } ?? "") + unit }

    var live: Bool { tty && !Console.quiet && !Console.json }

    /// Seconds left at the rate since the start.
    func eta(_ n: Int) -> Double {
        let done = n - first
        return done > 0 ? Date().timeIntervalSince(start) / Double(done) * Double(total - n) : 0
    }

    /// Reports step `n`; `fields` are shown in order, `line` says whether a non-terminal gets a line now.
    func update(_ n: Int, fields: [(String, Double, String)], line: Bool) {
        if Console.quiet { return }
        if Console.json {
            guard line else { return }
            var obj: [String: Any] = ["event": "progress", unit: n, "total": total, "eta_s": (eta(n) * 10).rounded() / 10]
            if let stage { obj["stage"] = stage }
            for (k, v, _) in fields { obj[k] = v }
            Console.emit(obj)
            return
        }
        let shown = fields.map { String(format: $0.2, $0.1) }.joined(separator: " ")
        if tty {
            let width = 24, filled = Int(Double(width) * Double(n) / Double(max(total, 1)))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            print("\r[\(bar)] \(what) \(n)/\(total) \(shown) ETA \(Self.clock(eta(n)))\u{1B}[K", terminator: "")
            fflush(stdout)
            drawn = true
        } else if line {
            print("\(what) \(n)/\(total) \(shown) ETA \(Self.clock(eta(n)))")
            fflush(stdout)   // log lines appear as they happen when stdout is a file or pipe
        }
    }

    /// Ends the live line before other output.
    func finishLine() { if drawn { print(""); drawn = false } }

    static func clock(_ s: Double) -> String {
        let t = Int(s.rounded())
        return String(format: "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60)
    }
}
