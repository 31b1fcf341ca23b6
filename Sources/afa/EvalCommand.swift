import AFA
import ArgumentParser
import Foundation

/// `afa eval`.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "mIoU of the CAM, affinity-propagated and segmentation labels, pixel accuracy and classifier F1 on a split with masks.",
        discussion: """
            Two rows of results: single scale without flip (the protocol of the reference trainer's numbers), then \
            the protocol of --scales, --flip and --fusion (multi-scale with flip by default). --json writes both: \
            {"single_scale": …, "multi_scale": …, "multi_scale_protocol": {"scales", "flip", "fusion"}}, each \
            report with cam_miou, aff_miou, seg_miou, cls_f1, pixel_acc and per_class_iou. When the requested \
            protocol is itself single scale without flip, only "single_scale" is written. With --reference-protocol, \
            "reference_protocol" holds a third report scored as the reference trainer (train_ref.py) scores.
            """)

    @Option(help: "Dataset root (VOC layout).") var data: String
    @Option(help: "Checkpoint written by afa train.") var checkpoint: String
    @Option(help: "Split to evaluate.") var split = "val"
    @Option(help: "Comma-separated scales for the CAMs and the segmentation (1,1.5 suits small images; the paper uses 1,0.5,1.5 on VOC).") var scales = "1,1.5"
    @Flag(inversion: .prefixedNo, help: "Add the logits of the horizontally flipped image.") var flip = true
    @Option(help: "How several scales are combined: max (the authors' test protocol) or sum.") var fusion: ScaleFusion = .max
    @Flag(help: "Add a row scored as the reference trainer scores a run: CAMs and affinity from the training step's multi-scale CAM pass (the recipe's CAM scales with flips), segmentation at scale 1.") var referenceProtocol = false
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @OptionGroup var threads: ThreadOptions

    func run() throws {
        try threads.apply()
        let sc = try parseScales(scales)
        let seg = try Segmenter(checkpoint: checkpoint)
        let ds = try VOCDataset(root: data, split: split, requireMasks: true)
        let single = try Evaluator(scales: [1], flip: false, fusion: fusion).evaluate(seg, dataset: ds)
        print("single scale, no flip:\n" + single.table)
        var out: [String: Any] = ["single_scale": try jsonObject(single)]
        if sc != [1] || flip {
            let multi = try Evaluator(scales: sc, flip: flip, fusion: fusion).evaluate(seg, dataset: ds)
            print("\nscales \(sc.map { String(format: "%g", $0) }.joined(separator: ", "))\(flip ? " with flip" : ""), \(fusion.rawValue) fusion:\n" + multi.table)
            out["multi_scale"] = try jsonObject(multi)
            out["multi_scale_protocol"] = ["scales": sc, "flip": flip, "fusion": fusion.rawValue] as [String: Any]
        }
        if referenceProtocol {
            let ref = try Evaluator(camSource: .training).evaluate(seg, dataset: ds)
            let camScales = seg.recipe.train.scales.map { String(format: "%g", $0) }.joined(separator: ", ")
            print("\nas the reference trainer scores (CAM scales \(camScales) with flips, segmentation at scale 1):\n" + ref.table)
            out["reference_protocol"] = try jsonObject(ref)
        }
        if let json {
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys]), to: json)
            print("wrote \(json)")
        }
    }
}

extension ScaleFusion: ExpressibleByArgument {}

private func jsonObject(_ report: EvaluationReport) throws -> Any {
    try JSONSerialization.jsonObject(with: try JSONEncoder().encode(report))
}

func parseScales(_ s: String) throws -> [Double] {
    let v = s.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !v.isEmpty, v.allSatisfy({ ($0 ?? 0) > 0 }) else { throw ValidationError("--scales: expected positive numbers separated by commas, got '\(s)'") }
    return v.map { $0! }
}
