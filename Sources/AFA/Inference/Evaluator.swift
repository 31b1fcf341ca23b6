import Foundation
import ImageIO
import TensorCore

/// A confusion matrix over `classes` (rows: ground truth, columns: prediction); 255 is ignored.
public struct ConfusionMatrix: Sendable {
    public let classes: Int
    public private(set) var counts: [Int]

    public init(classes: Int) { self.classes = classes; counts = [Int](repeating: 0, count: classes * classes) }

    public mutating func add(truth: [UInt8], prediction: [UInt8]) {
        for (t, p) in zip(truth, prediction) where t != 255 && Int(t) < classes && Int(p) < classes {
            counts[Int(t) * classes + Int(p)] += 1
        }
    }

    public mutating func add(truth: Int, prediction: Int) { counts[truth * classes + prediction] += 1 }

    /// IoU per class; nil for classes absent from both truth and prediction.
    public var iou: [Double?] {
        (0..<classes).map { c in
            let tp = counts[c * classes + c]
            let fn = (0..<classes).reduce(0) { $0 + counts[c * classes + $1] } - tp
            let fp = (0..<classes).reduce(0) { $0 + counts[$1 * classes + c] } - tp
            let union = tp + fp + fn
            return union > 0 ? Double(tp) / Double(union) : nil
        }
    }

    /// Mean IoU over the classes that occur (in truth or prediction).
    public var meanIoU: Double {
        let v = iou.compactMap { $0 }
        return v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count)
    }

    public var pixelAccuracy: Double {
        let total = counts.reduce(0, +)
        return total > 0 ? Double((0..<classes).reduce(0) { $0 + counts[$1 * classes + $1] }) / Double(total) : 0
    }
}

/// Evaluation results (mIoU as fractions in 0–1).
public struct EvaluationReport: Codable, Sendable {
    public var camMIoU: Double
    public var affMIoU: Double
    public var segMIoU: Double
    /// Segmentation mIoU after the dense CRF (when the evaluation ran one).
    public var segCRFMIoU: Double?
    /// Classifier F1 over all (image, class) decisions pooled.
    public var clsF1: Double
    /// Classifier F1 of each image, averaged over the images (an image with no class given and none
    /// predicted scores 1), as the reference trainer reports it.
    public var clsF1PerImage: Double
    public var pixelAccuracy: Double
    public var perClassIoU: [String: [Double?]]
    public var classNames: [String]
    public var images: Int
    /// The segmentation's confusion matrix: pixels of true class i (row) predicted as class j (column).
    public var segConfusion: [[Int]]?

    enum CodingKeys: String, CodingKey {
        case camMIoU = "cam_miou", affMIoU = "aff_miou", segMIoU = "seg_miou", segCRFMIoU = "seg_crf_miou", clsF1 = "cls_f1", clsF1PerImage = "cls_f1_per_image", pixelAccuracy = "pixel_acc"
        case perClassIoU = "per_class_iou", classNames = "class_names", images, segConfusion = "seg_confusion"
    }

    /// A readable table: one row per class, IoU in percent for CAM, affinity and segmentation labels
    /// (and the segmentation after the CRF when there is one).
    public var table: String {
        func pct(_ v: Double?) -> String { v.map { String(format: "%6.2f", 100 * $0) } ?? "     -" }
        let crf = segCRFMIoU != nil
        var lines = ["class                   CAM    aff    seg" + (crf ? "  +CRF" : "")]
        for (i, n) in classNames.enumerated() {
            lines.append(n.padding(toLength: 20, withPad: " ", startingAt: 0) + " " + pct(perClassIoU["cam"]?[i] ?? nil) + " "
                         + pct(perClassIoU["aff"]?[i] ?? nil) + " " + pct(perClassIoU["seg"]?[i] ?? nil)
                         + (crf ? " " + pct(perClassIoU["seg_crf"]?[i] ?? nil) : ""))
        }
        lines.append("mIoU                 " + pct(camMIoU) + " " + pct(affMIoU) + " " + pct(segMIoU) + (crf ? " " + pct(segCRFMIoU) : ""))
        lines.append(String(format: "pixel accuracy (seg) %.2f%%   classifier F1 %.3f   images %d", 100 * pixelAccuracy, clsF1, images))
        return lines.joined(separator: "\n")
    }
}

