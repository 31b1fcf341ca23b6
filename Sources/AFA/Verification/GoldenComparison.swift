import Foundation
import SafeTensors

/// Compares a dump with a golden file using the golden README's rules: per-prefix tolerances
/// (|a − e| ≤ atol + rtol·|e| + srtol·max|e|, NaN matches NaN only), exact integers except pixels
/// flagged in `label.fragile`, and for `step1.*` an allowance of one group lr where |golden grad| < 1e-6.
public struct GoldenComparison {
    public struct KeyResult: CustomStringConvertible {
        public var key: String
        public var passed: Bool
        public var detail: String
        public var description: String { "\(passed ? "PASS" : "FAIL") \(key): \(detail)" }
    }

    /// (prefix, atol, rtol, srtol); the first match wins.
    public static let recommended: [(String, Double, Double, Double)] = [
        ("loss.", 1e-6, 2e-5, 0), ("grad.", 1e-7, 1e-3, 1e-4), ("step1.", 2e-6, 1e-5, 0),
        ("opt.", 0, 1e-6, 0), ("sched.", 0, 1e-6, 0), ("fwd.attn_pred", 1e-5, 1e-4, 0),
        ("fwd.", 1e-4, 1e-4, 0), ("cam.", 1e-5, 1e-4, 0), ("rw.", 1e-5, 1e-4, 0), ("par.", 1e-5, 1e-4, 0),
        ("crf.", 1e-4, 1e-3, 0), ("", 1e-5, 1e-4, 0),
    ]

    /// Which bit of `label.fragile` excuses which label key.
    static let fragileBits: [String: Int] = [
        "cam.pseudo_label": 1, "label.aff_cam_label_l": 2, "label.aff_cam_label_h": 2, "label.refined_aff_label": 2,
        "label.bkg_label_l": 4, "label.bkg_label_h": 4, "label.refined_pseudo_label": 4, "crf.label": 8,
    ]

    public var results: [KeyResult] = []
    public var failures: [KeyResult] { results.filter { !$0.passed } }
    public var summary: String { "\(results.count - failures.count) passed, \(failures.count) failed" }

    /// Compares every expected key that starts with one of `prefixes` (all keys if empty), except
    /// `excluded`; a key missing from `actual` is a failure.
    public init(actual: SafeTensorsFile, expected: SafeTensorsFile, prefixes: [String] = [], excluded: [String] = []) throws {
        let fragile = expected.contains("label.fragile") ? try expected.integers("label.fragile") : nil
        let config = (expected.metadata["config"].flatMap { $0.data(using: .utf8) })
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        for key in expected.names where (prefixes.isEmpty || prefixes.contains { key.hasPrefix($0) })
            && !excluded.contains(where: { key.hasPrefix($0) }) {
            guard actual.contains(key) else {
                results.append(KeyResult(key: key, passed: false, detail: "missing in actual")); continue
            }
            results.append(try Self.compare(key, actual, expected, fragile: fragile, config: config))
        }
    }

    static func compare(_ key: String, _ actual: SafeTensorsFile, _ expected: SafeTensorsFile,
                        fragile: [Int]?, config: [String: Any]) throws -> KeyResult {
        let ea = try actual.entry(key), ee = try expected.entry(key)
        guard ea.shape == ee.shape else {
            return KeyResult(key: key, passed: false, detail: "shape \(ea.shape) != expected \(ee.shape)")
        }
        if [.i64, .i32, .u8, .bool].contains(ee.dtype) {
            let a = try actual.tensor(key).array, e = try expected.integers(key)
            var bad = 0, skipped = 0
            let bit = fragileBits[key]
            for i in 0..<e.count where Double(a[i]) != Double(e[i]) {
                if let bit, let fragile, fragile.count == e.count, fragile[i] & bit != 0 { skipped += 1 } else { bad += 1 }
            }
            return KeyResult(key: key, passed: bad == 0,
                             detail: "int mismatches=\(bad)/\(e.count)" + (skipped > 0 ? " (\(skipped) fragile px skipped)" : ""))
        }
        let (atol, rtol, srtol) = recommended.first { key.hasPrefix($0.0) }.map { ($0.1, $0.2, $0.3) }!
        let a = try actual.tensor(key).array, e = try expected.tensor(key).array
        var allowance = [Double](repeating: 0, count: e.count)
        if key.hasPrefix("step1."), let lr = try adamAllowance(key, expected, config) {
            let g = try expected.tensor("grad." + key.dropFirst("step1.".count)).array
            for i in 0..<g.count where abs(g[i]) < 1e-6 { allowance[i] = lr }
        }
        let scale = e.reduce(0.0) { $1.isNaN ? $0 : max($0, Double(abs($1))) }
        var bad = 0
        var maxErr = 0.0
        for i in 0..<e.count {
            let (x, y) = (Double(a[i]), Double(e[i]))
            let err = x.isNaN && y.isNaN ? 0 : (abs(x - y).isNaN ? .infinity : abs(x - y))
            maxErr = max(maxErr, err)
            if err > atol + rtol * abs(y.isNaN ? 0 : y) + srtol * scale + allowance[i] { bad += 1 }
        }
        let rel = scale > 0 ? maxErr / scale : (maxErr == 0 ? 0 : .infinity)
        return KeyResult(key: key, passed: bad == 0,
                         detail: String(format: "max_abs=%.3e max_abs/max|exp|=%.3e bad=%d/%d", maxErr, rel, bad, e.count))
    }

    /// One group lr (×1.01) for the parameter's group, from the metadata `param_groups` and
    /// `optimizer_lr_per_group`; nil when the file does not list them.
    static func adamAllowance(_ key: String, _ expected: SafeTensorsFile, _ config: [String: Any]) throws -> Double? {
        let name = String(key.dropFirst("step1.".count))
        guard expected.contains("grad." + name), let groups = config["param_groups"] as? [String: [String]],
              let lrs = config["optimizer_lr_per_group"] as? [Double] else { return nil }
        for (gi, g) in groups.keys.sorted().enumerated() where groups[g]!.contains(name) && gi < lrs.count {
            return 1.01 * lrs[gi]
        }
        return nil
    }
}
