import AFA
import ArgumentParser
import Foundation

/// `afa eval`.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "mIoU of the CAM, affinity-propagated and segmentation labels, pixel accuracy and classifier F1 on a split with masks.",
        discussion: """
            --protocol chooses the rows: single (scale 1 without flip, the protocol of the reference trainer's \
            numbers), msc (that row, then the protocol of --scales, --flip and --fusion: multi-scale with flip, \
            max fusion by default) or msc-crf (both, and the multi-scale segmentation refined by the dense CRF, \
            from the same pass). --scales authors is the authors' test scales (1, 0.5, 0.75); the CRF parameters \
            default to theirs. --json writes {"single_scale": …, "multi_scale": …, "multi_scale_protocol": \
            {"scales", "flip", "fusion", "crf"}}, each report with cam_miou, aff_miou, seg_miou, cls_f1, pixel_acc \
            and per_class_iou; with msc-crf, "multi_scale" also holds seg_crf_miou and per_class_iou.seg_crf. \
            With --reference-protocol, "reference_protocol" holds a report scored as the reference trainer \
            (train_ref.py) scores.
            """)

    /// Which rows `afa eval` prints.
    enum TestProtocol: String, ExpressibleByArgument, CaseIterable {
        case single, msc, mscCRF = "msc-crf"
    }

    @Option(help: "Dataset root (VOC layout).") var data: String
    @Option(help: "Checkpoint written by afa train.") var checkpoint: String
    @Option(help: "Split to evaluate.") var split = "val"
    @Option(help: "Rows to print: single, msc (single and multi-scale) or msc-crf (also the multi-scale segmentation after the dense CRF).")
    var `protocol`: TestProtocol = .msc
    @Option(help: "Comma-separated scales for the multi-scale row, or 'authors' (1,0.5,0.75, the authors' test script). 1,1.5 suits small images.")
    var scales = Scales([1, 1.5])
    @Flag(inversion: .prefixedNo, help: "Average each scale's logits with those of the horizontally flipped image.") var flip = true
    @Option(help: "How several scales are combined: max (the authors' test protocol) or sum.") var fusion: ScaleFusion = .max
    @Flag(help: "Add a row scored as the reference trainer scores a run: CAMs and affinity from the training step's multi-scale CAM pass (the recipe's CAM scales with flips), segmentation at scale 1.") var referenceProtocol = false
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @OptionGroup var crfOptions: CRFOptions
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        try crfOptions.crf.validate()
    }

    /// Runs one evaluation with a progress line named `what`.
    func score(_ evaluator: Evaluator, _ seg: Segmenter, _ ds: VOCDataset, _ what: String) throws -> EvaluationReport {
        let progress = ProgressLine("image", stage: what, total: ds.count)
        let started = Date()
        let every = max(1, ds.count / 20)
        let r = try evaluator.evaluate(seg, dataset: ds) { i, n in
            progress.update(i, fields: [("images_per_s", Double(i) / max(Date().timeIntervalSince(started), 1e-9), "%.1f img/s")],
                            line: i % every == 0 || i == n)
        }
        progress.finishLine()
        return r
    }

    /// Prints a heading and table (text mode, not quiet).
    func show(_ text: String) { if !Console.quiet && !Console.json { print(text) } }

    func run() throws {
        output.apply()
        try threads.apply()
        let sc = scales.values
        let seg = try Segmenter(checkpoint: checkpoint)
        let ds = try VOCDataset(root: data, split: split, requireMasks: true)
        let single = try score(Evaluator(scales: [1], flip: false, fusion: fusion), seg, ds, "single scale")
        show("single scale, no flip:\n" + single.table)
        var out: [String: Any] = ["single_scale": try jsonObject(single)]
        var summary = [("single scale, no flip", single.segMIoU)]
        if `protocol` != .single && (sc != [1] || flip || `protocol` == .mscCRF) {
            let crf = `protocol` == .mscCRF ? crfOptions.crf : nil
            let multi = try score(Evaluator(scales: sc, flip: flip, fusion: fusion, crf: crf), seg, ds, "multi-scale")
            let name = "scales \(sc.map { String(format: "%g", $0) }.joined(separator: ", "))\(flip ? " with flip" : ""), \(fusion.rawValue) fusion"
            show("\n\(name)\(crf == nil ? "" : "; +CRF: then the dense CRF"):\n" + multi.table)
            out["multi_scale"] = try jsonObject(multi)
            var proto: [String: Any] = ["scales": sc, "flip": flip, "fusion": fusion.rawValue]
            if let crf { proto["crf"] = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(crf)) }
            out["multi_scale_protocol"] = proto
            summary.append((name, multi.segMIoU))
            if let v = multi.segCRFMIoU { summary.append(("  + dense CRF (\(crf!.iterations) iterations)", v)) }
        }
        if referenceProtocol {
            let ref = try score(Evaluator(camSource: .training), seg, ds, "reference protocol")
            let camScales = seg.recipe.train.scales.map { String(format: "%g", $0) }.joined(separator: ", ")
            show("\nas the reference trainer scores (CAM scales \(camScales) with flips, segmentation at scale 1):\n" + ref.table)
            out["reference_protocol"] = try jsonObject(ref)
        }
        if Console.json {
            out["event"] = "result"
            Console.emit(out)
        } else {
            // the result: one line per protocol (also with --quiet)
            if !Console.quiet { print("\nsegmentation mIoU by protocol:") }
            for (name, v) in summary { print(name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%6.2f", 100 * v)) }
        }
        if let json {
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: out.filter { $0.key != "event" }, options: [.prettyPrinted, .sortedKeys]), to: json)
            if !Console.quiet && !Console.json { print("wrote \(json)") }
        }
    }
}

extension ScaleFusion: ExpressibleByArgument {}

private func jsonObject(_ report: EvaluationReport) throws -> Any {
    try JSONSerialization.jsonObject(with: try JSONEncoder().encode(report))
}

/// Dense CRF parameters (defaults: the authors' test-time values).
struct CRFOptions: ParsableArguments {
    @Option(help: "Dense CRF: mean-field iterations.") var crfIterations = DenseCRF.authors.iterations
    @Option(help: "Dense CRF: position-only kernel σ in pixels (pos_xy_std).") var crfPosXYStd = DenseCRF.authors.gaussianXYStd
    @Option(help: "Dense CRF: position-only kernel weight (pos_w).") var crfPosW = DenseCRF.authors.gaussianWeight
    @Option(help: "Dense CRF: bilateral kernel σ in pixels (bi_xy_std).") var crfBiXYStd = DenseCRF.authors.bilateralXYStd
    @Option(help: "Dense CRF: bilateral kernel colour σ (bi_rgb_std).") var crfBiRGBStd = DenseCRF.authors.bilateralRGBStd
    @Option(help: "Dense CRF: bilateral kernel weight (bi_w).") var crfBiW = DenseCRF.authors.bilateralWeight

    var crf: DenseCRF {
        DenseCRF(iterations: crfIterations, gaussianXYStd: crfPosXYStd, gaussianWeight: crfPosW, bilateralXYStd: crfBiXYStd,
                 bilateralRGBStd: crfBiRGBStd, bilateralWeight: crfBiW)
    }

    func validate() throws {
        do { try crf.validate() } catch { throw ValidationError("\(error)") }
    }
}

/// Comma-separated positive scales, or `authors` for the authors' test scales (1, 0.5, 0.75).
