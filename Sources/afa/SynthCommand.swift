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

    func run() throws {
        let ds = SyntheticDataset(trainCount: train, valCount: val, size: size, classes: classes, seed: seed)
        try ds.write(to: out)
        print("wrote \(train) training and \(val) validation images (\(size)×\(size), \(classes) classes: \(ds.classNames.dropFirst().joined(separator: ", "))) to \(out)")
    }
}