/// Scores a model on a split with masks: CAM labels (image labels given, background where the CAM ≤
/// bkg_score), affinity-propagated labels (random walk with the low background score) and the
/// segmentation branch, plus the classifier's multi-label F1.
///
/// The default scales are 1 and 1.5 with flip: on small images the 0.5 scale leaves a stage-4 grid of
/// a few cells and lowers every score (the paper's 1, 0.5, 1.5 is for 500-pixel VOC images).
public struct Evaluator {
    /// Where the CAM and affinity rows come from.
    public enum CAMSource: String, Sendable, Codable {
        /// The segmentation pass itself: its scales, flip and fusion; the random walk's background score
        /// is `low_thre`.
        case inference
        /// As the reference trainer scores a run: the training step's multi-scale CAM (the recipe's CAM
        /// scales, each with its mirror; max over image and mirror, summed over scales, min–max
        /// normalised) and that pass's affinity, the random walk's background score `bkg_score`; the
        /// segmentation at scale 1 without flip.
        case training
    }

    public static let defaultScales: [Double] = [1.0, 1.5]
    public var scales: [Double]
    public var flip = true
    public var fusion: ScaleFusion = .max
    public var camSource: CAMSource = .inference
    /// Also score the segmentation after this dense CRF (on the fused probabilities of the same pass).
    public var crf: DenseCRF?

    public init(scales: [Double] = Evaluator.defaultScales, flip: Bool = true, fusion: ScaleFusion = .max, camSource: CAMSource = .inference,
                crf: DenseCRF? = nil) {
        self.scales = scales; self.flip = flip; self.fusion = fusion; self.camSource = camSource; self.crf = crf
        if camSource == .training { self.scales = [1]; self.flip = false }
    }

