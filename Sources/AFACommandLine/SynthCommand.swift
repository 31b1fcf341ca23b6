import AFA
import ArgumentParser
import Foundation

/// `afa synth`: the embedded default dataset.
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Generate a dataset in VOC layout: textured shape classes on cluttered backgrounds, with masks and image labels.")

    @Option(help: "Output directory (created).") var out: String
    @Option(help: "Training images.") var train = 400
    @Option(help: "Validation images.") var val = 100
    @Option(help: "Image side in pixels.") var size = 96
    @Option(help: "Foreground classes.") var classes = 5
    @Option(help: "Random seed (different seeds give different images of the same classes).") var seed: UInt64 = 0
    @Option(help: "Most objects per image (each image has 1 … N).") var maxObjects = 3
    @Option(help: "Object radius range as fractions of the image side, 'lo,hi'.") var objectSize = ValueRange(0.14, 0.28)
    @Flag(help: "Plain backgrounds: no clutter blobs or streaks.") var plain = false
    @Flag(help: "Let objects hide much of each other (centres as close as 0.3 of their radii's sum, not 0.7).") var occlusion = false

    func validate() throws {
        guard objectSize.lower > 0.02, objectSize.upper <= 0.5 else {
            throw ValidationError("--object-size: expected 'lo,hi' with 0.02 < lo ≤ hi ≤ 0.5, got '\(objectSize.defaultValueDescription)'")
        }
        guard maxObjects >= 1 else { throw ValidationError("--max-objects must be at least 1, got \(maxObjects)") }
    }

    func run() throws {
        var ds = SyntheticDataset(trainCount: train, valCount: val, size: size, classes: classes, seed: seed)
        ds.maxObjects = maxObjects
        if objectSize != ValueRange(0.14, 0.28) {   // the default keeps its exact constants
            ds.minRadius = Float(objectSize.lower); ds.radiusSpan = Float(objectSize.upper - objectSize.lower)
        }
        ds.clutter = !plain
        if occlusion { ds.separation = 0.3 }
        try ds.write(to: out)
        print("wrote \(train) training and \(val) validation images (\(size)×\(size), \(classes) classes: \(ds.classNames.dropFirst().joined(separator: ", "))) to \(out)")
    }
}
