import AFA
import Foundation
import SafeTensors
import XCTest

/// The golden vectors shipped next to the repository (`../shared/golden`), or `AFA_GOLDEN_DIR`.
/// A missing file fails the test: the parity checks are part of the suite, never skipped.
enum Golden {
    /// `AFA_GOLDEN_DIR`, else the first `shared/golden` found walking up from the repository
    /// (the layout is `<workspace>/<clone>/` next to `<workspace>/shared/`).
    static var directory: String {
        if let d = ProcessInfo.processInfo.environment["AFA_GOLDEN_DIR"] { return d }
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" {
            dir = dir.deletingLastPathComponent()
            let candidate = dir.appendingPathComponent("shared/golden").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return "../shared/golden"
    }

    /// Extra cases kept in the repository (Tests/Fixtures/golden-extra).
    static var extraDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../Fixtures/golden-extra").standardized.path
    }

    static func path(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let extra = extraDirectory + "/" + name + ".safetensors"
        let p = FileManager.default.fileExists(atPath: extra) ? extra : directory + "/" + name + ".safetensors"
        guard FileManager.default.fileExists(atPath: p) else {
            XCTFail("golden file \(p) not found (set AFA_GOLDEN_DIR)", file: file, line: line)
            throw AFAError.invalidInput("missing golden file \(p)")
        }
        return p
    }

    /// Replays `name` and asserts every expected key under `prefixes` passes; returns the comparison.
    @discardableResult
    static func check(_ name: String, teacherForced: Bool, prefixes: [String], excluded: [String] = [],
                      minimumKeys: Int = 1, file: StaticString = #filePath, line: UInt = #line) throws -> GoldenComparison {
        let p = try path(name, file: file, line: line)
        let dump = try Replay.run(casePath: p, teacherForced: teacherForced)
        let actual = try SafeTensorsFile(data: try dump.encoded(), path: "replay of \(name)")
        let cmp = try GoldenComparison(actual: actual, expected: try SafeTensorsFile(path: p), prefixes: prefixes, excluded: excluded)
        XCTAssertGreaterThanOrEqual(cmp.results.count, minimumKeys, "too few keys compared", file: file, line: line)
        for f in cmp.failures { XCTFail("\(name): \(f)", file: file, line: line) }
        return cmp
    }
}
