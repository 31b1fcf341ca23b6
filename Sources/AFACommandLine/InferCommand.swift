import AFA
import ArgumentParser
import Foundation

/// `afa infer`.
struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Segment images: a label PNG (VOC palette), an overlay picture and optionally per-class CAM heat maps per image.")

    @Option(help: "Checkpoint written by afa train.") var checkpoint: String
    @Option(help: "Output directory (created).") var out: String
    @Option(help: "Comma-separated scales, or 'authors' (1,0.5,0.75).") var scales = Scales([1])
    @Flag(inversion: .prefixedNo, help: "Average each scale's logits with those of the horizontally flipped image.") var flip = true
    @Flag(help: "Refine the labels with the dense CRF (the authors' test-time post-processing).") var crf = false
    @OptionGroup var crfOptions: CRFOptions
    @Option(help: "How several scales are combined: max (the authors' test protocol) or sum.") var fusion: ScaleFusion = .max
    @Flag(help: "Also write a CAM heat map per class the classifier finds (probability > 0.5).") var cams = false
    @Argument(help: "Images (JPEG or PNG).") var images: [String]
    @OptionGroup var threads: ThreadOptions


    func run() throws {
        try threads.apply()
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        let seg = try Segmenter(checkpoint: checkpoint)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let sc = scales.values
        for path in images {
            let img = try ImageCodec.readRGB(path)
            let r = try seg.segment(img, options: SegmentationOptions(scales: sc, flip: flip, cams: cams, fusion: fusion,
                                                                      crf: crf ? crfOptions.crf : nil))
            let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            try ImageCodec.writeLabelPNG(r.labels, to: "\(out)/\(stem)_label.png")
            try ImageCodec.writePNG(Visualization.overlay(img, labels: r.labels), to: "\(out)/\(stem)_overlay.png")
            var found: [String] = []
            for (j, p) in r.classProbabilities.enumerated() where p > 0.5 {
                found.append(String(format: "%@ %.2f", seg.classNames[j + 1], p))
                if cams, let m = r.cams {
                    try ImageCodec.writePNG(Visualization.heatmap(img, map: m.data + j * img.width * img.height),
                                            to: "\(out)/\(stem)_cam_\(seg.classNames[j + 1]).png")
                }
            }
            print("\(path): \(found.isEmpty ? "no class found" : found.joined(separator: ", ")) → \(out)/\(stem)_label.png, \(stem)_overlay.png")
        }
    }
}