    /// Scores the first `limit` images of `dataset` (all by default); `progress` is called with
    /// (images done, images in all) after each image.
    public func evaluate(_ seg: Segmenter, dataset: VOCDataset, limit: Int? = nil,
                         progress: ((Int, Int) -> Void)? = nil) throws -> EvaluationReport {
        let c = dataset.numClasses, k = c - 1
        guard c == seg.model.config.numClasses else {
            throw AFAError.invalidInput("dataset \(dataset.root) has \(c) classes, the model \(seg.model.config.numClasses)")
        }
        var camCM = ConfusionMatrix(classes: c), affCM = ConfusionMatrix(classes: c), segCM = ConfusionMatrix(classes: c)
        var crfCM = ConfusionMatrix(classes: c)
        var tp = 0, fp = 0, fn = 0
        var f1PerImage = 0.0
        let train = seg.recipe.train
        let n = min(limit ?? dataset.count, dataset.count)
        for i in 0..<n {
            guard let mp = dataset.maskPath(i) else { throw AFAError.invalidInput("\(dataset.root): evaluation needs masks") }
            let img = try ImageCodec.readRGB(dataset.imagePath(i))
            let truth = try ImageCodec.readLabels(mp)
            guard truth.width == img.width, truth.height == img.height else {
                throw AFAError.invalidInput("\(mp): mask \(truth.width)×\(truth.height) does not match image \(img.width)×\(img.height)")
            }
            let x = Augmentation.normalized(img)
            let s = try seg.segment(normalized: x, options: SegmentationOptions(scales: scales, flip: flip, cams: camSource == .inference, fusion: fusion))
            segCM.add(truth: truth.values, prediction: s.labels.values)
            if let crf {
                crfCM.add(truth: truth.values, prediction: DenseCRF.argmaxLabels(try crf.marginals(image: img, probabilities: s.probabilities)).values)
            }
            let gt = dataset.multiHot(i)
            var imageTP = 0, imageFPFN = 0
            for j in 0..<k {
                let pred = s.classProbabilities[j] > 0.5, real = gt[j] > 0
                if pred && real { tp += 1; imageTP += 1 } else if pred { fp += 1; imageFPFN += 1 } else if real { fn += 1; imageFPFN += 1 }
            }
            f1PerImage += imageTP + imageFPFN == 0 ? 1 : 2 * Double(imageTP) / Double(2 * imageTP + imageFPFN)
            // CAM and affinity labels use the image labels, as in weakly-supervised evaluation
            let cls = try Tensor(shape: [1, k], values: gt)
            let cams: Tensor, affinity: Tensor, camScales: [Double], background: Float
            switch camSource {
            case .inference:
                guard let c = s.cams, let a = s.affinity else { throw AFAError.invalidInput("evaluation: no CAMs returned") }
                (cams, affinity, camScales, background) = (c, a, scales, train.lowThre)
            case .training:
                let m = try seg.model.multiScaleCAM(x, scales: train.scales, .inference())
                (cams, affinity, camScales, background) = (m.cams, m.affinity, train.scales, train.bkgScore)
            }
            let (h, w) = (img.height, img.width), plane = h * w
            var camLabel = [UInt8](repeating: 0, count: plane)
            for p in 0..<plane {
                var best: Float = -1, idx = 0
                for j in 0..<k where gt[j] > 0 && cams.data[j * plane + p] > best { best = cams.data[j * plane + p]; idx = j }
                camLabel[p] = best > train.bkgScore ? UInt8(idx + 1) : 0
            }
            camCM.add(truth: truth.values, prediction: camLabel)
            let valid = try cams.reshaped([1, k, h, w]).copy()
            for j in 0..<k where gt[j] == 0 { (valid.data + j * plane).update(repeating: 0, count: plane) }
            let maxScale = camScales.max() ?? 1
            let grid = ImageOps.stage4Grid(height: Int(maxScale * Double(h)), width: Int(maxScale * Double(w)), strides: seg.model.config.strides)
            let small = try ImageOps.resize(valid, height: grid.h, width: grid.w)
            let mask = RandomWalk.radiusMask(height: grid.h, width: grid.w, radius: train.radius)
            let prop = try RandomWalk.propagate(cams: small, aff: affinity, mask: mask, clsLabel: cls,
                                                backgroundScore: background, normEps: train.rwNormEps)
            let up = try ImageOps.resize(prop, height: h, width: w)
            var affLabel = [UInt8](repeating: 0, count: plane)
            for p in 0..<plane { affLabel[p] = UInt8(argmax(up.data + p, count: c, stride: plane)) }
            affCM.add(truth: truth.values, prediction: affLabel)
            progress?(i + 1, n)
        }
        let f1 = tp + fp + fn > 0 ? 2 * Double(tp) / Double(2 * tp + fp + fn) : 0
        var perClass = ["cam": camCM.iou, "aff": affCM.iou, "seg": segCM.iou]
        if crf != nil { perClass["seg_crf"] = crfCM.iou }
        return EvaluationReport(camMIoU: camCM.meanIoU, affMIoU: affCM.meanIoU, segMIoU: segCM.meanIoU,
                                segCRFMIoU: crf == nil ? nil : crfCM.meanIoU, clsF1: f1,
                                clsF1PerImage: n > 0 ? f1PerImage / Double(n) : 0,
                                pixelAccuracy: segCM.pixelAccuracy,
                                perClassIoU: perClass,
                                classNames: dataset.classNames, images: n,
                                segConfusion: (0..<c).map { Array(segCM.counts[($0 * c)..<(($0 + 1) * c)]) })
    }
}
