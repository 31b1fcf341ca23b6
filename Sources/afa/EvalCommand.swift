import AFA
import ArgumentParser
import Foundation

/// `afa eval`.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "mIoU of the CAM, affinity-propagated and segmentation labels, pixel accuracy and classifier F1 on a split with masks.")

    @Option(help: "Dataset root (VOC layout).") var data: String
    @Option(help: "Checkpoint written by afa train.") var checkpoint: String
    @Option(help: "Split to evaluate.") var split = "val"
    @Option(help: "Comma-separated scales for the CAMs and the segmentation (1,1.5 suits small images; the paper uses 1,0.5,1.5 on VOC).") var scales = "1,1.5"
    @Flag(inversion: .prefixedNo, help: "Add the logits of the horizontally flipped image.") var flip = true
    @Option(help: "How several scales are combined: max (the authors' test protocol) or sum.") var fusion: ScaleFusion = .max
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @OptionGroup var threads: ThreadOptions

    func run() throws {
        try threads.apply()
        let sc = try parseScales(scales)
        let seg = try Segmenter(checkpoint: checkpoint)
        let ds = try VOCDataset(root: data, split: split, requireMasks: true)
        let report = try Evaluator(scales: sc, flip: flip, fusion: fusion).evaluate(seg, dataset: ds)
        print(report.table)
        if let json {
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try enc.encode(report), to: json)
            print("wrote \(json)")
        }
    }
}

extension ScaleFusion: ExpressibleByArgument {}

func parseScales(_ s: String) throws -> [Double] {
    let v = s.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !v.isEmpty, v.allSatisfy({ ($0 ?? 0) > 0 }) else { throw ValidationError("--scales: expected positive numbers separated by commas, got '\(s)'") }
    return v.map { $0! }
}
