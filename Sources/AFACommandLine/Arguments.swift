import AFA
import ArgumentParser

/// A model preset name (`--preset`): `--help` lists the choices and a typo is refused before any work.
struct PresetName: ExpressibleByArgument, Equatable, CustomStringConvertible {
    let name: String

    init(_ name: String) { self.name = name }

    init?(argument: String) {
        guard ModelConfig.presetNames.contains(argument) else { return nil }
        name = argument
    }

    static var allValueStrings: [String] { ModelConfig.presetNames }
    var defaultValueDescription: String { name }
    var description: String { name }
}

/// A comma-separated list of presets (`afa bench suite --presets`).
struct PresetList: ExpressibleByArgument {
    let names: [String]

    init?(argument: String) {
        let parts = argument.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, parts.allSatisfy(ModelConfig.presetNames.contains) else { return nil }
        names = parts
    }

    static var allValueStrings: [String] { ModelConfig.presetNames }
}

/// Input scales (`--scales`): positive numbers separated by commas, or `authors` (1, 0.5, 0.75, the
/// authors' test script).
struct Scales: ExpressibleByArgument, Equatable {
    let values: [Double]
    let text: String

    init(_ values: [Double]) { self.values = values; text = values.map { String(format: "%g", $0) }.joined(separator: ",") }

    init?(argument: String) {
        if argument == "authors" { values = SegmentationOptions.authors.scales; text = argument; return }
        let v = argument.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite }) else { return nil }
        values = v.map { $0! }
        text = argument
    }

    var defaultValueDescription: String { text }
}

/// A range `lo,hi` with lo ≤ hi, both positive (`--rescale`, `--object-size`).
struct ValueRange: ExpressibleByArgument, Equatable {
    let lower: Double, upper: Double

    init(_ lower: Double, _ upper: Double) { self.lower = lower; self.upper = upper }

    init?(argument: String) {
        let v = argument.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard v.count == 2, let a = v[0], let b = v[1], a > 0, a <= b, b.isFinite else { return nil }
        lower = a; upper = b
    }

    var defaultValueDescription: String { String(format: "%g,%g", lower, upper) }
}
